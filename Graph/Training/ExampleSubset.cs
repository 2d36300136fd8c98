using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Training;

/// <summary>
/// A second forward pass over the first k = ⌈f·N⌉ examples of the batch only, so that the
/// sampled-target backward pass of K-FAC's statistics (which need those examples alone, see
/// <see cref="TrainingGraphOptions.StatisticsFraction"/>) runs on k rows instead of N: every
/// forward node that depends on a data input is cloned over the data inputs sliced to their
/// first k entries (axis 0 is the batch for every data input: the runtime feeds them that way);
/// nodes that do not (weights, constants, their transposes) are shared. The clone computes,
/// row for row, what the full forward pass computes for those examples, as long as no node
/// mixes examples; <see cref="TryBuild"/> declines models where that cannot be trusted.
/// The clone gives the sampled pass its structure; once that pass is built,
/// <see cref="SliceRows"/> replaces every cloned node whose outputs are example-major by slices
/// of the full pass's tensors, so only the clones of non-batch-first tensors (seq-first
/// recurrences, [T, N, ..] attention) are still computed.
/// </summary>
internal sealed class ExampleSubset
{
    private const string Scope = "sampled/subset/";
    private readonly Dictionary<string, string> _map;

    private ExampleSubset(Dictionary<string, string> map, string count, string examples, string ratio, string zero, long symbol,
        List<(NodeProto Original, NodeProto Clone)> clones)
    {
        _map = map;
        _zero = zero;
        _symbol = symbol;
        _clones = clones;
        Count = count;
        Examples = examples;
        Ratio = ratio;
    }

    /// <summary>The clone of a forward tensor (the tensor itself when it does not depend on the data).</summary>
    public string Map(string tensor) => _map.GetValueOrDefault(tensor, tensor);

    /// <summary>k as an int64 [1] tensor.</summary>
    public string Count { get; }

    /// <summary>The batch's N, as a [1] tensor of the output's float type.</summary>
    public string Examples { get; }

    /// <summary>N / k, as a [1] tensor of the output's float type: the rows of the batch per row the subset sees.</summary>
    public string Ratio { get; }

    /// <summary>
    /// Clones the forward pass over the first ⌈<paramref name="fraction"/>·N⌉ examples, or
    /// returns null where that is not known to be the same computation: a data input or the
    /// output whose first dimension is fixed (an export with a static batch bakes the batch
    /// into reshapes), or a node with a subgraph on the data path.
    /// </summary>
    public static ExampleSubset? TryBuild(GraphBuildContext g, IReadOnlyList<string> dataInputs, string output, double fraction, int floatType)
    {
        var graph = g.Model.Graph;
        if (dataInputs.Count == 0 || fraction >= 1) return null;
        var inputs = dataInputs.Select(n => g.Index.GraphInputs.GetValueOrDefault(n)).ToArray();
        var outInfo = graph.Output.FirstOrDefault(o => o.Name == output);
        if (inputs.Any(i => !DynamicBatch(i)) || !DynamicBatch(outInfo)) return null;

        var dependent = new HashSet<string>(dataInputs, StringComparer.Ordinal);
        var cloned = new List<NodeProto>();
        foreach (var n in graph.Node)
        {
            if (!n.Input.Any(dependent.Contains)) continue;
            if (n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)) return null;
            cloned.Add(n);
            foreach (var o in n.Output) if (o.Length > 0) dependent.Add(o);
        }
        if (!dependent.Contains(output)) return null;

        // k = max(1, ⌈f·N⌉) from the first data input; every data input is sliced to it.
        var e = g.Emitter("sampled/subset");
        int first = g.State.Nodes.Count;
        string k = FactorStatistics.FirstExamples(e, dataInputs[0], fraction);
        string examples = e.Cast(e.Op("Gather", [e.Shape(dataInputs[0]), e.Int64s(0)]), floatType);
        string ratio = e.Div(examples, e.Cast(k, floatType));
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        long symbol = BatchSymbol(g, dataInputs), fresh = FreshSymbol(g);
        string zero = e.Int64s(0);
        foreach (var x in dataInputs)
        {
            map[x] = e.Op("Slice", [x, e.Int64s(0), k, e.Int64s(0)]);
            Copy(g, x, map[x], symbol, fresh);
        }
        // The slices read only graph inputs and constants: they go into the model's node list
        // right away, ahead of the clones, so the list stays topologically sorted and the
        // backward builder (which walks that list) sees the clones.
        var slices = g.State.Nodes.GetRange(first, g.State.Nodes.Count - first);
        g.State.Nodes.RemoveRange(first, slices.Count);
        graph.Node.Add(slices);
        var clones = new List<(NodeProto, NodeProto)>();
        foreach (var n in cloned)
        {
            var c = n.Clone();
            clones.Add((n, c));
            if (c.Name.Length > 0) c.Name = g.State.UniqueName(Scope + c.Name);
            for (int i = 0; i < c.Input.Count; i++) c.Input[i] = map.GetValueOrDefault(c.Input[i], c.Input[i]);
            for (int o = 0; o < c.Output.Count; o++)
            {
                if (c.Output[o].Length == 0) continue;
                string name = g.State.UniqueName(Scope + n.Output[o]);
                map[n.Output[o]] = name;
                c.Output[o] = name;
                Copy(g, n.Output[o], name, symbol, fresh);
            }
            graph.Node.Add(c);
        }
        return new ExampleSubset(map, k, examples, ratio, zero, symbol, clones);
    }

    private readonly string _zero;
    private readonly long _symbol;
    private readonly List<(NodeProto Original, NodeProto Clone)> _clones;

    /// <summary>
    /// Once the passes over the clone are built (they read its tensors by name): every cloned node
    /// whose outputs all have the batch N as their first dimension in the original becomes the
    /// Slice of those originals' first k rows, the same values the full forward pass already holds
    /// for those examples (the clone recomputed them; where no node mixes examples they are equal,
    /// and where one does the slices are the full pass's). Clones that only fed sliced nodes are
    /// then dead and pruned. The sampled pass then costs its backward alone, plus k-row copies.
    /// Nothing is sliced when the batch dimension has no symbol to recognise it by.
    /// </summary>
    public void SliceRows(GraphBuildContext g)
    {
        if (_symbol == TensorInfo.UnknownValue) return;
        var graph = g.Model.Graph;
        var replace = new Dictionary<NodeProto, NodeProto[]>(ReferenceEqualityComparer.Instance);
        foreach (var (original, clone) in _clones)
        {
            var outputs = Enumerable.Range(0, original.Output.Count).Where(o => original.Output[o].Length > 0).ToArray();
            if (outputs.Length == 0 || !outputs.All(o => BatchRows(g, original.Output[o]))) continue;
            replace[clone] = [.. outputs.Select(o => new NodeProto
            {
                OpType = "Slice",
                Name = g.State.UniqueName(clone.Output[o] + "/rows"),
                Input = { original.Output[o], _zero, Count, _zero },
                Output = { clone.Output[o] },
            })];
        }
        if (replace.Count == 0) return;
        var nodes = graph.Node.SelectMany(n => replace.TryGetValue(n, out var slices) ? slices : [n]).ToArray();
        graph.Node.Clear();
        graph.Node.Add(nodes);
    }

    /// <summary>Whether the forward tensor's first dimension is the batch N (by its symbol).</summary>
    private bool BatchRows(GraphBuildContext g, string tensor) =>
        g.Infos.GetValueOrDefault(tensor)?.Shape is { Length: > 0 } shape && shape[0] == _symbol;

    private static bool DynamicBatch(ValueInfoProto? vi) =>
        vi?.Type?.TensorType?.Shape is { Dim.Count: > 0 } s && !s.Dim[0].HasDimValue;

    /// <summary>The symbol of the data inputs' first dimension (<see cref="TensorInfo.UnknownValue"/> when unnamed).</summary>
    private static long BatchSymbol(GraphBuildContext g, IReadOnlyList<string> dataInputs) =>
        g.Infos.GetValueOrDefault(dataInputs[0])?.Shape is { Length: > 0 } s && TensorInfo.IsSymbol(s[0]) ? s[0] : TensorInfo.UnknownValue;

    /// <summary>A symbol no tensor uses yet: the subset's k is another dimension than N.</summary>
    private static long FreshSymbol(GraphBuildContext g)
    {
        long min = TensorInfo.SymbolBase + 1;
        foreach (var info in g.Infos.Values)
        {
            foreach (var d in info.Shape ?? []) if (TensorInfo.IsSymbol(d)) min = Math.Min(min, d);
            foreach (var d in info.Value ?? []) if (TensorInfo.IsSymbol(d)) min = Math.Min(min, d);
        }
        return min - 1;
    }

    /// <summary>The clone's static information: the original's, with the batch symbol N renamed to k's.</summary>
    private static void Copy(GraphBuildContext g, string from, string to, long symbol, long fresh)
    {
        if (g.Infos.GetValueOrDefault(from) is not { } info) return;
        long[]? Rename(long[]? dims) => dims is null || symbol == TensorInfo.UnknownValue ? dims : dims.Select(d => d == symbol ? fresh : d).ToArray();
        g.SetInfo(to, info with { Shape = Rename(info.Shape), Value = Rename(info.Value) });
    }
}
