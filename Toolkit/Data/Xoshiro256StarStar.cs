using System.Numerics;

namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// xoshiro256** (Blackman &amp; Vigna), seeded through SplitMix64. Written out here rather than
/// using <see cref="System.Random"/> because its sequence must be identical on every .NET
/// version and its state must be savable for checkpoints. A mutable struct: copy it to
/// snapshot the state.
/// </summary>
internal struct Xoshiro256StarStar
{
    public ulong S0, S1, S2, S3;

    public Xoshiro256StarStar(ulong s0, ulong s1, ulong s2, ulong s3)
    {
        if ((s0 | s1 | s2 | s3) == 0)
            throw new ArgumentException("xoshiro256** state must not be all zero.");
        S0 = s0; S1 = s1; S2 = s2; S3 = s3;
    }

    /// <summary>Expands a 64-bit seed into a full state with SplitMix64 (the authors' recommendation).</summary>
    public static Xoshiro256StarStar FromSeed(ulong seed)
    {
        ulong x = seed;
        ulong a = SplitMix64(ref x), b = SplitMix64(ref x), c = SplitMix64(ref x), d = SplitMix64(ref x);
        // SplitMix64 is a bijection of its counter, so four consecutive outputs cannot all be zero.
        return new Xoshiro256StarStar(a, b, c, d);
    }

    public static ulong SplitMix64(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = BitOperations.RotateLeft(S1 * 5, 7) * 9;
        ulong t = S1 << 17;
        S2 ^= S0;
        S3 ^= S1;
        S1 ^= S2;
        S0 ^= S3;
        S2 ^= t;
        S3 = BitOperations.RotateLeft(S3, 45);
        return result;
    }

    /// <summary>Uniform integer in [0, <paramref name="bound"/>), unbiased (Lemire's multiply-and-reject).</summary>
    public int NextInt(int bound)
    {
        if (bound <= 0) throw new ArgumentOutOfRangeException(nameof(bound));
        ulong n = (ulong)bound;
        UInt128 m = (UInt128)NextUInt64() * n;
        ulong low = (ulong)m;
        if (low < n)
        {
            ulong threshold = (0UL - n) % n;
            while (low < threshold)
            {
                m = (UInt128)NextUInt64() * n;
                low = (ulong)m;
            }
        }
        return (int)(ulong)(m >> 64);
    }

    /// <summary>Fisher-Yates shuffle of <paramref name="values"/> in place.</summary>
    public void Shuffle(Span<int> values)
    {
        for (int i = values.Length - 1; i > 0; i--)
        {
            int j = NextInt(i + 1);
            (values[i], values[j]) = (values[j], values[i]);
        }
    }
}
