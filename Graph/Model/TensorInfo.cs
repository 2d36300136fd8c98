namespace OnnxKfac.Graph.Model;

/// <summary>
/// What is known statically about a tensor: element type (0 when unknown) and shape
/// (null when even the rank is unknown; -1 for a dimension known only at run time).
/// <see cref="Value"/> holds the contents of small integer tensors when they can be
/// computed ahead of time (shape arithmetic), with <see cref="UnknownValue"/> for
/// entries that depend on run-time dimensions.
/// <para>
/// A dimension named in the model (a <c>dim_param</c> such as <c>batch</c>) is kept as a
/// symbol: a negative number below <see cref="SymbolBase"/>, equal for every tensor that
/// shares the name, so two tensors of shape [batch, 16] are known to have equal shapes.
/// Every negative dimension means "known only at run time".
/// </para>
/// </summary>
public sealed record TensorInfo(int ElemType, long[]? Shape, long[]? Value = null)
{
    public const long UnknownValue = long.MinValue;

    /// <summary>Symbols are <c>SymbolBase - k</c> for the k-th named dimension.</summary>
    public const long SymbolBase = long.MinValue / 2;

    public static bool IsSymbol(long d) => d <= SymbolBase && d != UnknownValue;

    /// <summary>A value entry that is a concrete number (not unknown, not a symbolic dimension).</summary>
    public static bool IsConcrete(long v) => v != UnknownValue && !IsSymbol(v);

    /// <summary>The shape with every run-time dimension written as -1 (for manifests and messages).</summary>
    public long[]? PlainShape => Shape?.Select(d => d < 0 ? -1 : d).ToArray();

    public int? Rank => Shape?.Length;

    public bool IsStatic => Shape is not null && Shape.All(d => d >= 0);

    public long? ElementCount => IsStatic ? TensorData.ElementCount(Shape!) : null;

    public string ShapeText => Shape is null ? "[?]" : "[" + string.Join(",", Shape.Select(d => d < 0 ? "?" : d.ToString())) + "]";
}
