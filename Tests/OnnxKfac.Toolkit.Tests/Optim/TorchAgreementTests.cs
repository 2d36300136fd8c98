using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Tests.Optim;

/// <summary>
/// Trajectories against torch.optim (constants in TorchReference.cs, written by
/// tools/bench/optim_reference.py; the configurations below repeat the script's).
/// </summary>
public class TorchAgreementTests
{
    private static void Run(Func<Parameter[], IOptimizer> make, float[][] expected, double? clip = null)
    {
        var ps = Fixture.MakeParameters();
        var optimizer = make(ps);
        var context = new StepContext(ps);
        for (int t = 1; t <= expected.Length; t++)
        {
            context.UpdateCount = t;
            Fixture.SetGrads(ps, t);
            if (clip is { } c) GradientClipping.ClipByGlobalNorm(ps, c);
            optimizer.Step(context);
            Fixture.AssertClose(expected[t - 1], Fixture.Flatten(ps), $"step {t}");
        }
    }

    [Fact]
    public void SgdNesterovWeightDecayStepLrClipped() => Run(ps => new Sgd(ps, new SgdOptions
    {
        LearningRate = 0.1, Momentum = 0.9, Nesterov = true, WeightDecay = 0.01,
        Schedule = new StepSchedule(2, 0.5),
    }), TorchReference.SgdNesterov, clip: 2.5);

    [Fact]
    public void SgdMomentumDampeningCosine() => Run(ps => new Sgd(ps, new SgdOptions
    {
        LearningRate = 0.05, Momentum = 0.8, Dampening = 0.3,
        Schedule = new CosineSchedule(6, minFactor: 0.1),
    }), TorchReference.SgdDampening);

    [Fact]
    public void AdamWWarmupCosineClipped() => Run(ps => new AdamW(ps, new AdamWOptions
    {
        LearningRate = 0.01, Beta1 = 0.9, Beta2 = 0.99, Epsilon = 1e-8, WeightDecay = 0.1,
        Schedule = new WarmupSchedule(2, new CosineSchedule(4), startFactor: 0.25),
    }), TorchReference.AdamWWarmupCosine, clip: 2.0);

    [Fact]
    public void AdamWAmsGradStepLrClipped() => Run(ps => new AdamW(ps, new AdamWOptions
    {
        LearningRate = 0.02, WeightDecay = 0.01, AmsGrad = true,
        Schedule = new StepSchedule(3, 0.3),
    }), TorchReference.AdamWAmsgrad, clip: 1.5);

    [Fact]
    public void AdamWithCoupledWeightDecay() => Run(ps => new AdamW(ps, new AdamWOptions
    {
        LearningRate = 0.01, Beta2 = 0.99, WeightDecay = 0.1, DecoupledWeightDecay = false,
    }), TorchReference.AdamCoupled, clip: 2.0);

    [Fact]
    public void SgdParameterGroups() => Run(ps => new Sgd(ps, new SgdOptions
    {
        LearningRate = 0.1, Momentum = 0.9, WeightDecay = 0.01,
        Groups =
        [
            new ParameterGroup("fc.bias") { LearningRate = 0.2, Momentum = 0, WeightDecay = 0 },
            new ParameterGroup("emb.*") { Frozen = true },
        ],
    }), TorchReference.SgdGroups);

    [Fact]
    public void AdamWParameterGroups() => Run(ps => new AdamW(ps, new AdamWOptions
    {
        LearningRate = 0.01, WeightDecay = 0.05,
        Groups =
        [
            new ParameterGroup("*.bias") { LearningRate = 0.03, Momentum = 0.5, WeightDecay = 0 },
            new ParameterGroup("emb.*") { Frozen = true },
        ],
    }), TorchReference.AdamWGroups);

    [Fact]
    public void ClippingMatchesClipGradNorm()
    {
        var ps = Fixture.MakeParameters();
        Fixture.SetGrads(ps, 4);
        double norm = GradientClipping.ClipByGlobalNorm(ps, 3.0);
        Assert.Equal(TorchReference.ClipNorm, norm, 1e-6 * TorchReference.ClipNorm);
        Fixture.AssertClose(TorchReference.ClipGrads[0], [.. ps.SelectMany(p => p.Grad)], "clipped grads");
    }

    [Fact]
    public void WrongMathIsCaught()
    {
        // The comparison sees plausible mistakes: losing AMSGrad's running maximum, or
        // plain momentum where Nesterov's look-ahead was meant.
        Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => Run(ps => new AdamW(ps, new AdamWOptions
        {
            LearningRate = 0.02, WeightDecay = 0.01, AmsGrad = false, Schedule = new StepSchedule(3, 0.3),
        }), TorchReference.AdamWAmsgrad, clip: 1.5));
        // Decoupled decay is not torch.optim.Adam's coupled L2.
        Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => Run(ps => new AdamW(ps, new AdamWOptions
        {
            LearningRate = 0.01, Beta2 = 0.99, WeightDecay = 0.1,
        }), TorchReference.AdamCoupled, clip: 2.0));
        Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => Run(ps => new Sgd(ps, new SgdOptions
        {
            LearningRate = 0.1, Momentum = 0.9, Nesterov = false, WeightDecay = 0.01, Schedule = new StepSchedule(2, 0.5),
        }), TorchReference.SgdNesterov, clip: 2.5));
    }
}
