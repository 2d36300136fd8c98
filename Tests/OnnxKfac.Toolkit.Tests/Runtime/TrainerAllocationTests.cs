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

    private static void FitAllocatesNothingPerUpdate(bool fisher, Func<TrainingSession, IOptimizer> optimizer, int accumulate = 1)
    {
        using var s = RuntimeFixture.FashionSession(fisher: fisher);
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
}
