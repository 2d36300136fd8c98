namespace OnnxKfac.Toolkit.Data;

/// <summary>Labels of a whole data set, always held in memory (they are small next to the features).</summary>
internal sealed class LabelStore
{
    private LabelStore(LabelKind kind, int width, long[]? classes, float[]? targets, int? classCount)
    {
        Kind = kind; Width = width; Classes = classes; Targets = targets; ClassCount = classCount;
    }

    public LabelKind Kind { get; }
    /// <summary>Label values per example: the class indices per example (1 for a classifier, the sequence length for per-position classes such as next-token labels), or the number of regression targets.</summary>
    public int Width { get; }
    public long[]? Classes { get; }
    public float[]? Targets { get; }
    public int? ClassCount { get; }

    public static LabelStore ForClasses(long[] classes, int? classCount, int width = 1) => new(LabelKind.ClassIndex, width, classes, null, classCount);

    public static LabelStore ForTargets(float[] targets, int width) => new(LabelKind.Regression, width, null, targets, null);

    /// <summary>
    /// Validates a label tensor against <paramref name="count"/> examples and the options, and
    /// converts it to the stored form. <paramref name="where"/> names the file in messages.
    /// </summary>
    public static LabelStore FromTensor(DataTensor labels, int count, DataOptions options, string where)
    {
        var shape = labels.ShapeArray;
        if (shape.Length is 0 or > 2)
            throw new DataException($"{where}: labels must have shape [N] or [N, k], found [{string.Join(", ", shape)}].");
        if (shape[0] != count)
            throw new DataException($"{where}: {shape[0]} labels for {count} examples; the counts must match.");
        int width = shape.Length == 2 ? checked((int)shape[1]) : 1;
        var kind = options.LabelKind ?? (labels.ElementType == DataElementType.Float32 ? LabelKind.Regression : LabelKind.ClassIndex);
        if (kind == LabelKind.Regression)
            return ForTargets(labels.ToFloatArray(), width);

        // [N, k] class labels: k classes per example (per position of a sequence model's output).
        string Example(int i) => width == 1 ? $"example {i}" : $"example {i / width}, position {i % width}";
        var classes = new long[(long)count * width];
        switch (labels.ElementType)
        {
            case DataElementType.Int64: labels.AsInt64s().CopyTo(classes); break;
            case DataElementType.UInt8:
                var b = labels.AsBytes();
                for (int i = 0; i < classes.Length; i++) classes[i] = b[i];
                break;
            default:
                var f = labels.AsFloats();
                for (int i = 0; i < classes.Length; i++)
                {
                    if (f[i] != MathF.Round(f[i]) || !float.IsFinite(f[i]))
                        throw new DataException($"{where}: label {f[i]} of {Example(i)} is not an integer class index (use LabelKind.Regression for float targets).");
                    classes[i] = (long)f[i];
                }
                break;
        }
        CheckRange(classes, options.ClassCount, i => $"{where}: {Example(i)}");
        return ForClasses(classes, options.ClassCount, width);
    }

    public static void CheckRange(long[] classes, int? classCount, Func<int, string> describe)
    {
        for (int i = 0; i < classes.Length; i++)
        {
            long c = classes[i];
            if (c < 0 || (classCount is int k && c >= k))
                throw new DataException($"{describe(i)}: label {c} is out of range [0, {(classCount is int kk ? kk.ToString() : "∞")}).");
        }
    }
}
