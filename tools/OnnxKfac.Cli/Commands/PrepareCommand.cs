using System.CommandLine;
using System.Globalization;
using OnnxKfac.Cli.Common;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Cli.Commands;

/// <summary><c>onnx-kfac prepare MODEL --loss KIND -o training.onnx</c>: writes the training graph and its manifest.</summary>
internal static class PrepareCommand
{
    public static Command Create(CliContext ctx)
    {
        var model = new Argument<string>("MODEL") { Description = "The ONNX model (.onnx)" };
        var output = new Option<string>("--out", "-o")
        {
            Description = "The training graph to write (.onnx); its manifest goes beside it as NAME.manifest.json",
            HelpName = "FILE",
            Required = true,
        };
        var loss = new LossArguments(lossRequired: true);
        var selection = new SelectionArguments();
        var sampled = new Option<bool>("--sampled-fisher") { Description = "Add the sampled-target backward pass (true Fisher) and its noise input" };
        var patches = new Option<bool>("--conv-patches") { Description = "Expose conv input patches (im2col) for conv layers" };
        var cmd = new Command("prepare", "Write the training graph (forward, loss, backward, K-FAC layer taps) and its manifest");
        cmd.Arguments.Add(model);
        loss.AddTo(cmd);
        selection.AddTo(cmd);
        cmd.Options.Add(sampled);
        cmd.Options.Add(patches);
        cmd.Options.Add(output);
        cmd.SetAction(r =>
        {
            string source = r.GetValue(model)!;
            string target = r.GetValue(output)!;
            var options = new TrainingGraphOptions(loss.Read(r)!)
            {
                Trainable = selection.ReadTrainable(r),
                Frozen = selection.ReadFrozen(r),
                Untie = selection.ReadUntie(r),
                SampledFisher = r.GetValue(sampled),
                ConvPatches = r.GetValue(patches),
            };
            if (string.Equals(Path.GetFullPath(source), Path.GetFullPath(target), StringComparison.Ordinal))
                throw new OnnxKfacException($"-o {target}: refusing to overwrite the source model");
            if (Directory.Exists(target)) throw new OnnxKfacException($"-o {target}: is a folder; name the .onnx file to write");
            var m = OnnxModelIO.Load(source);
            LossChecks.CheckClassWeights(m, options.Loss);
            var tg = TrainingGraphBuilder.Build(m, options);
            string manifestPath = ManifestPath(target);
            Write(() => OnnxModelIO.Save(tg.Model, target), target);
            Write(() => AtomicFile.WriteAllText(manifestPath, tg.Manifest.ToJson()), manifestPath);

            var man = tg.Manifest;
            long elements = man.Parameters.Sum(p => TensorData.ElementCount(p.Shape));
            string layers = man.Layers.Count == 0 ? "no layers" : $"{man.Layers.Count} layers (" +
                string.Join(", ", man.Layers.GroupBy(l => l.Kind).Select(g => $"{g.Count()} {ModelInspector.KindName(g.Key)}")) + ")";
            ctx.Out.WriteLine($"wrote {target}: {man.Loss.Kind} loss on '{man.Loss.Output}', {man.Parameters.Count} parameters " +
                $"({elements.ToString("N0", CultureInfo.InvariantCulture)} elements), {layers}{(man.Fisher is null ? "" : ", sampled Fisher")}; opset {man.SourceOpset} -> {man.Opset}");
            ctx.Out.WriteLine($"wrote {manifestPath}");
            return ExitCodes.Ok;
        });
        return cmd;
    }

    /// <summary>The manifest beside a training graph: <c>training.onnx</c> → <c>training.manifest.json</c>.</summary>
    public static string ManifestPath(string trainingGraph) =>
        Path.Combine(Path.GetDirectoryName(trainingGraph) ?? "", Path.GetFileNameWithoutExtension(trainingGraph) + ".manifest.json");

    /// <summary>Runs a write, turning file-system errors into one-line user errors naming the file.</summary>
    public static void Write(Action write, string path)
    {
        try { write(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OnnxKfacException($"{path}: cannot write: {e.Message}", e);
        }
    }
}
