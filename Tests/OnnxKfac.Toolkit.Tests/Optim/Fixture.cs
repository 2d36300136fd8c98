using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Tests.Optim;

/// <summary>
/// The small model of tools/bench/optim_reference.py: three parameters whose initial values
/// and per-step gradients are exact binary fractions from closed formulas, so C# and PyTorch
/// start every step from bit-identical inputs.
/// </summary>
internal static class Fixture
{
    public static readonly (string Name, long[] Shape)[] Specs =
        [("fc.weight", [4, 5]), ("fc.bias", [4]), ("emb.weight", [2, 3])];

    public static readonly float[] Scales = [1f, 2f, 0.5f, 4f, 0.25f, 1f];

    public static Parameter[] MakeParameters()
    {
        var ps = new Parameter[Specs.Length];
        for (int j = 0; j < ps.Length; j++)
        {
            var p = Parameter.Create(Specs[j].Name, Specs[j].Shape);
            for (int i = 0; i < p.Value.Length; i++) p.Value[i] = ((5 * i + 3 + 2 * j) % 11 - 5) / 4f;
            ps[j] = p;
        }
        return ps;
    }

    /// <summary>The gradients of 1-based step <paramref name="t"/> (steps past 6 reuse the scales cyclically).</summary>
    public static void SetGrads(IReadOnlyList<Parameter> ps, int t)
    {
        for (int j = 0; j < ps.Count; j++)
            for (int i = 0; i < ps[j].Grad.Length; i++)
                ps[j].Grad[i] = ((7 * i + 13 * t + 5 * j) % 17 - 8) / 8f * Scales[(t - 1) % Scales.Length];
    }

    public static float[] Flatten(IReadOnlyList<Parameter> ps) => [.. ps.SelectMany(p => p.Value)];

    /// <summary>Asserts agreement to 1e-6 relative (plus 1e-7 absolute, about one float ulp at 1).</summary>
    public static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double tol = 1e-6 * Math.Abs(expected[i]) + 1e-7;
            if (!(Math.Abs(expected[i] - actual[i]) <= tol))
                Assert.Fail($"{what}, element {i}: expected {expected[i]:R}, got {actual[i]:R} (|diff| {Math.Abs(expected[i] - actual[i]):E2} > {tol:E2})");
        }
    }
}
