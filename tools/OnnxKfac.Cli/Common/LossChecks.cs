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
        if (loss.ClassWeights is null || !loss.Function.HasClassOptions) return;
        string output = TrainingGraphBuilder.ChooseOutput(model.Graph, loss.Output);
        var info = ShapeInference.Infer(model).GetValueOrDefault(output);
        if (info?.Shape is { Length: >= 2 } s && s[1] >= 0 && s[1] != loss.ClassWeights.Count)
            throw new OnnxKfacException($"--class-weights: {loss.ClassWeights.Count} weights given, but output '{output}' has {s[1]} classes (shape {info.ShapeText})");
    }

    /// <summary>
    /// Checks a target tensor against the loss and the output it reads, whose shape may hold
    /// -1 for dimensions not known yet (the loss owns the rule); returns the target as the
    /// training graph takes it (class indices widened to int64).
    /// </summary>
    public static TensorFile CheckTarget(TensorFile target, LossOptions loss, string output, int outputType, long[]? outputShape)
    {
        var f = loss.Function;
        f.CheckTarget($"target {target.Path}", loss, output, outputType, outputShape, target.ElemType, target.Shape, target.ToInt64s);
        return f.ClassIndexTargets ? target.AsInt64() : target;
    }
}
