using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using OnnxKfac.Toolkit.Tests.Runtime;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Toolkit.Tests.Kfac;

/// <summary>K-FAC against exact answers on problems small enough to solve densely.</summary>
public sealed class ExactAnswerTests
{
    private const int In = 3, Out = 2, N = 6;

    /// <summary>y = x Wᵀ + b (Gemm, transB = 1): one linear layer.</summary>
    internal static ModelProto Linear()
    {
        var g = new GraphProto { Name = "linear" };
        g.Input.Add(ValueInfos.Tensor("x", (int)DataType.Float, [-1, In]));
        g.Output.Add(ValueInfos.Tensor("y", (int)DataType.Float, [-1, Out]));
        var rng = new Random(5);
        g.Initializer.Add(TensorData.FromFloats("fc.weight", [Out, In], Enumerable.Range(0, Out * In).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray()));
        g.Initializer.Add(TensorData.FromFloats("fc.bias", [Out], [0.1f, -0.2f]));
        var node = new NodeProto { OpType = "Gemm", Name = "fc" };
        node.Input.Add(["x", "fc.weight", "fc.bias"]);
        node.Output.Add("y");
        node.Attribute.Add(Attributes.Int("transB", 1));
        g.Node.Add(node);
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Version = 17 });
        return m;
    }

    internal static (TrainingSession Session, BatchBinding Batch, float[] X) Open(KfacOptions options, LossKind loss = LossKind.Mse)
    {
        var session = TrainingSession.Create(Linear(), options.Configure(new TrainingGraphOptions(new LossOptions(loss))), new TrainingSessionOptions { Threads = 1 });
        var batch = session.Bind(N);
        var rng = new Random(9);
        var x = Enumerable.Range(0, N * In).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        x.CopyTo(batch.Input<float>("x"));
        var t = batch.Input<float>(session.TargetInput.Name);
        for (int i = 0; i < t.Length; i++) t[i] = (float)(rng.NextDouble() - 0.5);
        return (session, batch, x);
    }

    [Fact]
    public void ForOneLinearLayerWithSquaredErrorTheKroneckerProductIsTheExactFisher()
    {
        // The loss is torch's MSELoss, a mean over the N·Out elements: L = (1/(N·Out)) Σ (y - t)²,
        // whose Fisher (= Gauss-Newton, exact for a linear model) is (1/N) Σ_n x̄_n x̄_nᵀ ⊗ (2/Out)·I.
        // K-FAC's A is (1/N) Σ x̄ x̄ᵀ exactly, and its G a Monte Carlo estimate (targets sampled
        // from the model's Gaussian) of (2/Out)·I: average it over many draws.
        var options = new KfacOptions { InverseEvery = 1, Fallback = FallbackBlock.Identity, FactorDecay = 0 };
        var (session, batch, x) = Open(options);
        using var _ = session;
        var layer = Assert.Single(session.Manifest.Layers);
        var gSum = new double[Out * Out];
        const int draws = 4000;
        float[] a = [];
        for (int d = 0; d < draws; d++)
        {
            session.Run(batch);
            a = session.GetOutput(layer.Outputs.FactorA!).ToArray();
            var g = session.GetOutput(layer.Outputs.FactorG!);
            for (int i = 0; i < gSum.Length; i++) gSum[i] += g[i] / draws;
        }
        for (int i = 0; i < Out; i++)
            for (int j = 0; j < Out; j++)
            {
                double exact = i == j ? 2.0 / Out : 0;
                Assert.True(Math.Abs(gSum[i * Out + j] - exact) < 0.04, $"E[G][{i},{j}] = {gSum[i * Out + j]:F4}, exact {exact}");
            }
        const int dA = In + 1;
        for (int i = 0; i < dA; i++)
            for (int j = 0; j < dA; j++)
            {
                double exact = 0;
                for (int n = 0; n < N; n++) exact += (i < In ? x[n * In + i] : 1) * (j < In ? x[n * In + j] : 1) / N;
                Assert.Equal(exact, a[i * dA + j], 5);
            }
    }

    [Theory]
    [InlineData(1e-3, 0.0)]
    [InlineData(0.1, 1e-3)]
    public void PreconditionedGradientIsADenseSolveWithTheDampedKroneckerProduct(double damping, double weightDecay)
    {
        var options = new KfacOptions { Damping = damping, WeightDecay = weightDecay, InverseEvery = 1, Fallback = FallbackBlock.Identity };
        var (session, batch, _) = Open(options, LossKind.Mse);
        using var s = session;
        using var kfac = new KfacOptimizer(session, options);
        var grads = new Dictionary<string, float[]>();
        session.Run(batch);
        foreach (var p in session.Parameters) grads[p.Name] = p.Grad.Zip(p.Value, (g, v) => (float)(g + weightDecay * v)).ToArray();
        kfac.Step(new StepContext(session.Parameters, session) { UpdateCount = 1 });
        var (a, g, _, _) = kfac.FactorsOf("fc");
        const int dA = In + 1, dG = Out;
        double gamma = Math.Sqrt(damping + weightDecay);
        double trA = Enumerable.Range(0, dA).Sum(i => a[i * dA + i]) / dA, trG = Enumerable.Range(0, dG).Sum(i => g[i * dG + i]) / dG;
        double pi = Math.Sqrt(trA / trG);
        // Dense (Ĝ + γ/π I) ⊗ (Â + πγ I) acting on vec(∇W̄) row-major ([out, in+1]).
        int n = dA * dG;
        var m = new double[n, n];
        for (int o1 = 0; o1 < dG; o1++)
            for (int i1 = 0; i1 < dA; i1++)
                for (int o2 = 0; o2 < dG; o2++)
                    for (int i2 = 0; i2 < dA; i2++)
                        m[o1 * dA + i1, o2 * dA + i2] = (g[o1 * dG + o2] + (o1 == o2 ? gamma / pi : 0)) * (a[i1 * dA + i2] + (i1 == i2 ? pi * gamma : 0));
        var rhs = new double[n];
        for (int o = 0; o < dG; o++)
        {
            for (int i = 0; i < In; i++) rhs[o * dA + i] = grads["fc.weight"][o * In + i];
            rhs[o * dA + In] = grads["fc.bias"][o];
        }
        var v = Solve(m, rhs);
        var vw = kfac.PreconditionedOf("fc.weight");
        var vb = kfac.PreconditionedOf("fc.bias");
        double scale = v.Max(Math.Abs);
        for (int o = 0; o < dG; o++)
        {
            for (int i = 0; i < In; i++) Assert.True(Math.Abs(v[o * dA + i] - vw[o * In + i]) <= 1e-4 * scale, $"V[{o},{i}] {vw[o * In + i]} vs dense {v[o * dA + i]}");
            Assert.True(Math.Abs(v[o * dA + In] - vb[o]) <= 1e-4 * scale, $"Vb[{o}] {vb[o]} vs dense {v[o * dA + In]}");
        }
    }

    internal static double[] Solve(double[,] m, double[] b)
    {
        int n = b.Length;
        var a = (double[,])m.Clone();
        var x = (double[])b.Clone();
        for (int c = 0; c < n; c++)
        {
            int p = c;
            for (int r = c + 1; r < n; r++) if (Math.Abs(a[r, c]) > Math.Abs(a[p, c])) p = r;
            for (int k = 0; k < n; k++) (a[c, k], a[p, k]) = (a[p, k], a[c, k]);
            (x[c], x[p]) = (x[p], x[c]);
            for (int r = 0; r < n; r++)
            {
                if (r == c) continue;
                double f = a[r, c] / a[c, c];
                for (int k = c; k < n; k++) a[r, k] -= f * a[c, k];
                x[r] -= f * x[c];
            }
        }
        for (int i = 0; i < n; i++) x[i] /= a[i, i];
        return x;
    }

    [Theory]
    [InlineData(0.9, 1.0 * 0.95 * 0.95 * 0.95 * 0.95 * 0.95)]   // a good step: less damping
    [InlineData(0.5, 1.0)]                                          // in between: unchanged
    [InlineData(0.1, 1.0 / (0.95 * 0.95 * 0.95 * 0.95 * 0.95))]   // a poor step: more damping
    [InlineData(-2.0, 1.0 / (0.95 * 0.95 * 0.95 * 0.95 * 0.95))]  // the loss went up
    [InlineData(double.NaN, 1.0 / (0.95 * 0.95 * 0.95 * 0.95 * 0.95))]
    public void LevenbergMarquardtMovesTheDampingTheRightWay(double rho, double expectedFactor)
    {
        var options = new KfacOptions { AdaptEvery = 5, Damping = 1 };
        Assert.Equal(expectedFactor, KfacOptimizer.LevenbergMarquardt(1, rho, options), 12);
    }

    [Fact]
    public void LevenbergMarquardtStaysWithinItsBounds()
    {
        var options = new KfacOptions { AdaptEvery = 1, Damping = 1, MinDamping = 0.5, MaxDamping = 2 };
        Assert.Equal(0.5, KfacOptimizer.LevenbergMarquardt(0.51, 0.99, options));
        Assert.Equal(2, KfacOptimizer.LevenbergMarquardt(1.99, 0.0, options));
    }

    [Fact]
    public void StateRoundTripsAndTheTrajectoryContinuesBitForBit()
    {
        var options = new KfacOptions { InverseEvery = 3, Damping = 0.01, LearningRate = 0.02 };
        float[][] Run(bool restoreMidway)
        {
            var (session, batch, _) = Open(options);
            using var s = session;
            var kfac = new KfacOptimizer(session, options);
            var ctx = new StepContext(session.Parameters, session);
            for (int step = 1; step <= 7; step++)
            {
                double loss = session.Run(batch);
                ctx.UpdateCount = step;
                ctx.Loss = loss;
                kfac.ObserveBatch(ctx, N);
                kfac.Step(ctx);
                if (restoreMidway && step == 4)
                {
                    using var buffer = new MemoryStream();
                    using (var w = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true)) kfac.SaveState().Write(w);
                    buffer.Position = 0;
                    var state = OptimizerState.Read(new BinaryReader(buffer));
                    kfac.Dispose();
                    kfac = new KfacOptimizer(session, options);
                    kfac.LoadState(state);
                }
            }
            kfac.Dispose();
            return [.. session.Parameters.Select(p => (float[])p.Value.Clone())];
        }
        var straight = Run(false);
        var resumed = Run(true);
        for (int k = 0; k < straight.Length; k++) Assert.Equal(straight[k], resumed[k]);
    }

    [Fact]
    public void StateOfAnotherOptimizerOrBlockChoiceIsRefused()
    {
        var options = new KfacOptions();
        var (session, _, _) = Open(options);
        using var s = session;
        using var kfac = new KfacOptimizer(session, options);
        var sgd = new Sgd(session.Parameters, new SgdOptions { Momentum = 0.9 }).SaveState();
        Assert.Contains("'sgd'", Assert.Throws<ArgumentException>(() => kfac.LoadState(sgd)).Message);
        using var other = new KfacOptimizer(session, options with { Blocks = [new BlockOverride("fc.*", "identity")] });
        var e = Assert.Throws<ArgumentException>(() => kfac.LoadState(other.SaveState()));
        Assert.Contains("curvature blocks", e.Message);
    }

    [Fact]
    public void DeadUnitsAndConstantInputsNeverGiveANonFiniteUpdate()
    {
        // All-zero inputs: A is singular (only the bias coordinate is non-zero), π's traces
        // are degenerate; the damping must keep the update finite.
        var options = new KfacOptions { Damping = 1e-8, MinDamping = 1e-9, WeightDecay = 0, InverseEvery = 1 };
        var (session, batch, _) = Open(options);
        using var s = session;
        using var kfac = new KfacOptimizer(session, options);
        batch.Input<float>("x").Clear();
        var ctx = new StepContext(session.Parameters, session);
        for (int step = 1; step <= 3; step++)
        {
            ctx.UpdateCount = step;
            ctx.Loss = session.Run(batch);
            kfac.Step(ctx);
            foreach (var p in session.Parameters) Assert.All(p.Value, v => Assert.True(float.IsFinite(v), $"{p.Name} became non-finite at update {step}"));
        }
    }

    private static void Steps(KfacOptimizer kfac, TrainingSession session, BatchBinding batch, int count, int first = 1)
    {
        var ctx = new StepContext(session.Parameters, session);
        for (int step = first; step < first + count; step++)
        {
            ctx.UpdateCount = step;
            ctx.Loss = session.Run(batch);
            kfac.Step(ctx);
        }
    }

    [Fact]
    public void ClippingBoundsTheUpdateActuallyTaken()
    {
        var options = new KfacOptions { LearningRate = 1, KlClip = 1e6, Damping = 1e-3, ClipUpdateNorm = 1e-3, Momentum = 0 };
        var (session, batch, _) = Open(options);
        using var s = session;
        using var kfac = new KfacOptimizer(session, options);
        var before = session.Parameters.Select(p => (float[])p.Value.Clone()).ToArray();
        Steps(kfac, session, batch, 1);
        double norm = Math.Sqrt(session.Parameters.Select((p, k) => p.Value.Zip(before[k], (a, b) => (double)(a - b) * (a - b)).Sum()).Sum());
        Assert.True(kfac.LastStep.Clipped);
        Assert.Equal(1e-3, norm, 6);
    }

    [Fact]
    public void GroupsFreezeAndScaleTheirParameters()
    {
        var options = new KfacOptions
        {
            LearningRate = 0.01, Momentum = 0, KlClip = 1e6, Fallback = FallbackBlock.Identity, Blocks = [new BlockOverride("fc.*", "identity")],
            Groups = [new ParameterGroup("fc.bias") { Frozen = true }, new ParameterGroup("fc.weight") { LearningRate = 0.02 }],
        };
        var (session, batch, _) = Open(options);
        using var s = session;
        using var kfac = new KfacOptimizer(session, options);
        var w = session.Parameters.First(p => p.Name == "fc.weight");
        var b = session.Parameters.First(p => p.Name == "fc.bias");
        var w0 = (float[])w.Value.Clone();
        var b0 = (float[])b.Value.Clone();
        session.Run(batch);
        var grad = w.Grad.Zip(w.Value, (g, v) => g + (float)options.WeightDecay * v).ToArray();
        kfac.Step(new StepContext(session.Parameters, session) { UpdateCount = 1 });
        Assert.Equal(b0, b.Value);                                         // frozen
        for (int i = 0; i < w0.Length; i++) Assert.Equal(w0[i] - 0.02f * grad[i], w.Value[i], 6);   // identity block at the group's rate
        Assert.DoesNotContain(kfac.Blocks, x => x.Parameters.Contains("fc.bias"));
    }

    [Fact]
    public void AScheduledDampingFollowsItsSchedule()
    {
        var options = new KfacOptions { Damping = 0.1, DampingSchedule = new StepSchedule(2, 0.5), MinDamping = 0.02, InverseEvery = 1 };
        var (session, batch, _) = Open(options);
        using var s = session;
        using var kfac = new KfacOptimizer(session, options);
        var seen = new List<double>();
        for (int step = 1; step <= 8; step++)
        {
            Steps(kfac, session, batch, 1, step);
            seen.Add(kfac.Damping);
        }
        Assert.Equal(new[] { 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02 }, seen.Select(x => Math.Round(x, 12)));
    }
}
