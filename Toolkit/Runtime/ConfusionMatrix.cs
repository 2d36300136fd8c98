namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// A classifier's confusion counts over a data set: <c>Count(t, p)</c> examples of true class
/// <c>t</c> predicted as <c>p</c> (the arg-max of the output). Kept as plain sums, so that the
/// ranks of a data-parallel evaluation add theirs up (<see cref="ICollectives.AllReduceSum(Span{double})"/>).
/// </summary>
public sealed class ConfusionMatrix : IEquatable<ConfusionMatrix>
{
    private readonly long[] _counts;

    /// <param name="classes">The number of classes C.</param>
    /// <param name="counts">C × C counts, row = true class, column = predicted class.</param>
    public ConfusionMatrix(int classes, long[] counts)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(classes, 1);
        ArgumentNullException.ThrowIfNull(counts);
        if (counts.Length != (long)classes * classes) throw new ArgumentException($"{counts.Length} counts for {classes} classes; expected {classes}²", nameof(counts));
        Classes = classes;
        _counts = counts;
    }

    /// <summary>The number of classes.</summary>
    public int Classes { get; }

    /// <summary>Examples of class <paramref name="actual"/> predicted as <paramref name="predicted"/>.</summary>
    public long Count(int actual, int predicted) => _counts[actual * Classes + predicted];

    /// <summary>The rows (true classes) of counts by predicted class.</summary>
    public long[][] Rows() => Enumerable.Range(0, Classes).Select(t => _counts.AsSpan(t * Classes, Classes).ToArray()).ToArray();

    /// <summary>
    /// F1 of class <paramref name="c"/>, 2·TP / (2·TP + FP + FN); null for a class neither
    /// present nor predicted.
    /// </summary>
    public double? F1(int c)
    {
        long tp = Count(c, c), actual = 0, predicted = 0;
        for (int k = 0; k < Classes; k++)
        {
            actual += Count(c, k);
            predicted += Count(k, c);
        }
        long denominator = actual + predicted;   // 2·TP + FP + FN
        return denominator == 0 ? null : 2.0 * tp / denominator;
    }

    /// <summary>
    /// The unweighted mean of the classes' F1 over the classes present in the labels or the
    /// predictions (scikit-learn's <c>f1_score(average="macro")</c>); null when there are none.
    /// </summary>
    public double? MacroF1
    {
        get
        {
            double sum = 0;
            int n = 0;
            for (int c = 0; c < Classes; c++)
                if (F1(c) is { } f) { sum += f; n++; }
            return n == 0 ? null : sum / n;
        }
    }

    /// <summary>Equal when the class counts and every count are equal (so <see cref="Metrics"/> compare by value).</summary>
    public bool Equals(ConfusionMatrix? other) => other is not null && other.Classes == Classes && other._counts.AsSpan().SequenceEqual(_counts);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as ConfusionMatrix);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(Classes);
        foreach (long c in _counts) h.Add(c);
        return h.ToHashCode();
    }
}
