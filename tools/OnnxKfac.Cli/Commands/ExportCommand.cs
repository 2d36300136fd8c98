using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using OnnxKfac.Cli.Training;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Checkpoints;
using OnnxKfac.Toolkit.Export;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Cli.Commands;

/// <summary>
/// <c>onnx-kfac export --checkpoint CKPT [--model MODEL] -o OUT.onnx</c>: the original graph
/// with the checkpoint's weights. A checkpoint of another model is refused with the reason.
/// </summary>
internal static class ExportCommand
{
    public static Command Create(CliContext ctx)
    {
        var checkpoint = new Option<string>("--checkpoint")
        {
            Description = "The checkpoint written by train --checkpoint",
            HelpName = "CKPT",
            Required = true,
        };
        var model = new Option<string?>("--model")
        {
            Description = "The model the checkpoint was trained from (default: the model named in the checkpoint's config)",
            HelpName = "MODEL",
        };
        var output = new Option<string>("--out", "-o")
        {
            Description = "The fine-tuned model to write (.onnx)",
            HelpName = "OUT.onnx",
            Required = true,
        };
        var last = new Option<bool>("--last")
        {
            Description = "Export the last weights even where the run's result is its best validated weights",
        };
        var preprocessing = new Option<bool>("--with-preprocessing")
        {
            Description = "The model takes raw inputs: the run's --scale and --normalize MEAN,STD (from the checkpoint's settings) become a Mul and an Add at its input",
        };
        var cmd = new Command("export", "Write the original model with a checkpoint's weights (the run's result: its best validated weights where it kept them)");
        cmd.Options.Add(checkpoint);
        cmd.Options.Add(model);
        cmd.Options.Add(output);
        cmd.Options.Add(last);
        cmd.Options.Add(preprocessing);
        cmd.SetAction(r =>
        {
            string ckpt = r.GetValue(checkpoint)!;
            string outPath = r.GetValue(output)!;
            var cp = Checkpoint.Load(ckpt);
            string modelPath = r.GetValue(model) ?? ModelOf(cp) ?? throw new OnnxKfacException(
                $"--checkpoint {ckpt}: the checkpoint does not name its model; pass --model MODEL");
            if (string.Equals(Path.GetFullPath(modelPath), Path.GetFullPath(outPath), StringComparison.Ordinal))
                throw new OnnxKfacException($"-o {outPath}: refusing to overwrite the source model");
            if (Directory.Exists(outPath)) throw new OnnxKfacException($"-o {outPath}: is a folder; name the .onnx file to write");
            // The model as trained: ties kept, and split where the run's --untie said so.
            var m = Ties.Apply(OnnxModelIO.Load(modelPath), UntieOf(cp));
            CheckSameModel(cp, m, ckpt, modelPath);
            bool best = !r.GetValue(last) && cp.Longs.TryGetValue("result_is_best", out long flag) && flag == 1;
            var weights = best ? BestWeights(cp, ckpt) : cp.Parameters;
            var exported = ModelExport.WithParameters(m, weights);
            if (r.GetValue(preprocessing)) exported = WithPreprocessing(exported, cp, ckpt);
            TrainReport.CreateParent(outPath);
            PrepareCommand.Write(() => OnnxModelIO.Save(exported, outPath), outPath);
            long values = cp.Parameters.Sum(p => (long)p.Value.Length);
            string which = best
                ? $"best validated weights (validation loss {cp.Doubles["best_loss"].ToString("G5", CultureInfo.InvariantCulture)})"
                : "weights" + (cp.Longs.TryGetValue("step", out long s) ? $" at update {s}" : "");
            ctx.Out.WriteLine($"wrote {outPath}: {modelPath} with the {which} of {ckpt} ({cp.Parameters.Count} parameters, {values.ToString("N0", CultureInfo.InvariantCulture)} values)");
            return ExitCodes.Ok;
        });
        return cmd;
    }

    private static IReadOnlyList<Parameter> BestWeights(Checkpoint cp, string ckpt) =>
        cp.Parameters.Select(p =>
        {
            var best = cp.Tensors.TryGetValue("best/" + p.Name, out var b) && b.Length == p.Value.Length ? b
                : throw new OnnxKfacException($"--checkpoint {ckpt}: the best weights of '{p.Name}' are missing; export the last weights with --last");
            var copy = Parameter.Create(p.Name, p.Shape);
            best.AsSpan().CopyTo(copy.Value);
            return copy;
        }).ToArray();

    /// <summary>The "untie" globs of the checkpoint's stored config (none: an empty list).</summary>
    public static string[] UntieOf(Checkpoint cp)
    {
        if (cp.Config.Length == 0) return [];
        try
        {
            using var doc = JsonDocument.Parse(cp.Config);
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("untie", out var v) && v.ValueKind == JsonValueKind.Array
                ? [.. v.EnumerateArray().Select(e => e.GetString() ?? "")] : [];
        }
        catch (JsonException) { return []; }
    }

    /// <summary>Bakes the normalization of the checkpoint's settings (--scale, --normalize MEAN,STD) into the model's one data input.</summary>
    private static ModelProto WithPreprocessing(ModelProto model, Checkpoint cp, string ckpt)
    {
        var cfg = new Config();
        if (cp.Config.Length > 0) new SettingTable(TrainSettings.All).FromJson(cp.Config, $"checkpoint {ckpt}", cfg, fromCheckpoint: true);
        if (cfg.String("normalize", "none")!.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase))
            throw new OnnxKfacException($"--with-preprocessing: {ckpt} was trained with --normalize auto, whose statistics come from the training data and are not in the checkpoint; export with train --export-with-preprocessing, or train with --normalize MEAN,STD");
        var norm = DataSources.ResolveNormalization(cfg, null)
            ?? throw new OnnxKfacException($"--with-preprocessing: {ckpt} was trained without --scale or --normalize; there is no preprocessing to bake in");
        var initializers = model.Graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var inputs = model.Graph.Input.Where(i => !initializers.Contains(i.Name)).ToArray();
        if (inputs.Length != 1) throw new OnnxKfacException($"--with-preprocessing: the model has {inputs.Length} data inputs; the normalization applies to one");
        var shapes = ModelSetup.ExampleShapes(cfg);
        long[] example = shapes.TryGetValue(inputs[0].Name, out var given) ? given
            : inputs[0].Type.TensorType.Shape.Dim.Skip(1).Select(d => d.HasDimValue ? d.DimValue : -1).ToArray();
        if (example.Any(d => d <= 0))
            throw new OnnxKfacException($"--with-preprocessing: input '{inputs[0].Name}' has dynamic dimensions besides the batch, and the checkpoint's settings give no --input-shape for it");
        return ModelExport.WithPreprocessing(model, inputs[0].Name, norm, example);
    }

    /// <summary>The "model" of the checkpoint's stored config, if any.</summary>
    public static string? ModelOf(Checkpoint cp)
    {
        if (cp.Config.Length == 0) return null;
        try
        {
            using var doc = JsonDocument.Parse(cp.Config);
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("model", out var v) && v.ValueKind == JsonValueKind.String
                ? v.GetString() : null;
        }
        catch (JsonException) { return null; }
    }

    /// <summary>Refuses a checkpoint of another model, naming the first difference.</summary>
    public static void CheckSameModel(Checkpoint cp, ModelProto model, string ckpt, string modelPath)
    {
        string why = $"--checkpoint {ckpt} is from another model than {modelPath}";
        var inits = model.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var p in cp.Parameters)
        {
            if (!inits.TryGetValue(p.Name, out var t))
                throw new OnnxKfacException($"{why}: the model has no initializer '{p.Name}'");
            if (t.DataType != (int)TensorProto.Types.DataType.Float || !t.Dims.SequenceEqual(p.Shape))
                throw new OnnxKfacException($"{why}: parameter '{p.Name}' is float[{string.Join(",", p.Shape)}] in the checkpoint but {TensorData.TypeName(t.DataType)}[{string.Join(",", t.Dims)}] in the model");
        }
        if (Checkpoint.Fingerprint(model, cp.Parameters) != cp.ModelFingerprint)
            throw new OnnxKfacException($"{why}: the parameters match but the graph differs");
    }
}
