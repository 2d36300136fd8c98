using OnnxKfac.Graph.Model;

namespace OnnxKfac.Graph.Layers;

/// <summary>The layer kinds K-FAC has Kronecker-factored blocks for.</summary>
public enum LayerKind
{
    /// <summary>Gemm, or MatMul with an optional bias Add (also on (batch, seq, d) inputs).</summary>
    Dense,
    /// <summary>Conv (1-D, 2-D, 3-D) with stride, padding, dilation and groups.</summary>
    Conv,
    /// <summary>Gather rows of a weight table by integer indices.</summary>
    Embedding,
}

/// <summary>
/// One use of a weight by a layer: what <see cref="LayerMatcher"/> finds and what the
/// training manifest lists. <see cref="Input"/> is the model's layer input a_l and
/// <see cref="PreActivation"/> the model's tensor s whose gradient is g_l; the names of the
/// training graph's outputs for the layer (taps, factor statistics) are in
/// <see cref="Outputs"/>. For dense layers the weight is stored <c>[out, in]</c> when
/// <see cref="WeightTransposed"/> (Gemm transB=1, torch Linear) and <c>[in, out]</c>
/// otherwise (MatMul, Gemm transB=0); the pre-activation is <c>Alpha · a W + Beta · b</c>.
/// </summary>
public sealed record LayerInfo
{
    public required string Name { get; init; }
    public required LayerKind Kind { get; init; }
    public required string Node { get; init; }
    public required string OpType { get; init; }
    public required string Weight { get; init; }
    public string? Bias { get; init; }
    public required string Input { get; init; }
    public required string PreActivation { get; init; }
    public long InFeatures { get; init; } = -1;
    public long OutFeatures { get; init; } = -1;
    public bool WeightTransposed { get; init; }
    /// <summary>Gemm transA: the layer input is stored transposed ([in, N]).</summary>
    public bool InputTransposed { get; init; }
    public float Alpha { get; init; } = 1f;
    public float Beta { get; init; } = 1f;
    /// <summary>Rank of the dense input; above 2 every position is an extra example.</summary>
    public int InputRank { get; init; } = 2;
    /// <summary>The convolution window (conv layers only).</summary>
    public ConvWindow? Conv { get; init; }
    /// <summary>Conv groups (block-diagonal factors); 1 for other layers.</summary>
    public long Groups => Conv?.Group ?? 1;
    /// <summary>The training graph's outputs for this layer (none until a training graph is built).</summary>
    public LayerOutputs Outputs { get; init; } = new();
}

/// <summary>
/// The names of a layer's outputs in the training graph; null for those not emitted.
/// </summary>
public sealed record LayerOutputs
{
    /// <summary>The layer-input tap a_l (null when the graph was built without taps).</summary>
    public string? Input { get; init; }
    /// <summary>The pre-activation-gradient tap g_l (null without taps).</summary>
    public string? PreactivationGradient { get; init; }
    /// <summary>g_l of the sampled-target pass (true Fisher; null without it).</summary>
    public string? SampledPreactivationGradient { get; init; }
    /// <summary>Conv input patches (im2col; null unless requested).</summary>
    public string? Patches { get; init; }
    /// <summary>The factor-statistics outputs A ([groups, d_A, d_A]; embedding: [V]) and G ([groups, d_G, d_G]).</summary>
    public string? FactorA { get; init; }
    public string? FactorG { get; init; }
}

/// <summary>A node that looked like a layer but failed a check, with the reason.</summary>
public sealed record LayerRejection(string Node, string OpType, string Reason);
