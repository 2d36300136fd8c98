using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Layers;

/// <summary>
/// Finds the layers K-FAC can factor: pattern (an op) → checks (its weight is a
/// trainable parameter, shapes fit) → a <see cref="LayerInfo"/>, or a rejection that
/// says which check failed.
/// </summary>
public static class LayerMatcher
{
    public static (IReadOnlyList<LayerInfo> Layers, IReadOnlyList<LayerRejection> Rejected) Match(
        GraphIndex index, IReadOnlyDictionary<string, TensorInfo> infos, ISet<string> parameters)
    {
        var layers = new List<LayerInfo>();
        var rejected = new List<LayerRejection>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in index.Graph.Node)
        {
            if (n.Domain is not ("" or "ai.onnx")) continue;
            if (n.Input.Count < 2 || n.Output.Count < 1 || n.Output[0].Length == 0) continue; // malformed: the gradient rule reports it
            string? why = null;
            LayerInfo? layer = n.OpType switch
            {
                "Gemm" => Gemm(n, index, infos, parameters, out why),
                "MatMul" => MatMul(n, index, infos, parameters, out why),
                "Conv" => Conv(n, index, infos, parameters, out why),
                "Gather" => Embedding(n, index, infos, parameters, out why),
                _ => null,
            };
            if (layer is not null) layers.Add(layer with { Name = Unique(names, layer.Name) });
            else if (why is not null) rejected.Add(new LayerRejection(GraphIndex.Describe(n), n.OpType, why));
        }
        return (layers, rejected);
    }

    private static string Unique(HashSet<string> names, string stem)
    {
        string c = stem;
        for (int k = 1; !names.Add(c); k++) c = $"{stem}#{k}";
        return c;
    }

    /// <summary>A layer's display name: the weight's name without a trailing ".weight".</summary>
    private static string LayerName(string weight, NodeProto n)
    {
        if (weight.EndsWith(".weight", StringComparison.Ordinal)) return weight[..^".weight".Length];
        return n.Name.Length > 0 ? n.Name : weight;
    }

    private static string? Param(GraphIndex index, string tensor, ISet<string> parameters)
    {
        string source = index.ThroughIdentity(tensor);
        return parameters.Contains(source) ? source : null;
    }

    private static long[]? Shape(IReadOnlyDictionary<string, TensorInfo> infos, string t) => infos.GetValueOrDefault(t)?.Shape;

    private static LayerInfo? Gemm(NodeProto n, GraphIndex index, IReadOnlyDictionary<string, TensorInfo> infos, ISet<string> p, out string? why)
    {
        why = null;
        string? w = Param(index, n.Input[1], p);
        if (w is null) { why = $"B '{n.Input[1]}' is not a trainable parameter"; return null; }
        if (Param(index, n.Input[0], p) is not null) { why = "A is a parameter too (weight on both sides)"; return null; }
        string? b = n.Input.Count > 2 && n.Input[2].Length > 0 ? Param(index, n.Input[2], p) : null;
        bool tb = n.GetInt("transB", 0) == 1;
        var ws = Shape(infos, w);
        if (ws is not null && ws.Length != 2) { why = $"B '{w}' is not a matrix"; return null; }
        if (b is not null && Shape(infos, b) is { } bs && bs.Length > 1 && !(bs.Length == 2 && bs[0] == 1))
            b = null; // a full [M, N] bias matrix is not a per-output bias: leave it to a diagonal block
        return new LayerInfo
        {
            Name = LayerName(w, n), Kind = LayerKind.Dense, Node = GraphIndex.Describe(n), OpType = "Gemm",
            Weight = w, Bias = b, Input = n.Input[0], PreActivation = n.Output[0],
            WeightTransposed = tb, InputTransposed = n.GetInt("transA", 0) == 1,
            Alpha = n.GetFloat("alpha", 1f), Beta = n.GetFloat("beta", 1f),
            InFeatures = ws is null ? -1 : tb ? ws[1] : ws[0], OutFeatures = ws is null ? -1 : tb ? ws[0] : ws[1],
        };
    }

    private static LayerInfo? MatMul(NodeProto n, GraphIndex index, IReadOnlyDictionary<string, TensorInfo> infos, ISet<string> p, out string? why)
    {
        why = null;
        string? w = Param(index, n.Input[1], p);
        if (w is null)
        {
            if (Param(index, n.Input[0], p) is not null) why = "the weight is the left operand (only x @ W is a dense layer)";
            return null; // activation @ activation (attention scores): not a layer, nothing to report
        }
        var ws = Shape(infos, w);
        if (ws is null || ws.Length != 2) { why = $"weight '{w}' is not a matrix"; return null; }
        int rank = infos.GetValueOrDefault(n.Input[0])?.Rank ?? -1;
        if (rank < 2) { why = $"input '{n.Input[0]}' has rank {(rank < 0 ? "unknown" : rank.ToString())}; a dense layer needs rank >= 2"; return null; }
        string pre = n.Output[0];
        string? bias = null;
        var consumers = index.Consumers(pre);
        if (consumers.Count == 1 && consumers[0].OpType == "Add" && consumers[0].Input.Count == 2 && consumers[0].Output.Count > 0)
        {
            var add = consumers[0];
            string other = add.Input[0] == pre ? add.Input[1] : add.Input[0];
            if (Param(index, other, p) is { } b && Shape(infos, b) is { } bs && bs.Length == 1 && bs[0] == ws[1])
            {
                bias = b;
                pre = add.Output[0];
            }
        }
        return new LayerInfo
        {
            Name = LayerName(w, n), Kind = LayerKind.Dense, Node = GraphIndex.Describe(n), OpType = "MatMul",
            Weight = w, Bias = bias, Input = n.Input[0], PreActivation = pre, InputRank = rank,
            WeightTransposed = false, InFeatures = ws[0], OutFeatures = ws[1],
        };
    }

    private static LayerInfo? Conv(NodeProto n, GraphIndex index, IReadOnlyDictionary<string, TensorInfo> infos, ISet<string> p, out string? why)
    {
        why = null;
        string? w = Param(index, n.Input[1], p);
        if (w is null) { why = $"weight '{n.Input[1]}' is not a trainable parameter"; return null; }
        var ws = Shape(infos, w);
        if (ws is null || ws.Length < 3) { why = $"weight '{w}' has no known kernel shape"; return null; }
        string? b = n.Input.Count > 2 && n.Input[2].Length > 0 ? Param(index, n.Input[2], p) : null;
        var window = ConvWindow.TryRead(n, Shape(infos, n.Input[0]), ws, out why);
        if (window is null) return null;
        return new LayerInfo
        {
            Name = LayerName(w, n), Kind = LayerKind.Conv, Node = GraphIndex.Describe(n), OpType = "Conv",
            Weight = w, Bias = b, Input = n.Input[0], PreActivation = n.Output[0],
            InFeatures = ws[1] * ws[2..].Aggregate(1L, (a, x) => a * x), OutFeatures = ws[0], Conv = window,
        };
    }

    private static LayerInfo? Embedding(NodeProto n, GraphIndex index, IReadOnlyDictionary<string, TensorInfo> infos, ISet<string> p, out string? why)
    {
        why = null;
        string? w = Param(index, n.Input[0], p);
        if (w is null) return null; // gathers over activations or shapes are not layers
        if (n.GetInt("axis", 0) != 0) { why = "gathers along an axis other than 0"; return null; }
        var ws = Shape(infos, w);
        if (ws is null || ws.Length != 2) { why = $"table '{w}' is not a matrix"; return null; }
        return new LayerInfo
        {
            Name = LayerName(w, n), Kind = LayerKind.Embedding, Node = GraphIndex.Describe(n), OpType = "Gather",
            Weight = w, Input = n.Input[1], PreActivation = n.Output[0], InFeatures = ws[0], OutFeatures = ws[1],
        };
    }
}
