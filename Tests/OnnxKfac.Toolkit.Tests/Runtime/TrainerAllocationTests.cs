using KfacNs = OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using TrainingSession = OnnxKfac.Toolkit.Runtime.TrainingSession;

namespace OnnxKfac.Toolkit.Tests.Runtime;

/// <summary>
/// The loop users run allocates nothing per update in steady state: <see cref="Trainer.Fit"/>
/// over a few hundred updates (many epochs of a small data set, so epoch ends, reshuffles and
/// accumulation flushes count too) allocates what a short Fit does. Fit's own set-up (loader,
/// accumulator buffers, result) is a per-run cost and cancels out. The runtime's JIT tiering
/// now and then allocates a few KB on the training thread at any moment, so each length is
/// measured three times and the smallest count kept; one object per update would still show
/// as at least 24 bytes × 300.
/// </summary>
public class TrainerAllocationTests
{
    private const int Updates = 300;

    private static long Allocated(Func<Trainer> make, Dataset train)
    {
        long least = long.MaxValue;
        for (int k = 0; k < 3; k++)
        {
            var trainer = make();
            long before = GC.GetAllocatedBytesForCurrentThread();
            trainer.Fit(train);
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        return least;
    }

    private static void FitAllocatesNothingPerUpdate(bool fisher, Func<TrainingSession, IOptimizer> optimizer, int accumulate = 1, TrainingSession? session = null)
    {
        using var s = session ?? RuntimeFixture.FashionSession(fisher: fisher);
        using var train = RuntimeFixture.Images(96, 9); // 3 batches an epoch
        Trainer Make(int steps) => new(s, optimizer(s), new TrainerOptions { BatchSize = 32, Seed = 2, MaxSteps = steps, AccumulationSteps = accumulate });
        Make(Updates).Fit(train); // warm-up: bindings, JIT tiers
        long shortRun = Allocated(() => Make(30), train);
        long longRun = Allocated(() => Make(30 + Updates), train);
        Assert.True(longRun - shortRun < 24 * Updates / 10,
            $"{Updates} more updates allocated {longRun - shortRun} more bytes ({shortRun} for 30 updates, {longRun} for {30 + Updates})");
    }

    [Fact]
    public void FitWithAdamWAllocatesNothingPerUpdate() =>
        FitAllocatesNothingPerUpdate(fisher: false, s => new AdamW(s.Parameters, new AdamWOptions { AmsGrad = true, Schedule = new WarmupSchedule(10, new CosineSchedule(1000)) }));

    [Fact]
    public void FitWithTheSampledFisherAllocatesNothingPerUpdate() =>
        FitAllocatesNothingPerUpdate(fisher: true, s => new AdamW(s.Parameters, new AdamWOptions { WeightDecay = 0.01 }));

    [Fact]
    public void FitWithAccumulationAndSgdAllocatesNothingPerUpdate() =>
        FitAllocatesNothingPerUpdate(fisher: true, s => new Sgd(s.Parameters, new SgdOptions { LearningRate = 1e-3, Momentum = 0.9 }), accumulate: 2);

    [Theory]
    [InlineData(KfacNs.KfacUpdateRule.KlClip, false)]
    [InlineData(KfacNs.KfacUpdateRule.Quadratic, false)]
    [InlineData(KfacNs.KfacUpdateRule.KlClip, true)]
    public void FitWithKfacAllocatesNothingPerUpdate(KfacNs.KfacUpdateRule rule, bool perExample)
    {
        // Statistics, inverse refreshes (every 7 updates), preconditioning and, for the quadratic
        // rule, the Jacobian-vector-product pass and Levenberg–Marquardt's extra forward.
        var options = new KfacNs.KfacOptions
        {
            UpdateRule = rule, InverseEvery = 7, LearningRate = 0.003,
            // The quadratic rule at batch 32 needs a damping floor to stay finite on this data.
            Damping = rule == KfacNs.KfacUpdateRule.Quadratic ? 1 : 0.01, MinDamping = rule == KfacNs.KfacUpdateRule.Quadratic ? 0.5 : 1e-8,
            DampingAdaptation = rule == KfacNs.KfacUpdateRule.Quadratic ? KfacNs.DampingAdaptation.LevenbergMarquardt : KfacNs.DampingAdaptation.Fixed,
        };
        // The per-example form: its rows copied in and its program run every update.
        if (perExample) options = options with { WeightDecay = 0, Preconditioning = KfacNs.KfacPreconditioning.PerExample };
        var session = TrainingSession.Create(RuntimeFixture.Fashion(),
            options.Configure(new Graph.Training.TrainingGraphOptions(new Graph.Losses.LossOptions(Graph.Losses.LossKind.CrossEntropy))),
            new TrainingSessionOptions { Threads = 1 });
        var kfac = new KfacNs.KfacOptimizer(session, options);
        try
        {
            FitAllocatesNothingPerUpdate(fisher: true, _ => kfac, session: session);
            Assert.Equal(perExample, kfac.Timings.PerExampleUpdates > 0);
        }
        finally { kfac.Dispose(); }
    }
}
