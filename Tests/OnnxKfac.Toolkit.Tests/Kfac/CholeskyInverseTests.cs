using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Kfac.Blocks;
using OnnxKfac.Toolkit.Numerics;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using OnnxKfac.Toolkit.Tests.Runtime;

namespace OnnxKfac.Toolkit.Tests.Kfac;

/// <summary>
/// K-FAC's inverses by Cholesky through OpenBLAS against ONNX Runtime's LU route. These tests need
/// OpenBLAS (tools/test.sh installs libopenblas0-pthread) and fail without it: they never skip.
/// </summary>
public sealed class CholeskyInverseTests
{
    private static TrainingSession Session(KfacOptions options) =>
        TrainingSession.Create(RuntimeFixture.Fashion(), options.Configure(new TrainingGraphOptions(new LossOptions(LossKind.CrossEntropy))),
            new TrainingSessionOptions { Threads = 1 });

    /// <summary>Trains the README's MLP (784-128-64-10: factors up to 785 × 785) for <paramref name="steps"/> updates.</summary>
    private static (List<double> Losses, float[][] Weights, Dictionary<string, (double[] A, double[] G, float[] AInv, float[] GInv)> Factors, KfacInverseMethod Method)
        Train(KfacInverseMethod method, int steps, Dataset data, double damping = 0.01)
    {
        var options = new KfacOptions { InverseMethod = method, InverseEvery = 2, Damping = damping };
        using var s = Session(options);
        using var k = new KfacOptimizer(s, options);
        var rec = new LossRecorder();
        new Trainer(s, k, new TrainerOptions { Epochs = 10, MaxSteps = steps, BatchSize = 64, Seed = 4 }, rec).Fit(data);
        var factors = s.Manifest.Layers.ToDictionary(l => l.Name, l =>
        {
            var (a, g, ai, gi) = k.FactorsOf(l.Name);
            return ((double[])a.Clone(), (double[])g.Clone(), (float[])ai.Clone(), (float[])gi.Clone());
        });
        return (rec.Losses, [.. s.Parameters.Select(p => (float[])p.Value.Clone())], factors, k.InverseMethod);
    }

    [Fact]
    public void AutoChoosesCholeskyWhenOpenBlasLoads()
    {
        var options = new KfacOptions();
        using var s = Session(options);
        using var k = new KfacOptimizer(s, options);
        Assert.Equal(KfacInverseMethod.Cholesky, k.InverseMethod);
        Assert.StartsWith("cholesky (OpenBLAS ", k.InverseRoute);
        Assert.Contains("1 thread)", k.InverseRoute);
        var ort = options with { InverseMethod = KfacInverseMethod.OnnxRuntime };
        using var o = new KfacOptimizer(s, ort);
        Assert.Equal(KfacInverseMethod.OnnxRuntime, o.InverseMethod);
    }

    [Theory]
    [InlineData(KfacInversePrecision.Auto, 6)]      // λ 0.01 keeps the MLP's six damped factors provably well conditioned
    [InlineData(KfacInversePrecision.Float64, 0)]
    public void EachRefreshCountsItsFloat32Inverses(KfacInversePrecision precision, int single)
    {
        using var data = RuntimeFixture.Images(128, 43);
        var options = new KfacOptions { InverseEvery = 2, Damping = 0.01, InversePrecision = precision };
        using var s = Session(options);
        using var k = new KfacOptimizer(s, options);
        var refreshes = new RefreshRecorder(k);
        new Trainer(s, k, new TrainerOptions { Epochs = 1, MaxSteps = 4, BatchSize = 32, Seed = 4 }, refreshes).Fit(data);
        Assert.Equal(6, k.FactorGroups);
        Assert.Equal([single, single], refreshes.Single);   // updates 1 and 3
        Assert.Equal(single, k.LastRefreshSinglePrecision);
    }

    /// <summary>After each update: the float32 count of the refresh it made, if it made one.</summary>
    private sealed class RefreshRecorder(KfacOptimizer k) : ITrainingObserver
    {
        public List<int> Single { get; } = [];

        public void OnStep(in StepReport step)
        {
            if (k.LastStep.RefreshedInverses) Single.Add(k.LastStep.SinglePrecisionInverses);
        }
    }

    [Fact]
    public void CholeskyAndOnnxRuntimeGiveTheSameInversesOfTheSameFactors()
    {
        using var data = RuntimeFixture.Images(256, 41);
        var chol = Train(KfacInverseMethod.Cholesky, 1, data);
        var lu = Train(KfacInverseMethod.OnnxRuntime, 1, data);
        Assert.Equal(KfacInverseMethod.Cholesky, chol.Method);
        Assert.Equal(KfacInverseMethod.OnnxRuntime, lu.Method);
        Assert.Equal(3, chol.Factors.Count);
        foreach (var (layer, c) in chol.Factors)
        {
            var l = lu.Factors[layer];
            Assert.Equal(l.A, c.A);   // the same batch: the same running factors
            Assert.Equal(l.G, c.G);
            foreach (var (which, x, y) in new[] { ("A", c.AInv, l.AInv), ("G", c.GInv, l.GInv) })
            {
                double scale = y.Max(Math.Abs), worst = 0;
                for (int i = 0; i < x.Length; i++) worst = Math.Max(worst, Math.Abs(x[i] - y[i]));
                Assert.True(worst <= 1e-4 * scale, $"{layer} {which}⁻¹ ({x.Length} values): Cholesky and LU differ by {worst:G3}, {worst / scale:G3} of the largest entry");
            }
        }
    }

    [Fact]
    public void TrainingWithCholeskyFollowsTrainingWithOnnxRuntime()
    {
        using var data = RuntimeFixture.Images(256, 42);
        var chol = Train(KfacInverseMethod.Cholesky, 6, data);
        var lu = Train(KfacInverseMethod.OnnxRuntime, 6, data);
        Assert.Equal(6, chol.Losses.Count);
        for (int i = 0; i < 6; i++)
            Assert.True(Math.Abs(chol.Losses[i] - lu.Losses[i]) <= 1e-4 * Math.Abs(lu.Losses[i]), $"update {i + 1}: loss {chol.Losses[i]} (Cholesky) vs {lu.Losses[i]} (LU)");
        for (int p = 0; p < lu.Weights.Length; p++)
        {
            double scale = lu.Weights[p].Max(Math.Abs), worst = 0;
            for (int i = 0; i < lu.Weights[p].Length; i++) worst = Math.Max(worst, Math.Abs(chol.Weights[p][i] - lu.Weights[p][i]));
            Assert.True(worst <= 1e-3 * scale, $"parameter {p}: weights differ by {worst:G3} after 6 updates (largest {scale:G3})");
        }
    }

    /// <summary>F = B Bᵀ / d per group (symmetric positive semi-definite, as the running factors are), trace about d/12.</summary>
    private static double[] Gram(int groups, int d, int seed)
    {
        var rng = new Random(seed);
        var factor = new double[groups * d * d];
        for (int g = 0; g < groups; g++)
        {
            var b = Enumerable.Range(0, d * d).Select(_ => rng.NextDouble() - 0.5).ToArray();
            for (int i = 0; i < d; i++)
                for (int j = 0; j < d; j++)
                    for (int k = 0; k < d; k++) factor[g * d * d + i * d + j] += b[i * d + k] * b[j * d + k] / d;
        }
        return factor;
    }

    /// <summary>The largest |((F + sI) X − I)[i, j]| of group <paramref name="g"/>, in float64.</summary>
    private static double Residual(double[] factor, DampedFactor f, int d, int g)
    {
        double worst = 0;
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
            {
                double sum = 0;
                for (int k = 0; k < d; k++) sum += (factor[g * d * d + i * d + k] + (i == k ? f.Shift[g] : 0)) * f.Inverse[g * d * d + k * d + j];
                worst = Math.Max(worst, Math.Abs(sum - (i == j ? 1 : 0)));
            }
        return worst;
    }

    /// <summary>The damped inverse of F = B Bᵀ / d (two groups) by each precision: ((F + sI) X) = I, and X symmetric (both triangles written).</summary>
    [Theory]
    [InlineData(KfacInversePrecision.Float32, 2)]
    [InlineData(KfacInversePrecision.Float64, 0)]
    [InlineData(KfacInversePrecision.Auto, 2)]   // tr F ≈ d/12 ≈ 3: (tr F + s)/s ≈ 63 and 2.5, both provably well conditioned
    public void EachPrecisionInvertsAWellConditionedFactor(KfacInversePrecision precision, int single)
    {
        var lapack = OpenBlasLibrary.Load();
        const int d = 37, groups = 2;
        var factor = Gram(groups, d, 3);
        var f = new DampedFactor(factor, groups, d, new float[groups * d * d]);
        f.Shift[0] = 0.05;
        f.Shift[1] = 2;
        f.InvertCholesky(lapack, new double[f.ScratchLength], precision);
        Assert.Equal(0, f.NotPositiveDefinite);
        Assert.Equal(single, f.SinglePrecisionGroups);
        for (int g = 0; g < groups; g++)
        {
            double r = Residual(factor, f, d, g);
            Assert.True(r < 1e-4, $"{precision}, group {g}: residual {r:G3}");
            for (int i = 0; i < d; i++)
                for (int j = 0; j < i; j++) Assert.Equal(f.Inverse[g * d * d + i * d + j], f.Inverse[g * d * d + j * d + i]);
        }
    }

    [Fact]
    public void AutoInvertsAFactorWhoseConditionIsNotBoundedInFloat64()
    {
        var lapack = OpenBlasLibrary.Load();
        const int d = 40;
        // F = Q diag(10^(−k/8)) Qᵀ, k = 0..39, and s = 10⁻⁶: κ(F + sI) ≈ 7·10⁴, past Auto's float32 bound.
        var rng = new Random(8);
        var q = new double[d * d];
        for (int i = 0; i < d * d; i++) q[i] = rng.NextDouble() - 0.5;
        for (int c = 0; c < d; c++)   // Gram–Schmidt on the columns: Q orthogonal
        {
            for (int p = 0; p < c; p++)
            {
                double dot = 0;
                for (int r = 0; r < d; r++) dot += q[r * d + c] * q[r * d + p];
                for (int r = 0; r < d; r++) q[r * d + c] -= dot * q[r * d + p];
            }
            double norm = Math.Sqrt(Enumerable.Range(0, d).Sum(r => q[r * d + c] * q[r * d + c]));
            for (int r = 0; r < d; r++) q[r * d + c] /= norm;
        }
        const double shift = 1e-6;
        double[] eigen = [.. Enumerable.Range(0, d).Select(k => Math.Pow(10, -k / 8.0))];
        double[] factor = new double[d * d], exact = new double[d * d];
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                for (int k = 0; k < d; k++)
                {
                    factor[i * d + j] += q[i * d + k] * eigen[k] * q[j * d + k];
                    exact[i * d + j] += q[i * d + k] / (eigen[k] + shift) * q[j * d + k];
                }
        double scale = exact.Max(Math.Abs);
        double Error(KfacInversePrecision precision, out DampedFactor f)
        {
            f = new DampedFactor(factor, 1, d, new float[d * d]);
            f.Shift[0] = shift;
            f.InvertCholesky(lapack, new double[f.ScratchLength], precision);
            var x = f.Inverse;
            return f.NotPositiveDefinite == 1 ? double.PositiveInfinity : Enumerable.Range(0, d * d).Max(i => Math.Abs(x[i] - exact[i])) / scale;
        }
        Assert.False(DampedFactor.WellConditioned(factor, d, shift));
        double auto = Error(KfacInversePrecision.Auto, out var chosen), single = Error(KfacInversePrecision.Float32, out _);
        Assert.Equal(0, chosen.SinglePrecisionGroups);
        Assert.Equal(0, chosen.NotPositiveDefinite);
        Assert.True(auto < 1e-6, $"Auto (float64): {auto:G3} of the largest entry");
        Assert.True(single > 1e2 * auto, $"float32 {single:G3} against float64 {auto:G3}: the bound would not be needed");
    }

    [Theory]
    [InlineData(1.0, 100.0, true)]       // (100 + 1) / 1
    [InlineData(1e-3, 100.0, false)]     // 10⁵
    [InlineData(0.0, 1.0, false)]        // no damping: unbounded
    [InlineData(1.0, double.NaN, false)]
    public void TheFloat32BoundIsTheTracePlusTheDampingOverTheDamping(double shift, double trace, bool single)
    {
        double[] f = [trace / 2, 0.3, 0.3, trace / 2];
        Assert.Equal(single, DampedFactor.WellConditioned(f, 2, shift));
    }

    [Fact]
    public void AnIndefiniteFactorFailsOnceUnderAutoAndGetsNonFiniteInverses()
    {
        var lapack = OpenBlasLibrary.Load();
        double[] factor = [1, 2, 2, 1];   // eigenvalues −1, 3: with s = 0.5, (tr + s)/s = 5 sends it to float32 first
        var f = new DampedFactor(factor, 1, 2, new float[4]);
        f.Shift[0] = 0.5;
        f.InvertCholesky(lapack, new double[4]);
        Assert.Equal(1, f.NotPositiveDefinite);
        Assert.Equal(0, f.SinglePrecisionGroups);
        Assert.All(f.Inverse, x => Assert.True(float.IsNaN(x)));
    }

    [Fact]
    public void AFactorThatIsNotPositiveDefiniteGetsNonFiniteInverses()
    {
        var lapack = OpenBlasLibrary.Load();
        double[] factor = [1, 2, 2, 1, /* group 2 */ 2, 1, 1, 2];   // eigenvalues −1, 3 and 1, 3
        var f = new DampedFactor(factor, 2, 2, new float[8]);
        f.InvertCholesky(lapack, new double[4]);
        Assert.Equal(1, f.NotPositiveDefinite);
        Assert.All(f.Inverse.Take(4), x => Assert.True(float.IsNaN(x)));
        double[] exact = [2.0 / 3, -1.0 / 3, -1.0 / 3, 2.0 / 3];
        for (int i = 0; i < 4; i++) Assert.Equal(exact[i], f.Inverse[4 + i], 6);
    }

    /// <summary>
    /// The optimizer's side of a factor that is not positive definite: the refresh is retried with
    /// tenfold damping (up to 10³), and where that fails too the block's V falls back to the gradient.
    /// </summary>
    [Theory]
    [InlineData(5.0, false)]     // A = −5γ I: positive definite after one tenfold boost
    [InlineData(1e9, true)]      // A = −10⁹ I: never, the block falls back to ∇ + η θ
    public void AFactorThatIsNotPositiveDefiniteIsRetriedWithMoreDampingThenFallsBackToTheGradient(double negative, bool fallsBack)
    {
        var options = new KfacOptions { InverseMethod = KfacInverseMethod.Cholesky, InverseEvery = 1, Fallback = FallbackBlock.Identity, Damping = 0.01 };
        var (session, batch, _) = ExactAnswerTests.Open(options);
        using var s = session;
        using var kfac = new KfacOptimizer(session, options);
        session.Run(batch);
        kfac.Step(new StepContext(session.Parameters, session) { UpdateCount = 1 });
        Assert.Equal(0, kfac.LastStep.NotPositiveDefinite);
        var (a, _, _, _) = kfac.FactorsOf("fc");
        session.Run(batch);
        // The next refresh folds this batch in with ε = 1/2; make the result −negative·γ I (π = 1: tr A < 0).
        double gamma = Math.Sqrt(options.Damping + options.WeightDecay);
        var batchA = session.GetOutput(session.Manifest.Layers[0].Outputs.FactorA!).ToArray();
        const int dA = 4;
        for (int i = 0; i < a.Length; i++) a[i] = -batchA[i] + (i % (dA + 1) == 0 ? -2 * negative * (negative > 1e3 ? 1 : gamma) : 0);
        var work = session.Parameters.Select(p => p.Grad.Zip(p.Value, (g, v) => g + (float)options.WeightDecay * v).ToArray()).ToArray();
        kfac.Step(new StepContext(session.Parameters, session) { UpdateCount = 2 });
        Assert.True(kfac.LastStep.RefreshedInverses);
        Assert.Equal(1, kfac.LastStep.NotPositiveDefinite);
        for (int p = 0; p < session.Parameters.Count; p++)
        {
            var v = kfac.PreconditionedOf(session.Parameters[p].Name);
            Assert.All(v, x => Assert.True(float.IsFinite(x)));
            if (fallsBack) Assert.Equal(work[p], v);
            else Assert.NotEqual(work[p], v);
        }
    }

    [Fact]
    public void AMissingOpenBlasIsOneClearErrorNamingTheLibraryAndItsPackage()
    {
        Assert.Null(OpenBlasLibrary.TryLoad(["libno-such-openblas.so.0"], out string? error));
        Assert.Contains("libopenblas.so.0", error);
        Assert.Contains("apt-get install libopenblas0-pthread", error);
        Assert.Contains("tried libno-such-openblas.so.0", error);
        // A library without LAPACK's symbols is refused by name too (libc has no dpotrf_).
        Assert.Null(OpenBlasLibrary.TryLoad(["libc.so.6"], out error));
        Assert.Contains("lacks dpotrf_", error);
    }
}
