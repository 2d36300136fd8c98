using System.CommandLine;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Cli.Common;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Cli.Commands;

/// <summary>
/// <c>onnx-kfac grad MODEL --input X.pb --target Y.pb --loss KIND -o DIR</c>: one batch's
/// loss and the gradient of every trainable initializer, computed by the training graph
/// on ONNX Runtime and written as TensorProto files.
/// </summary>
internal static class GradCommand
{
    public const string LossFile = "loss.json";
    public const string IndexFile = "index.json";

    public static Command Create(CliContext ctx)
    {
        var model = new Argument<string>("MODEL") { Description = "The ONNX model (.onnx)" };
        var inputs = new Option<string[]>("--input")
        {
            Description = "A model input as an ONNX TensorProto file: FILE for a model with one input, NAME=FILE otherwise (repeatable)",
            HelpName = "[NAME=]FILE",
        };
        var target = new Option<string>("--target")
        {
            Description = "The target as an ONNX TensorProto file (class indices for cross-entropy, else shaped like the output)",
            HelpName = "FILE",
            Required = true,
        };
        var dir = new Option<string>("--out", "-o")
        {
            Description = $"Folder to write {LossFile}, one grad_NNN.pb per trainable initializer and {IndexFile} (name -> file)",
            HelpName = "DIR",
            Required = true,
        };
        var loss = new LossArguments(lossRequired: true);
        var selection = new SelectionArguments();
        var cmd = new Command("grad", "Compute one batch's loss and parameter gradients and write them as TensorProto files");
        cmd.Arguments.Add(model);
        cmd.Options.Add(inputs);
        cmd.Options.Add(target);
        loss.AddTo(cmd);
        selection.AddTo(cmd);
        cmd.Options.Add(dir);
        cmd.SetAction(r =>
        {
            var lossOptions = loss.Read(r)!;
            var result = Compute(r.GetValue(model)!, r.GetValue(inputs) ?? [], r.GetValue(target)!, lossOptions,
                selection.ReadTrainable(r), selection.ReadFrozen(r), selection.ReadUntie(r));
            string outDir = r.GetValue(dir)!;
            Write(result, outDir);
            if (!double.IsFinite(result.Loss)) ctx.Error.WriteLine($"warning: the loss is {result.Loss}");
            ctx.Out.WriteLine($"loss {result.Loss.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}; " +
                $"{result.Gradients.Count} gradients written to {outDir}");
            return ExitCodes.Ok;
        });
        return cmd;
    }

    /// <summary>The loss and the gradients, in the manifest's parameter order.</summary>
    public sealed record GradResult(double Loss, IReadOnlyList<TensorProto> Gradients);

    public static GradResult Compute(string modelPath, IReadOnlyList<string> inputSpecs, string targetPath, LossOptions loss,
        IReadOnlyList<string> trainable, IReadOnlyList<string> frozen, IReadOnlyList<string>? untie = null)
    {
        var model = OnnxModelIO.Load(modelPath);
        LossChecks.CheckClassWeights(model, loss);
        var tg = TrainingGraphBuilder.Build(model, new TrainingGraphOptions(loss) { Trainable = trainable, Frozen = frozen, Untie = untie ?? [], LayerTaps = false });
        var man = tg.Manifest;
        string output = man.Loss.Output;

        var bound = BindInputs(model, inputSpecs);
        var targetFile = TensorFile.Read(targetPath, "target");
        var (outType, outShape) = StaticOutput(model, output, bound);
        targetFile = LossChecks.CheckTarget(targetFile, loss, output, outType, outShape);

        var fetch = new List<string> { man.Loss.Loss, output };
        fetch.AddRange(man.Parameters.Select(p => p.Gradient));
        var feedNames = bound.Keys.Append(man.Loss.Target).ToArray();
        var feedValues = new List<OrtValue>();
        try
        {
            foreach (var name in bound.Keys) feedValues.Add(bound[name].ToOrtValue());
            feedValues.Add(targetFile.ToOrtValue());
            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
            InferenceSession session;
            try { session = new InferenceSession(tg.Model.ToByteArray(), options); }
            catch (OnnxRuntimeException e)
            {
                throw new InvalidOperationException($"ONNX Runtime cannot load the training graph of {modelPath}: {e.Message}", e);
            }
            using (session)
            {
                using var runOptions = new RunOptions();
                IDisposableReadOnlyCollection<OrtValue> results;
                try { results = session.Run(runOptions, feedNames, feedValues, fetch); }
                catch (OnnxRuntimeException e)
                {
                    throw new OnnxKfacException($"ONNX Runtime failed to run the training graph of {modelPath} on these inputs: {e.Message}", e);
                }
                using (results)
                {
                    // The output's run-time shape settles the dimensions static inference left open.
                    var actual = results[1].GetTensorTypeAndShape();
                    LossChecks.CheckTarget(targetFile, loss, output, outType, actual.Shape);
                    double value = ReadScalar(results[0]);
                    var grads = man.Parameters.Select((p, k) => TensorFile.ToProto(results[k + 2], p.Name)).ToArray();
                    return new GradResult(value, grads);
                }
            }
        }
        finally
        {
            foreach (var v in feedValues) v.Dispose();
        }
    }

    private static double ReadScalar(OrtValue v) => v.GetTensorTypeAndShape().ElementDataType switch
    {
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Double => v.GetTensorDataAsSpan<double>()[0],
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float => v.GetTensorDataAsSpan<float>()[0],
        Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16 => (double)v.GetTensorDataAsSpan<Half>()[0],
        var t => throw new InvalidOperationException($"the loss is {t}, not a float"),
    };

    /// <summary>
    /// Matches <c>--input</c> values to the model's data inputs (graph inputs that are not
    /// initializers) and checks each file's element type and shape against the declared one.
    /// </summary>
    public static Dictionary<string, TensorFile> BindInputs(ModelProto model, IReadOnlyList<string> specs)
    {
        var g = model.Graph;
        var initializers = new HashSet<string>(g.Initializer.Select(t => t.Name), StringComparer.Ordinal);
        var data = g.Input.Where(i => !initializers.Contains(i.Name)).ToArray();
        string names = data.Length == 0 ? "(none)" : string.Join(", ", data.Select(i => i.Name));
        var bound = new Dictionary<string, TensorFile>(StringComparer.Ordinal);
        foreach (var spec in specs)
        {
            string? name = null;
            string file = spec;
            int eq = spec.IndexOf('=');
            if (eq >= 0 && !File.Exists(spec)) { name = spec[..eq]; file = spec[(eq + 1)..]; }
            if (name is not null && !data.Any(i => i.Name == name))
            {
                string why = initializers.Contains(name) ? $"'{name}' is an initializer, not a data input" : $"the model has no input '{name}'";
                throw new OnnxKfacException($"--input {spec}: {why}; its inputs are: {names}");
            }
            var tensor = TensorFile.Read(file, name is null ? "input" : $"input '{name}'");
            if (name is null)
            {
                if (data.Length == 0) throw new OnnxKfacException($"--input {spec}: the model has no data inputs");
                if (data.Length == 1) name = data[0].Name;
                else if (data.Any(i => i.Name == tensor.Name)) name = tensor.Name;
                else throw new OnnxKfacException($"--input {spec}: the model has {data.Length} inputs ({names}) and the file's tensor name '{tensor.Name}' is none of them; bind it with --input NAME=FILE");
            }
            if (bound.ContainsKey(name)) throw new OnnxKfacException($"--input {spec}: model input '{name}' is given twice");
            bound[name] = tensor;
        }
        foreach (var vi in data)
        {
            if (!bound.TryGetValue(vi.Name, out var t))
                throw new OnnxKfacException($"no tensor for model input '{vi.Name}'; pass --input {(data.Length == 1 ? "FILE" : vi.Name + "=FILE")}");
            var entry = ModelInspector.Entry(vi);
            var declared = ShapeInference.FromValueInfo(vi);
            bool typeOk = declared is null || declared.ElemType == 0 || declared.ElemType == t.ElemType;
            if (!typeOk || !Shapes.Fits(declared?.Shape, t.Shape))
                throw new OnnxKfacException($"input '{vi.Name}' {t.Path}: expected {entry.ElemType} {ModelInspector.FormatShape(entry.Shape)}, got {t.TypeName} {t.ShapeText}");
        }
        return bound;
    }

    /// <summary>
    /// The element type and shape of <paramref name="output"/> inferred statically with the
    /// given inputs' concrete shapes (-1 where inference cannot tell).
    /// </summary>
    public static (int ElemType, long[]? Shape) StaticOutput(ModelProto model, string output, IReadOnlyDictionary<string, TensorFile> inputs)
    {
        var g = model.Graph;
        var g2 = new GraphProto { Name = g.Name };
        g2.Node.Add(g.Node);
        g2.Initializer.Add(g.Initializer);
        g2.ValueInfo.Add(g.ValueInfo);
        g2.Output.Add(g.Output);
        foreach (var i in g.Input)
            g2.Input.Add(inputs.TryGetValue(i.Name, out var t) ? ValueInfos.Tensor(i.Name, t.ElemType, t.Shape) : i);
        var m2 = new ModelProto { IrVersion = model.IrVersion, Graph = g2 };
        m2.OpsetImport.Add(model.OpsetImport);
        var info = ShapeInference.Infer(m2).GetValueOrDefault(output);
        return (info?.ElemType ?? 0, info?.Shape);
    }

    /// <summary>Writes loss.json, one TensorProto per gradient (grad_000.pb ...) and index.json into <paramref name="dir"/>.</summary>
    public static void Write(GradResult result, string dir)
    {
        if (File.Exists(dir)) throw new OnnxKfacException($"-o {dir}: is a file; name a folder");
        PrepareCommand.Write(() => Directory.CreateDirectory(dir), dir);
        int width = Math.Max(3, (result.Gradients.Count - 1).ToString().Length);
        var index = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int k = 0; k < result.Gradients.Count; k++)
        {
            var t = result.Gradients[k];
            string file = "grad_" + k.ToString().PadLeft(width, '0') + ".pb";
            string path = Path.Combine(dir, file);
            PrepareCommand.Write(() => AtomicFile.WriteAllBytes(path, t.ToByteArray()), path);
            index[t.Name] = file;
        }
        string lossPath = Path.Combine(dir, LossFile);
        PrepareCommand.Write(() => AtomicFile.WriteAllText(lossPath, Json.Serialize(new GradLoss(result.Loss)) + "\n"), lossPath);
        string indexPath = Path.Combine(dir, IndexFile);
        PrepareCommand.Write(() => AtomicFile.WriteAllText(indexPath, Json.Serialize(index) + "\n"), indexPath);
    }
}

/// <summary>What <c>grad</c> writes to loss.json.</summary>
internal sealed record GradLoss(double Loss);
