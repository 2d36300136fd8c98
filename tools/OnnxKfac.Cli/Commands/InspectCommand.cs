using System.CommandLine;
using System.Globalization;
using OnnxKfac.Cli.Common;
using OnnxKfac.Graph.Model;

namespace OnnxKfac.Cli.Commands;

/// <summary><c>onnx-kfac inspect MODEL</c>: what the toolkit sees in a model and what it would train.</summary>
internal static class InspectCommand
{
    public static Command Create(CliContext ctx)
    {
        var model = new Argument<string>("MODEL") { Description = "The ONNX model (.onnx)" };
        var json = new Option<bool>("--json") { Description = "Print a JSON document (snake_case, stable keys) instead of tables" };
        var loss = new LossArguments(lossRequired: false, details: false);
        var cmd = new Command("inspect", "Show a model's inputs, outputs, trainable parameters, layers, tied weights and ops without a gradient rule");
        cmd.Arguments.Add(model);
        cmd.Options.Add(json);
        loss.AddTo(cmd);
        cmd.SetAction(r =>
        {
            string path = r.GetValue(model)!;
            var lossOptions = loss.Read(r);
            var m = OnnxModelIO.Load(path);
            var report = ModelInspector.Inspect(m, path, lossOptions, r.GetValue(loss.Output));
            if (r.GetValue(json)) ctx.Out.WriteLine(Json.Serialize(report));
            else Render(report, ReportWriter.For(ctx));
            return ExitCodes.Ok;
        });
        return cmd;
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

        w.Heading($"Ops without a gradient rule: {r.OpsWithoutGradient.Count}");
        if (r.OpsWithoutGradient.Count > 0)
            w.Table(["op", "nodes", "on gradient path", "first node"],
                r.OpsWithoutGradient.Select(u => (IReadOnlyList<string>)[(u.Domain == "ai.onnx" ? "" : u.Domain + ".") + u.OpType, u.Count.ToString(CultureInfo.InvariantCulture), u.OnGradientPath ? "yes" : "no", u.Nodes[0]]));

        if (r.Notes.Count > 0)
        {
            w.Heading("Notes");
            foreach (var n in r.Notes) w.Line("  " + n);
        }
    }
}
