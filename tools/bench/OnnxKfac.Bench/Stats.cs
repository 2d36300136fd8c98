using System.Diagnostics;

namespace OnnxKfac.Bench;

/// <summary>Per-step timings collected into a preallocated array (recording allocates nothing).</summary>
internal sealed class Samples(int capacity)
{
    private readonly long[] _ticks = new long[capacity];
    private int _count;

    public void Add(long ticks) => _ticks[_count++] = ticks;

    public void Clear() => _count = 0;

    public int Count => _count;

    /// <summary>The q-quantile in milliseconds (nearest rank on the sorted samples).</summary>
    public double Quantile(double q)
    {
        if (_count == 0) return double.NaN;
        var sorted = _ticks.AsSpan(0, _count).ToArray();
        Array.Sort(sorted);
        int rank = (int)Math.Ceiling(q * _count) - 1;
        rank = Math.Clamp(rank, 0, _count - 1);
        return sorted[rank] * 1000.0 / Stopwatch.Frequency;
    }

    public double Median => Quantile(0.5);

    public double P90 => Quantile(0.9);

    public double Min => Quantile(0);
}
