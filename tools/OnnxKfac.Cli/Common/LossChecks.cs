using OnnxKfac.Graph;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Cli.Common;

/// <summary>Checks of loss options and target tensors against the model output the loss reads.</summary>
internal static class LossChecks
{
    /// <summary>Class weights must be one per class when the class count is known statically.</summary>
    public static void CheckClassWeights(ModelProto model, LossOptions loss)
    {
        if (loss.ClassWeights is null || loss.Kind != LossKind.CrossEntropy) return;
        string output = TrainingGraphBuilder.ChooseOutput(model.Graph, loss.Output);
        var info = ShapeInference.Infer(model).GetValueOrDefault(output);
        if (info?.Shape is { Length: >= 2 } s && s[1] >= 0 && s[1] != loss.ClassWeights.Count)
            throw new OnnxKfacException($"--class-weights: {loss.ClassWeights.Count} weights given, but output '{output}' has {s[1]} classes (shape {info.ShapeText})");
    }

    /// <summary>
    /// Checks a target tensor against the loss and the output it reads, whose shape may hold
    /// -1 for dimensions not known yet; returns the target as the training graph takes it
    /// (class indices widened to int64).
    /// </summary>
    public static TensorFile CheckTarget(TensorFile target, LossOptions loss, string output, int outputType, long[]? outputShape)
    {
        string where = $"target {target.Path}";
        if (loss.Kind == LossKind.CrossEntropy)
        {
            long[]? expected = outputShape is { Length: >= 2 } s ? [s[0], .. s[2..]] : null;
            string expectedText = expected is null ? "" : $" of shape {Shapes.Format(expected)} (output '{output}' {Shapes.Format(outputShape)} without the class axis)";
            if (!TensorFile.IsInteger(target.ElemType))
                throw new OnnxKfacException($"{where}: cross-entropy expects integer class indices (int64){expectedText}, got {target.TypeName} {target.ShapeText}");
            if (expected is not null && !Shapes.Fits(expected, target.Shape))
                throw new OnnxKfacException($"{where}: cross-entropy expects int64 class indices{expectedText}, got {target.TypeName} {target.ShapeText}");
            var labels = target.ToInt64s();
            long classes = outputShape is { Length: >= 2 } ? outputShape[1] : -1;
            for (int i = 0; i < labels.Length; i++)
            {
                long v = labels[i];
                if (v == loss.IgnoreIndex) continue;
                if (v < 0 || (classes >= 0 && v >= classes))
                    throw new OnnxKfacException($"{where}: label {v} at flat index {i} is outside [0, {(classes >= 0 ? classes.ToString() : "C")})" +
                        $"{(classes >= 0 ? $" (output '{output}' has {classes} classes)" : "")} and is not the ignore index {loss.IgnoreIndex}");
            }
            return target.AsInt64();
        }
        string typeName = outputType == 0 ? "floating-point" : TensorData.TypeName(outputType);
        string name = LossOptions.Name(loss.Kind);
        bool typeOk = outputType == 0 ? TensorData.IsFloat(target.ElemType) : target.ElemType == outputType;
        if (!typeOk || !Shapes.Fits(outputShape, target.Shape))
            throw new OnnxKfacException($"{where}: {name} expects a {typeName} target shaped like output '{output}' {Shapes.Format(outputShape)}, got {target.TypeName} {target.ShapeText}");
        return target;
    }
}
