namespace OnnxKfac.Toolkit.Data;

/// <summary>Labels of a whole data set, always held in memory (they are small next to the features).</summary>
internal sealed class LabelStore
{
    private LabelStore(LabelKind kind, int width, long[]? classes, float[]? targets, int? classCount)
    {
        Kind = kind; Width = width; Classes = classes; Targets = targets; ClassCount = classCount;
    }

    public LabelKind Kind { get; }
    /// <summary>Label values per example: 1 for class indices, the number of targets for regression.</summary>
    public int Width { get; }
    public long[]? Classes { get; }
    public float[]? Targets { get; }
    public int? ClassCount { get; }

    public static LabelStore ForClasses(long[] classes, int? classCount) => new(LabelKind.ClassIndex, 1, classes, null, classCount);

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

        if (width != 1)
            throw new DataException($"{where}: class labels must be one per example, found shape [{string.Join(", ", shape)}].");
        var classes = new long[count];
        switch (labels.ElementType)
        {
            case DataElementType.Int64: labels.AsInt64s().CopyTo(classes); break;
            case DataElementType.UInt8:
                var b = labels.AsBytes();
                for (int i = 0; i < count; i++) classes[i] = b[i];
                break;
            default:
                var f = labels.AsFloats();
                for (int i = 0; i < count; i++)
                {
                    if (f[i] != MathF.Round(f[i]) || !float.IsFinite(f[i]))
                        throw new DataException($"{where}: label {f[i]} of example {i} is not an integer class index (use LabelKind.Regression for float targets).");
                    classes[i] = (long)f[i];
                }
                break;
        }
        CheckRange(classes, options.ClassCount, i => $"{where}: example {i}");
        return ForClasses(classes, options.ClassCount);
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
