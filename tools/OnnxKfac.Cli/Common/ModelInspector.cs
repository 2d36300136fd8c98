using OnnxKfac.Graph;
using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Cli.Common;

/// <summary>What <c>inspect</c> reports about a model; serialized as snake_case JSON (format below).</summary>
internal sealed record InspectReport
{
    public const string CurrentFormat = "onnx-kfac/inspect/1";

    public string Format { get; init; } = CurrentFormat;
    public required string Model { get; init; }
    public required long IrVersion { get; init; }
    public required int Opset { get; init; }
    public required IReadOnlyList<OpsetEntry> OpsetImports { get; init; }
    public required string Producer { get; init; }
    public required string ProducerVersion { get; init; }
    public required IReadOnlyList<TensorEntry> Inputs { get; init; }
    public required IReadOnlyList<TensorEntry> Outputs { get; init; }
    /// <summary>The output the loss reads, against which the parameters are selected (null: none could be chosen).</summary>
    public string? LossOutput { get; init; }
    /// <summary>With --loss: the loss and the target tensor it expects.</summary>
    public LossEntry? Loss { get; init; }
    public required IReadOnlyList<ParameterEntry> Parameters { get; init; }
    public required long ParameterElements { get; init; }
    public required IReadOnlyList<ExclusionEntry> Excluded { get; init; }
    public required IReadOnlyList<LayerEntry> Layers { get; init; }
    public required IReadOnlyList<RejectionEntry> RejectedLayers { get; init; }
    public required IReadOnlyList<TieEntry> Tied { get; init; }
    /// <summary>Initializers equal to another one or to its transpose (ties the exporter broke); kept tied unless --untie.</summary>
    public IReadOnlyList<BrokenTieEntry> BrokenTies { get; init; } = [];
    /// <summary>Initializers that feed modules they do not belong to (the exporter merges equal initializers); split by --untie.</summary>
    public IReadOnlyList<MergedTieEntry> MergedTies { get; init; } = [];
    /// <summary>--trainable/--frozen patterns that take only part of a module.</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];
    public required IReadOnlyList<OpEntry> Ops { get; init; }
    /// <summary>Ops in the graph with no gradient rule that are not declared non-differentiable.</summary>
    public required IReadOnlyList<UnsupportedOpEntry> OpsWithoutGradient { get; init; }
    public required IReadOnlyList<string> Notes { get; init; }
    /// <summary>With --optimizer kfac: the curvature block of every trainable parameter and why.</summary>
    public IReadOnlyList<KfacBlockEntry>? KfacBlocks { get; init; }
}

internal sealed record KfacBlockEntry(string Block, string Kind, IReadOnlyList<string> Parameters, string Reason);

internal sealed record OpsetEntry(string Domain, long Version);

/// <summary>A graph input or output. Shape entries: a number, a symbolic name, or null (unknown); null shape: unknown rank.</summary>
internal sealed record TensorEntry(string Name, string ElemType, IReadOnlyList<object?>? Shape);

internal sealed record LossEntry(string Kind, TensorEntry Target);

internal sealed record ParameterEntry(string Name, string ElemType, long[] Shape, long Elements);

internal sealed record ExclusionEntry(string Name, string Reason, long Elements);

internal sealed record LayerEntry(string Name, string Kind, string Node, string OpType, string Weight, string? Bias, long InFeatures, long OutFeatures);

internal sealed record RejectionEntry(string Node, string OpType, string Reason);

internal sealed record TieEntry(string Name, IReadOnlyList<string> Readers, int IdentityCopies);

internal sealed record BrokenTieEntry(string Copy, string Source, bool Transposed, bool KeptTied);

internal sealed record MergedTieEntry(string Name, string Module, IReadOnlyList<string> OtherModules, IReadOnlyList<string> Copies, bool Split);

internal sealed record OpEntry(string Domain, string OpType, int Count);

internal sealed record UnsupportedOpEntry(string Domain, string OpType, int Count, IReadOnlyList<string> Nodes, bool OnGradientPath);

/// <summary>Builds an <see cref="InspectReport"/>; diagnoses rather than fails where it can.</summary>
internal static class ModelInspector
{
    /// <summary>
    /// The report of <paramref name="model"/> as training would see it: ties kept or split
    /// (<paramref name="untie"/>), the parameters <paramref name="trainable"/> and
    /// <paramref name="frozen"/> select (a pattern that matches nothing is an error).
    /// </summary>
    public static InspectReport Inspect(ModelProto model, string path, LossOptions? loss, string? output, GradientRegistry? registry = null,
        IReadOnlyList<string>? trainable = null, IReadOnlyList<string>? frozen = null, IReadOnlyList<string>? untie = null)
    {
        registry ??= GradientRegistry.Default;
        trainable ??= [];
        frozen ??= [];
        untie ??= [];
        var plan = Ties.PlanFor(model, untie);
        model = Ties.Apply(model, untie);
        var index = new GraphIndex(model);
        var graph = model.Graph;
        var notes = new List<string>();
        if (index.Opset is < 13 or > 20)
            notes.Add($"ai.onnx opset {index.Opset} is outside the supported range 13..20; prepare will refuse this model");

        var inputs = graph.Input.Where(i => !index.Initializers.ContainsKey(i.Name)).Select(Entry).ToArray();
        var outputs = graph.Output.Select(Entry).ToArray();

        string? lossOutput = output ?? loss?.Output;
        if (lossOutput is not null) TrainingGraphBuilder.ChooseOutput(graph, lossOutput); // a name that does not exist is an error
        else if (graph.Output.Count == 1) lossOutput = graph.Output[0].Name;
        else if (graph.Output.Count > 1)
        {
            lossOutput = graph.Output[0].Name;
            notes.Add($"the model has {graph.Output.Count} outputs; parameters are selected for the first, '{lossOutput}' (choose another with --output)");
        }

        var parameters = new List<TensorProto>();
        IReadOnlyList<ManifestExclusion> excluded = [];
        IReadOnlyList<string> warnings = [];
        if (lossOutput is not null)
        {
            try
            {
                var sel = ParameterSelection.Select(index, lossOutput, trainable, frozen, registry);
                parameters.AddRange(sel.Parameters);
                excluded = sel.Excluded;
                warnings = sel.Warnings;
            }
            catch (OnnxKfacException e) when (trainable.Count == 0 && frozen.Count == 0)
            {
                notes.Add(e.Message);
                excluded = graph.Initializer.Where(t => TensorData.IsFloat(t.DataType) && !index.GraphInputs.ContainsKey(t.Name))
                    .Select(t => new ManifestExclusion(t.Name, "does not reach the loss through a differentiable path")).ToArray();
            }
        }
        else notes.Add("the model has no outputs");

        var infos = ShapeInference.Infer(model);
        var paramNames = new HashSet<string>(parameters.Select(p => p.Name), StringComparer.Ordinal);
        var (layers, rejected) = LayerMatcher.Match(index, infos, paramNames);

        LossEntry? lossEntry = null;
        if (loss is not null && lossOutput is not null)
        {
            var o = graph.Output.First(x => x.Name == lossOutput);
            lossEntry = new LossEntry(loss.Function.Name, TargetEntry(loss.Function, o, infos.GetValueOrDefault(lossOutput), notes));
        }

        var unsupported = OpsWithoutGradient(index, registry, lossOutput, paramNames);
        if (unsupported.Any(u => u.OnGradientPath))
            notes.Add("ops on the path from the parameters to the loss have no gradient rule; prepare and grad will fail");

        return new InspectReport
        {
            Model = path,
            IrVersion = model.IrVersion,
            Opset = index.Opset,
            OpsetImports = model.OpsetImport.Select(o => new OpsetEntry(o.Domain.Length == 0 ? "ai.onnx" : o.Domain, o.Version)).ToArray(),
            Producer = model.ProducerName,
            ProducerVersion = model.ProducerVersion,
            Inputs = inputs,
            Outputs = outputs,
            LossOutput = lossOutput,
            Loss = lossEntry,
            Parameters = parameters.Select(p => new ParameterEntry(p.Name, TensorData.TypeName(p.DataType), p.Dims.ToArray(), Elements(p))).ToArray(),
            ParameterElements = parameters.Sum(Elements),
            Excluded = excluded.Select(e => new ExclusionEntry(e.Name, e.Reason, index.Initializers.TryGetValue(e.Name, out var t) ? Elements(t) : 0)).ToArray(),
            Layers = layers.Select(l => new LayerEntry(l.Name, KindName(l.Kind), l.Node, l.OpType, l.Weight, l.Bias, l.InFeatures, l.OutFeatures)).ToArray(),
            RejectedLayers = rejected.Select(r => new RejectionEntry(r.Node, r.OpType, r.Reason)).ToArray(),
            Tied = ParameterSelection.FindTies(index).Select(t => new TieEntry(t.Name, t.Readers, t.IdentityCopies)).ToArray(),
            BrokenTies = [.. plan.Kept.Select(b => new BrokenTieEntry(b.Copy, b.Source, b.Transposed, true)), .. plan.KeptApart.Select(b => new BrokenTieEntry(b.Copy, b.Source, b.Transposed, false))],
            MergedTies = [.. plan.Merged.Select(m => new MergedTieEntry(m.Name, m.Module, m.OtherModules, m.Copies, false)), .. plan.Split.Select(m => new MergedTieEntry(m.Name, m.Module, m.OtherModules, m.Copies, true))],
            Warnings = warnings,
            Ops = graph.Node.GroupBy(n => (Domain: DomainName(n.Domain), n.OpType))
                .Select(g => new OpEntry(g.Key.Domain, g.Key.OpType, g.Count()))
                .OrderBy(e => e.Domain, StringComparer.Ordinal).ThenBy(e => e.OpType, StringComparer.Ordinal).ToArray(),
            OpsWithoutGradient = unsupported,
            Notes = notes,
        };
    }

    public static string KindName(LayerKind kind) => kind.ToString().ToLowerInvariant();

    private static string DomainName(string domain) => domain.Length == 0 ? "ai.onnx" : domain;

    private static long Elements(TensorProto t)
    {
        try { return TensorData.ElementCount(t.Dims); }
        catch (OverflowException) { return -1; }
    }

    public static TensorEntry Entry(ValueInfoProto vi)
    {
        var tt = vi.Type?.TensorType;
        if (tt is null)
            return new TensorEntry(vi.Name, vi.Type is null ? "unknown" : vi.Type.ValueCase.ToString().ToLowerInvariant(), null);
        IReadOnlyList<object?>? shape = tt.Shape?.Dim.Select(d => d.HasDimValue ? d.DimValue : d.HasDimParam && d.DimParam.Length > 0 ? (object?)d.DimParam : null).ToArray();
        return new TensorEntry(vi.Name, tt.ElemType == 0 ? "unknown" : TensorData.TypeName(tt.ElemType), shape);
    }

    /// <summary>The target tensor a loss on <paramref name="output"/> expects.</summary>
    private static TensorEntry TargetEntry(LossFunction loss, ValueInfoProto output, TensorInfo? info, List<string> notes)
    {
        var o = Entry(output);
        IReadOnlyList<object?>? shape = o.Shape ?? info?.Shape?.Select(d => d >= 0 ? (object?)d : null).ToArray();
        string elem = o.ElemType == "unknown" && info is { ElemType: > 0 } ? TensorData.TypeName(info.ElemType) : o.ElemType;
        if (loss.ClassIndexTargets) elem = TensorData.TypeName(loss.TargetElemType(0));
        try { return new TensorEntry("target", elem, loss.TargetShape(shape, output.Name)); }
        catch (OnnxKfacException e)
        {
            notes.Add(e.Message);
            return new TensorEntry("target", elem, null);
        }
    }

    public static string FormatShape(IReadOnlyList<object?>? shape) =>
        shape is null ? "[?]" : "[" + string.Join(",", shape.Select(d => d?.ToString() ?? "?")) + "]";

    private static IReadOnlyList<UnsupportedOpEntry> OpsWithoutGradient(GraphIndex index, GradientRegistry registry, string? output, HashSet<string> parameters)
    {
        // Tensors that depend on a parameter, and tensors from which the loss output is reached.
        var forward = new HashSet<string>(parameters, StringComparer.Ordinal);
        foreach (var n in index.Graph.Node)
        {
            bool std = n.Domain is "" or "ai.onnx";
            if (std && registry.IsNonDifferentiable(n.OpType)) continue;
            var entry = std ? registry.Find(n.OpType) : null;
            bool touched = false;
            for (int i = 0; i < n.Input.Count; i++)
                if (n.Input[i].Length > 0 && forward.Contains(n.Input[i]) && (entry is null || entry.IsDifferentiable(i))) touched = true;
            if (touched) foreach (var o in n.Output) if (o.Length > 0) forward.Add(o);
        }
        var reach = output is null ? [] : ParameterSelection.DifferentiablyReaching(index, output, registry);
        var result = new List<UnsupportedOpEntry>();
        var groups = index.Graph.Node
            .Where(n => !(n.Domain is "" or "ai.onnx") || (registry.Find(n.OpType) is null && !registry.IsNonDifferentiable(n.OpType)))
            .GroupBy(n => (Domain: DomainName(n.Domain), n.OpType));
        foreach (var g in groups)
        {
            bool onPath = g.Any(n => n.Output.Any(reach.Contains) && n.Input.Any(forward.Contains));
            result.Add(new UnsupportedOpEntry(g.Key.Domain, g.Key.OpType, g.Count(), g.Select(GraphIndex.Describe).ToArray(), onPath));
        }
        return result.OrderBy(e => e.Domain, StringComparer.Ordinal).ThenBy(e => e.OpType, StringComparer.Ordinal).ToArray();
    }
}
