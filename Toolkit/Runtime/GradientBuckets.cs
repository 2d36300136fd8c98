using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// Data-parallel gradient reduction in few large calls (as Horovod's tensor fusion and
/// DDP's buckets): the trainable parameters' gradients are packed, in parameter order, into
/// buckets of at most <see cref="BucketBytes"/>, each all-reduced once; the batch's loss and
/// example count follow in one small float64 all-reduce (exact counts, the loss unrounded). Each rank weights its gradient by its example count
/// (a mean loss) before the sum and every rank divides by the total, so the result is the
/// gradient of the loss over the union of the ranks' batches, whatever their sizes.
/// Buffers are allocated once.
/// </summary>
internal sealed class GradientBuckets
{
    /// <summary>The most bytes one all-reduce carries (16 MiB).</summary>
    public const int BucketBytes = 16 << 20;

    private readonly ICollectives _collectives;
    private readonly Parameter[] _parameters;
    private readonly float[][] _buckets;
    private readonly (int Bucket, int Offset)[] _place;
    private readonly bool _sumReduction;
    private readonly double[] _totals = new double[2];

    public GradientBuckets(IReadOnlyList<Parameter> parameters, ICollectives collectives, bool sumReduction)
    {
        _collectives = collectives;
        _sumReduction = sumReduction;
        _parameters = [.. parameters.Where(p => p.Trainable)];
        _place = new (int, int)[_parameters.Length];
        var sizes = new List<int> { 0 };
        const int limit = BucketBytes / sizeof(float);
        for (int i = 0; i < _parameters.Length; i++)
        {
            int n = _parameters[i].Grad.Length;
            if (sizes[^1] > 0 && sizes[^1] + n > limit) sizes.Add(0);
            _place[i] = (sizes.Count - 1, sizes[^1]);
            sizes[^1] += n;
        }
        _buckets = [.. sizes.Select(n => new float[n])];
    }

    public int BucketCount => _buckets.Length;

    /// <summary>Sums the ranks' gradients, losses and counts; returns the loss and count over all ranks' examples.</summary>
    public (double Loss, int Examples) Reduce(double loss, int examples)
    {
        float weight = _sumReduction ? 1 : examples;
        for (int i = 0; i < _parameters.Length; i++)
        {
            var (b, o) = _place[i];
            var g = _parameters[i].Grad;
            var dst = _buckets[b].AsSpan(o, g.Length);
            for (int k = 0; k < g.Length; k++) dst[k] = g[k] * weight;
        }
        foreach (var bucket in _buckets) _collectives.AllReduceSum(bucket);
        _totals[0] = loss * weight;
        _totals[1] = examples;
        _collectives.AllReduceSum(_totals);
        int total = (int)Math.Round(_totals[1]);
        float scale = _sumReduction ? 1 : 1f / total;
        for (int i = 0; i < _parameters.Length; i++)
        {
            var (b, o) = _place[i];
            var g = _parameters[i].Grad;
            var src = _buckets[b].AsSpan(o, g.Length);
            for (int k = 0; k < g.Length; k++) g[k] = src[k] * scale;
        }
        return (_sumReduction ? _totals[0] : _totals[0] / total, total);
    }
}
