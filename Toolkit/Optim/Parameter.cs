namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// One trainable tensor of the model (an ONNX initializer): its current values and the
/// gradient of the loss with respect to them. Both buffers are allocated once, pinned, and
/// handed to ONNX Runtime without copies; optimizers update <see cref="Value"/> in place and
/// never replace either array.
/// </summary>
public sealed class Parameter
{
    /// <summary>Wraps existing buffers (for instance ones the runtime already handed to ONNX Runtime).</summary>
    /// <param name="name">The ONNX initializer name.</param>
    /// <param name="shape">The tensor shape; its element count must equal both buffers' lengths.</param>
    /// <param name="value">The parameter values, updated in place.</param>
    /// <param name="grad">The gradient buffer, same length as <paramref name="value"/>.</param>
    /// <param name="trainable">False for a tensor the optimizers must never touch.</param>
    public Parameter(string name, long[] shape, float[] value, float[] grad, bool trainable = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(value);
        ArgumentNullException.ThrowIfNull(grad);
        long count = ElementCount(shape, name);
        if (value.Length != count)
            throw new ArgumentException(
                $"Parameter '{name}': shape [{string.Join(", ", shape)}] has {count} elements but the value buffer has {value.Length}.",
                nameof(value));
        if (grad.Length != value.Length)
            throw new ArgumentException(
                $"Parameter '{name}': the gradient buffer has {grad.Length} elements, the value buffer {value.Length}.",
                nameof(grad));
        if (ReferenceEquals(value, grad))
            throw new ArgumentException($"Parameter '{name}': value and gradient must be distinct buffers.", nameof(grad));
        Name = name;
        Shape = (long[])shape.Clone();
        Value = value;
        Grad = grad;
        Trainable = trainable;
    }

    /// <summary>
    /// Allocates pinned, zeroed value and gradient buffers for a tensor of <paramref name="shape"/>
    /// (<c>GC.AllocateArray&lt;float&gt;(n, pinned: true)</c>).
    /// </summary>
    public static Parameter Create(string name, long[] shape, bool trainable = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        int n = checked((int)ElementCount(shape, name));
        return new Parameter(name, shape,
            GC.AllocateArray<float>(n, pinned: true), GC.AllocateArray<float>(n, pinned: true), trainable);
    }

    /// <summary>The ONNX initializer name.</summary>
    public string Name { get; }

    /// <summary>
    /// Module-path names a glob (a parameter group, a K-FAC block override) also selects this
    /// parameter by, besides <see cref="Name"/> (<c>encoder.layers.0.linear1.weight</c> for
    /// <c>onnx::MatMul_262</c>; see the training manifest's parameter names).
    /// </summary>
    public IReadOnlyList<string> Aliases { get; init; } = [];

    /// <summary>True when <paramref name="glob"/> matches the name or one of the <see cref="Aliases"/>.</summary>
    internal bool IsMatch(Graph.Model.Glob glob) => glob.IsMatch(Name) || Aliases.Any(glob.IsMatch);

    /// <summary>The tensor shape (a copy taken at construction; do not modify).</summary>
    public long[] Shape { get; }

    /// <summary>The values, row-major; updated in place by optimizers.</summary>
    public float[] Value { get; }

    /// <summary>The gradient of the loss w.r.t. <see cref="Value"/>, written by the runtime each step.</summary>
    public float[] Grad { get; }

    /// <summary>False for a tensor that optimizers, clipping and accumulation skip entirely.</summary>
    public bool Trainable { get; }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} {FormatShape(Shape)}{(Trainable ? "" : " (not trainable)")}";

    internal static string FormatShape(ReadOnlySpan<long> shape)
    {
        var parts = new string[shape.Length];
        for (int i = 0; i < shape.Length; i++) parts[i] = shape[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
        return "[" + string.Join(", ", parts) + "]";
    }

    private static long ElementCount(long[] shape, string name)
    {
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0)
                throw new ArgumentException($"Parameter '{name}': shape [{string.Join(", ", shape)}] has a negative dimension.", nameof(shape));
            count = checked(count * d);
        }
        if (count > Array.MaxLength)
            throw new ArgumentException($"Parameter '{name}': {count} elements do not fit one buffer.", nameof(shape));
        return count;
    }
}
