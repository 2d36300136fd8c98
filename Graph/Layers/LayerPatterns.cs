using OnnxKfac.Graph.Layers.Patterns;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Layers;

/// <summary>
/// What a layer pattern says about one node: a layer, a rejection (it looked like a layer
/// but failed a check, with the reason) or nothing (not a layer, nothing to report).
/// </summary>
public readonly record struct LayerMatch(LayerInfo? Layer, string? Rejection)
{
    public static LayerMatch None => default;

    public static LayerMatch Reject(string why) => new(null, why);

    public static implicit operator LayerMatch(LayerInfo layer) => new(layer, null);
}

/// <summary>What a layer pattern reads: the graph, the static tensor infos and the trainable parameters.</summary>
public sealed record LayerMatchContext(GraphIndex Index, IReadOnlyDictionary<string, TensorInfo> Infos, ISet<string> Parameters)
{
    /// <summary>The trainable parameter behind <paramref name="tensor"/> (through Identity copies), or null.</summary>
    public string? Param(string tensor)
    {
        string source = Index.ThroughIdentity(tensor);
        return Parameters.Contains(source) ? source : null;
    }

    public long[]? Shape(string tensor) => Infos.GetValueOrDefault(tensor)?.Shape;

    /// <summary>
    /// The layer of node <paramref name="n"/> with weight <paramref name="weight"/> and model
    /// input <paramref name="input"/>, its pre-activation the node's output; a pattern sets the rest with <c>with</c>.
    /// </summary>
    public static LayerInfo Layer(NodeProto n, LayerKind kind, string weight, string input) => new()
    {
        Name = LayerName(weight, n), Kind = kind, Node = GraphIndex.Describe(n), OpType = n.OpType,
        Weight = weight, Input = input, PreActivation = n.Output[0],
    };

    /// <summary>A layer's display name: the weight's name without a trailing ".weight", else the node's name.</summary>
    private static string LayerName(string weight, NodeProto n)
    {
        if (weight.EndsWith(".weight", StringComparison.Ordinal)) return weight[..^".weight".Length];
        return n.Name.Length > 0 ? n.Name : weight;
    }
}

/// <summary>Matches one node (of the op type it is registered for) against a layer pattern.</summary>
public delegate LayerMatch LayerPattern(NodeProto node, LayerMatchContext context);

/// <summary>
/// The one table of layer patterns K-FAC factors, keyed by ai.onnx op type, one
/// registration line per pattern (as <see cref="Autodiff.GradientRegistry"/> is for
/// gradient rules). A new layer form is a pattern and a line here.
/// </summary>
public sealed class LayerPatterns
{
    private readonly Dictionary<string, LayerPattern> _patterns = new(StringComparer.Ordinal);

    /// <summary>The table with every built-in pattern.</summary>
    public static LayerPatterns Default { get; } = CreateDefault();

    public static LayerPatterns CreateDefault()
    {
        var r = new LayerPatterns();
        r.Add("Gemm", DensePatterns.Gemm);
        r.Add("MatMul", DensePatterns.MatMul);
        r.Add("Conv", ConvPattern.Conv);
        r.Add("Gather", EmbeddingPattern.Gather);
        return r;
    }

    /// <summary>Registers a pattern; registering an op twice is a programming error, not a silent override.</summary>
    public void Add(string opType, LayerPattern pattern)
    {
        if (!_patterns.TryAdd(opType, pattern))
            throw new InvalidOperationException($"a layer pattern for '{opType}' is already registered");
    }

    /// <summary>Replaces the pattern of an op (for users extending the default table).</summary>
    public void Replace(string opType, LayerPattern pattern) => _patterns[opType] = pattern;

    public LayerPattern? Find(string opType) => _patterns.GetValueOrDefault(opType);

    public IReadOnlyCollection<string> OpTypes => _patterns.Keys.Order(StringComparer.Ordinal).ToArray();
}
