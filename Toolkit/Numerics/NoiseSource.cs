using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Numerics;

/// <summary>
/// The seeded generator behind the sampled-Fisher noise input: uniform in the open
/// interval (0, 1), or standard normal by Box–Muller. Its state goes into checkpoints so a
/// resumed run draws the same targets.
/// </summary>
internal sealed class NoiseSource
{
    private Xoshiro256StarStar _rng;

    public NoiseSource(ulong seed) => _rng = Xoshiro256StarStar.FromSeed(seed);

    public ulong[] State
    {
        get => [_rng.S0, _rng.S1, _rng.S2, _rng.S3];
        set
        {
            if (value is not { Length: 4 }) throw new ArgumentException("noise generator state must have 4 words");
            _rng = new Xoshiro256StarStar(value[0], value[1], value[2], value[3]);
        }
    }

    /// <summary>A double uniform in (0, 1): 53 random bits, never 0 or 1.</summary>
    public double NextOpenUnit() => ((_rng.NextUInt64() >> 11) + 0.5) * (1.0 / (1UL << 53));

    private float[] _global = [];

    /// <summary>
    /// Data-parallel: rank <paramref name="rank"/>'s share of the noise one process with
    /// <paramref name="ranks"/> times this batch would draw (the whole global batch is drawn,
    /// this rank's slice kept), so K ranks sample the targets one process samples.
    /// </summary>
    public void FillShard(Span<float> target, bool normal, int rank, int ranks)
    {
        if (ranks == 1)
        {
            Fill(target, normal);
            return;
        }
        int n = checked(target.Length * ranks);
        if (_global.Length != n) _global = new float[n];
        Fill(_global, normal);
        _global.AsSpan(rank * target.Length, target.Length).CopyTo(target);
    }

    public void Fill(Span<float> target, bool normal)
    {
        if (!normal)
        {
            for (int i = 0; i < target.Length; i++)
            {
                // Clamp away from the float32 ends so log(-log u) stays finite.
                target[i] = Math.Clamp((float)NextOpenUnit(), 1e-7f, 1 - 6e-8f);
            }
            return;
        }
        for (int i = 0; i < target.Length; i += 2)
        {
            double r = Math.Sqrt(-2 * Math.Log(NextOpenUnit()));
            double theta = 2 * Math.PI * NextOpenUnit();
            target[i] = (float)(r * Math.Cos(theta));
            if (i + 1 < target.Length) target[i + 1] = (float)(r * Math.Sin(theta));
        }
    }
}
