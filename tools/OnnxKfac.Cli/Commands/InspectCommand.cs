using System.CommandLine;
using System.Globalization;
using OnnxKfac.Cli.Common;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac;

namespace OnnxKfac.Cli.Commands;

/// <summary><c>onnx-kfac inspect MODEL</c>: what the toolkit sees in a model and what it would train.</summary>
internal static class InspectCommand
{
    public static Command Create(CliContext ctx)
    {
        var model = new Argument<string>("MODEL") { Description = "The ONNX model (.onnx)" };
        var json = new Option<bool>("--json") { Description = "Print a JSON document (snake_case, stable keys) instead of tables" };
        var loss = new LossArguments(lossRequired: false, details: false);
        var optimizer = new Option<string?>("--optimizer") { Description = "kfac: also list the curvature block K-FAC gives each parameter, and why", HelpName = "kfac" };
        var blocks = new Option<string[]>("--kfac-block") { Description = "As train's --kfac-block GLOB:KIND (repeatable)", HelpName = "GLOB:KIND", AllowMultipleArgumentsPerToken = false };
        var fallback = new Option<string?>("--kfac-fallback") { Description = "As train's --kfac-fallback: diagonal (default) or identity", HelpName = "diagonal|identity" };
        var trainable = new Option<string[]>("--trainable") { Description = "As train's --trainable GLOB (repeatable): the parameters listed are the set that would train", HelpName = "GLOB" };
        var frozen = new Option<string[]>("--frozen") { Description = "As train's --frozen GLOB (repeatable): the parameters listed are the set that would train", HelpName = "GLOB" };
        var untie = new Option<string[]>("--untie") { Description = "As train's --untie GLOB (repeatable)", HelpName = "GLOB" };
        var cmd = new Command("inspect", "Show a model's inputs, outputs, trainable parameters, layers, tied weights, ops without a gradient rule and (--optimizer kfac) K-FAC's curvature blocks");
        cmd.Arguments.Add(model);
        cmd.Options.Add(json);
        cmd.Options.Add(optimizer);
        cmd.Options.Add(blocks);
        cmd.Options.Add(fallback);
        cmd.Options.Add(trainable);
        cmd.Options.Add(frozen);
        cmd.Options.Add(untie);
        loss.AddTo(cmd);
        cmd.SetAction(r =>
        {
            string path = r.GetValue(model)!;
            var lossOptions = loss.Read(r);
            var m = OnnxModelIO.Load(path);
            var report = ModelInspector.Inspect(m, path, lossOptions, r.GetValue(loss.Output), null,
                r.GetValue(trainable) ?? [], r.GetValue(frozen) ?? [], r.GetValue(untie) ?? []);
            string? opt = r.GetValue(optimizer)?.Trim().ToLowerInvariant();
            if (opt is not null and not "kfac") throw new OnnxKfacException($"--optimizer: inspect lists K-FAC's blocks (--optimizer kfac); '{opt}' has none");
            if (opt is null && (r.GetValue(blocks)?.Length > 0 || r.GetValue(fallback) is not null))
                throw new OnnxKfacException("--kfac-block and --kfac-fallback need --optimizer kfac");
            if (opt == "kfac")
                report = report with { KfacBlocks = KfacPlan(m, lossOptions ?? new LossOptions(LossKind.CrossEntropy) { Output = r.GetValue(loss.Output) },
                    r.GetValue(blocks) ?? [], r.GetValue(fallback), r.GetValue(trainable) ?? [], r.GetValue(frozen) ?? [], r.GetValue(untie) ?? []) };
            if (r.GetValue(json)) ctx.Out.WriteLine(Json.Serialize(report));
            else Render(report, ReportWriter.For(ctx));
            return ExitCodes.Ok;
        });
        return cmd;
    }

    /// <summary>The blocks K-FAC would use: the training graph K-FAC asks for, then its block plan.</summary>
    private static KfacBlockEntry[] KfacPlan(Graph.Proto.ModelProto m, LossOptions loss, string[] blocks, string? fallback, string[] trainable, string[] frozen, string[] untie)
    {
        KfacOptions options;
        try
        {
            options = new KfacOptions
            {
                Blocks = [.. blocks.Select(BlockOverride.Parse)],
                Fallback = fallback?.Trim().ToLowerInvariant() switch
                {
                    null or "diagonal" => FallbackBlock.Diagonal,
                    "identity" => FallbackBlock.Identity,
                    _ => throw new OnnxKfacException($"--kfac-fallback: unknown value '{fallback}'; expected diagonal or identity"),
                },
            };
        }
        catch (ArgumentException e) { throw new OnnxKfacException($"--kfac-block: {e.Message.Replace(" (Parameter 'Blocks')", "").Replace(" (Parameter 'kind')", "")}", e); }
        var graph = TrainingGraphBuilder.Build(m, options.Configure(new TrainingGraphOptions(loss) { Trainable = trainable, Frozen = frozen, Untie = untie }));
        return [.. KfacOptimizer.Plan(graph.Manifest, options, m).Select(b => new KfacBlockEntry(b.Block, b.Kind, b.Parameters, b.Reason))];
    }

    private static string N(long v) => v.ToString("N0", CultureInfo.InvariantCulture);

    public static void Render(InspectReport r, ReportWriter w)
    {
        w.Heading($"Model {r.Model}");
        string producer = r.Producer.Length == 0 ? "(unknown)" : r.ProducerVersion.Length == 0 ? r.Producer : $"{r.Producer} {r.ProducerVersion}";
        w.Line($"  IR version  {r.IrVersion.ToString(CultureInfo.InvariantCulture)}");
        w.Line($"  opset       {string.Join(", ", r.OpsetImports.Select(o => $"{o.Domain} {o.Version}"))}");
        w.Line($"  producer    {producer}");

        w.Heading("Inputs");
        w.Table(["name", "type", "shape"], r.Inputs.Select(t => (IReadOnlyList<string>)[t.Name, t.ElemType, ModelInspector.FormatShape(t.Shape)]));
        w.Heading("Outputs");
        w.Table(["name", "type", "shape"], r.Outputs.Select(t => (IReadOnlyList<string>)[t.Name, t.ElemType, ModelInspector.FormatShape(t.Shape)]));
        if (r.Loss is { } loss)
            w.Line($"loss {loss.Kind} on '{r.LossOutput}': target {loss.Target.ElemType} {ModelInspector.FormatShape(loss.Target.Shape)}");

        w.Heading($"Trainable parameters{(r.LossOutput is null ? "" : $" (loss on '{r.LossOutput}')")}: {r.Parameters.Count} tensors, {N(r.ParameterElements)} elements");
        if (r.Parameters.Count > 0)
            w.Table(["name", "type", "shape", "elements"], r.Parameters.Select(p => (IReadOnlyList<string>)[p.Name, p.ElemType, Shapes.Format(p.Shape), N(p.Elements)]));

        if (r.Excluded.Count > 0)
        {
            w.Heading($"Excluded initializers: {r.Excluded.Count}");
            w.Table(["name", "elements", "reason"], r.Excluded.Select(e => (IReadOnlyList<string>)[e.Name, N(e.Elements), e.Reason]));
        }

        w.Heading($"Layers: {r.Layers.Count}" + (r.Layers.Count == 0 ? "" : " (" + string.Join(", ", r.Layers.GroupBy(l => l.Kind).Select(g => $"{g.Count()} {g.Key}")) + ")"));
        if (r.Layers.Count > 0)
            w.Table(["name", "kind", "in", "out", "weight", "bias", "node"],
                r.Layers.Select(l => (IReadOnlyList<string>)[l.Name, l.Kind, l.InFeatures.ToString(CultureInfo.InvariantCulture), l.OutFeatures.ToString(CultureInfo.InvariantCulture), l.Weight, l.Bias ?? "-", l.Node]));
        if (r.RejectedLayers.Count > 0)
        {
            w.Heading($"Not factored as layers: {r.RejectedLayers.Count}");
            w.Table(["node", "op", "reason"], r.RejectedLayers.Select(x => (IReadOnlyList<string>)[x.Node, x.OpType, x.Reason]));
        }

        if (r.Tied.Count > 0)
        {
            w.Heading($"Tied initializers: {r.Tied.Count}");
            w.Table(["name", "readers", "identity copies"], r.Tied.Select(t => (IReadOnlyList<string>)[t.Name, string.Join("; ", t.Readers), t.IdentityCopies.ToString(CultureInfo.InvariantCulture)]));
        }
        if (r.BrokenTies.Count > 0)
        {
            w.Heading($"Ties the exporter broke: {r.BrokenTies.Count} (an initializer equal to another or to its transpose)");
            w.Table(["copy", "of", "form", "training"], r.BrokenTies.Select(b => (IReadOnlyList<string>)[b.Copy, b.Source, b.Transposed ? "transpose" : "equal",
                b.KeptTied ? "one parameter (--untie to split)" : "apart (--untie)"]));
        }
        if (r.MergedTies.Count > 0)
        {
            w.Heading($"Initializers shared across modules: {r.MergedTies.Count} (the exporter merges equal initializers, e.g. deep-copied layers)");
            w.Table(["name", "module", "also feeds", "training"], r.MergedTies.Select(m => (IReadOnlyList<string>)[m.Name, m.Module.Length == 0 ? "(root)" : m.Module, string.Join(", ", m.OtherModules),
                m.Split ? $"split (--untie): {string.Join(", ", m.Copies)}" : m.Copies.Count > 0 ? "tied (--untie to split)" : "tied"]));
        }
        if (r.Warnings.Count > 0)
        {
            w.Heading($"Warnings: {r.Warnings.Count}");
            foreach (var x in r.Warnings) w.Line("  warning: " + x);
        }

        w.Heading($"Ops without a gradient rule: {r.OpsWithoutGradient.Count}");
        if (r.OpsWithoutGradient.Count > 0)
            w.Table(["op", "nodes", "on gradient path", "first node"],
                r.OpsWithoutGradient.Select(u => (IReadOnlyList<string>)[(u.Domain == "ai.onnx" ? "" : u.Domain + ".") + u.OpType, u.Count.ToString(CultureInfo.InvariantCulture), u.OnGradientPath ? "yes" : "no", u.Nodes[0]]));

        if (r.KfacBlocks is { } kb)
        {
            w.Heading($"K-FAC blocks: {kb.Count} (" + string.Join(", ", kb.GroupBy(b => b.Kind).Select(g => $"{g.Count()} {g.Key}")) + ")");
            w.Table(["block", "kind", "parameters", "why"], kb.Select(b => (IReadOnlyList<string>)[b.Block, b.Kind, string.Join(", ", b.Parameters), b.Reason]));
        }

        if (r.Notes.Count > 0)
        {
            w.Heading("Notes");
            foreach (var n in r.Notes) w.Line("  " + n);
        }
    }
}
