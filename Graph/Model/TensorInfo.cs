namespace OnnxKfac.Graph.Model;

/// <summary>
/// What is known statically about a tensor: element type (0 when unknown) and shape
/// (null when even the rank is unknown; -1 for a dimension known only at run time).
/// <see cref="Value"/> holds the contents of small integer tensors when they can be
/// computed ahead of time (shape arithmetic), with <see cref="UnknownValue"/> for
/// entries that depend on run-time dimensions.
/// </summary>
public sealed record TensorInfo(int ElemType, long[]? Shape, long[]? Value = null)
{
    public const long UnknownValue = long.MinValue;

    public int? Rank => Shape?.Length;

    public bool IsStatic => Shape is not null && Shape.All(d => d >= 0);

    public long? ElementCount => IsStatic ? TensorData.ElementCount(Shape!) : null;

    public string ShapeText => Shape is null ? "[?]" : "[" + string.Join(",", Shape.Select(d => d < 0 ? "?" : d.ToString())) + "]";
}
