using OnnxKfac.Toolkit.Kfac;

namespace OnnxKfac.Toolkit.Tests.Kfac;

/// <summary>
/// K-FAC's element-wise kernels against the scalar expressions they replace, bit for bit, over
/// lengths that leave a tail after the vectors (and one shorter than a vector).
/// </summary>
public sealed class FactorMathTests
{
    public static TheoryData<int> Lengths => [1, 7, 64, 1003];

    private static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        return [.. Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2))];
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void FoldOneIsTheFoldOfASumHoldingOneBatch(int n)
    {
        var x = Random(n, 1);
        double[] ema = [.. Random(n, 2).Select(v => (double)v)];
        var viaSum = (double[])ema.Clone();
        var sum = new double[n];
        Assert.True(FactorMath.Accumulate(sum, x));
        FactorMath.Fold(viaSum, sum, 0.95, (1 - 0.95) / 1);
        FactorMath.FoldOne(ema, x, 0.95);
        Assert.Equal(viaSum, ema);
        Assert.All(sum, s => Assert.Equal(0, s));   // Fold clears the sum
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void AddScaledAndCombineAreTheScalarExpressions(int n)
    {
        float[] x = Random(n, 3), z = Random(n, 4), y0 = Random(n, 5);
        var y = new float[n];
        FactorMath.AddScaled(y, x, 1e-5f, z);
        for (int i = 0; i < n; i++) Assert.Equal(x[i] + 1e-5f * z[i], y[i]);
        FactorMath.AddScaled(y, x, 0, z);
        Assert.Equal(x, y);

        var c = (float[])y0.Clone();
        FactorMath.Combine(c, 0.9f, 0.3f, x);
        for (int i = 0; i < n; i++) Assert.Equal(0.9f * y0[i] + 0.3f * x[i], c[i]);
        c = [.. y0.Select(_ => float.NaN)];   // a = 0 ignores what y held
        FactorMath.Combine(c, 0, -0.3f, x);
        for (int i = 0; i < n; i++) Assert.Equal(-0.3f * x[i], c[i]);
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void GramIsTheSixDotProducts(int n)
    {
        float[] x = Random(n, 8), y = Random(n, 9), z = Random(n, 10);
        var gram = new double[6];
        FactorMath.Gram(x, y, z, gram);
        double[] expected = [FactorMath.Dot(x, x), FactorMath.Dot(x, y), FactorMath.Dot(x, z), FactorMath.Dot(y, y), FactorMath.Dot(y, z), FactorMath.Dot(z, z)];
        double[] scalar = [.. new[] { (x, x), (x, y), (x, z), (y, y), (y, z), (z, z) }.Select(p => p.Item1.Zip(p.Item2, (a, b) => (double)a * b).Sum())];
        for (int k = 0; k < 6; k++)
        {
            // The same products in another order of summation: equal to rounding.
            Assert.Equal(expected[k], gram[k], 1e-12 * Math.Max(1, Math.Abs(expected[k])));
            Assert.Equal(scalar[k], gram[k], 1e-12 * Math.Max(1, Math.Abs(scalar[k])));
        }
        if (n < 8) Assert.Equal(scalar, gram);   // all tail: the scalar loop itself
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void StepMovesTheParametersAndMeasuresTheirNorms(int n)
    {
        float[] p0 = Random(n, 6), d = Random(n, 7);
        var p = (float[])p0.Clone();
        var (before, after) = FactorMath.Step(p, -0.01f, d, norms: true);
        double b = 0, a = 0;
        for (int i = 0; i < n; i++)
        {
            float moved = p0[i] + -0.01f * d[i];
            Assert.Equal(moved, p[i]);
            b += (double)p0[i] * p0[i];
            a += (double)moved * moved;
        }
        // float64 sums of float32 squares in another order: equal to a few units of float64 rounding.
        Assert.True(Math.Abs(before - b) <= 1e-13 * b, $"Σp² before {before}, expected {b}");
        Assert.True(Math.Abs(after - a) <= 1e-13 * a, $"Σp² after {after}, expected {a}");
        var q = (float[])p0.Clone();
        Assert.Equal((0.0, 0.0), FactorMath.Step(q, -0.01f, d, norms: false));
        Assert.Equal(p, q);
    }
}
