using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Tests.Optim;

public class AllocationTests
{
    private static long AllocatedOverSteps(IOptimizer optimizer, Parameter[] ps, GradientAccumulator? acc)
    {
        var ctx = new StepContext(ps);
        void Once()
        {
            if (acc is not null) { acc.Add(4); acc.Add(4); }
            GradientClipping.ClipByGlobalNorm(ps, 0.5);
            optimizer.Step(ctx);
            ctx.Advance(0.0);
        }
        for (int i = 0; i < 200; i++) Once(); // warm-up (tiering)
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++) Once();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    private static Parameter[] Model()
    {
        var ps = new[] { Parameter.Create("a", [64, 33]), Parameter.Create("b", [33]), Parameter.Create("c", [7], trainable: false) };
        foreach (var p in ps)
            for (int i = 0; i < p.Grad.Length; i++) { p.Grad[i] = MathF.Sin(i); p.Value[i] = MathF.Cos(i); }
        return ps;
    }

    [Fact]
    public void SgdStepsAllocateNothing()
    {
        var ps = Model();
        var sgd = new Sgd(ps, new SgdOptions
        {
            LearningRate = 1e-3, Momentum = 0.9, Nesterov = true, WeightDecay = 1e-4,
            Schedule = new WarmupSchedule(10, new CosineSchedule(1000)),
            Groups = [new ParameterGroup("b") { WeightDecay = 0 }],
        });
        Assert.Equal(0, AllocatedOverSteps(sgd, ps, new GradientAccumulator(ps, 2)));
    }

    [Fact]
    public void AdamWStepsAllocateNothing()
    {
        var ps = Model();
        var adam = new AdamW(ps, new AdamWOptions { AmsGrad = true, Schedule = new StepSchedule(10, 0.9) });
        Assert.Equal(0, AllocatedOverSteps(adam, ps, new GradientAccumulator(ps, 2)));
    }
}
