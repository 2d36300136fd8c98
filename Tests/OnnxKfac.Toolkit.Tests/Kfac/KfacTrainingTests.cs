using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Checkpoints;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using OnnxKfac.Toolkit.Tests.Runtime;

namespace OnnxKfac.Toolkit.Tests.Kfac;

/// <summary>K-FAC through the trainer: progress, resume, accumulation, divergence.</summary>
public sealed class KfacTrainingTests
{
    private static string Temp(string name) => Path.Combine(Path.GetTempPath(), $"okfac-{name}-{Guid.NewGuid():N}");

    private static TrainingSession Session(KfacOptions options, ulong noiseSeed = 0x5eed) =>
        TrainingSession.Create(RuntimeFixture.Fashion(), options.Configure(new TrainingGraphOptions(new LossOptions(LossKind.CrossEntropy))),
            new TrainingSessionOptions { Threads = 1, NoiseSeed = noiseSeed });

    /// <summary>Updates until the moving average of the last 10 losses is below <paramref name="target"/> (or the budget ends).</summary>
    private static int StepsToReach(List<double> losses, double target)
    {
        for (int k = 10; k <= losses.Count; k++)
            if (losses.Skip(k - 10).Take(10).Average() < target) return k;
        return int.MaxValue;
    }

    [Fact]
    public void KfacReachesALossInFewerStepsThanSgdWithMomentum()
    {
        using var train = RuntimeFixture.Images(512, 31);
        var trainer = new TrainerOptions { Epochs = 100, MaxSteps = 120, BatchSize = 64, Seed = 4 };
        var kfacOptions = new KfacOptions { LearningRate = 0.003, Damping = 0.01, InverseEvery = 10 };
        var kfacLosses = new LossRecorder();
        using (var s = Session(kfacOptions))
        using (var kfac = new KfacOptimizer(s, kfacOptions))
            new Trainer(s, kfac, trainer, kfacLosses).Fit(train);
        // SGD with momentum at the best of a small learning-rate grid.
        int sgdBest = int.MaxValue;
        double target = 1.0;
        foreach (double lr in new[] { 0.01, 0.03, 0.1 })
        {
            var rec = new LossRecorder();
            using var s = RuntimeFixture.FashionSession();
            new Trainer(s, new Sgd(s.Parameters, new SgdOptions { LearningRate = lr, Momentum = 0.9 }), trainer, rec).Fit(train);
            sgdBest = Math.Min(sgdBest, StepsToReach(rec.Losses, target));
        }
        int kfacSteps = StepsToReach(kfacLosses.Losses, target);
        Assert.True(kfacSteps < sgdBest, $"K-FAC needed {kfacSteps} updates to a mean loss below {target}, the best SGD with momentum {sgdBest}");
    }

    [Fact]
    public void ResumeFromACheckpointContinuesBitForBit()
    {
        using var train = RuntimeFixture.Images(96, 32);
        var options = new KfacOptions { LearningRate = 0.003, Damping = 0.01, InverseEvery = 4, StatisticsEvery = 2 };
        string path = Temp("kfac");
        try
        {
            List<double> straight;
            float[][] final;
            using (var s = Session(options))
            using (var k = new KfacOptimizer(s, options))
            {
                var rec = new LossRecorder();
                new Trainer(s, k, new TrainerOptions { Epochs = 3, BatchSize = 16, Seed = 5 }, rec).Fit(train);
                straight = rec.Losses;
                final = [.. s.Parameters.Select(p => (float[])p.Value.Clone())];
            }
            using (var s = Session(options))
            using (var k = new KfacOptimizer(s, options))
                new Trainer(s, k, new TrainerOptions { Epochs = 3, MaxSteps = 7, BatchSize = 16, Seed = 5, CheckpointPath = path }).Fit(train);
            using (var s = Session(options, noiseSeed: 999))   // the checkpoint's noise state must win over the seed
            using (var k = new KfacOptimizer(s, options))
            {
                var rec = new LossRecorder();
                var t = new Trainer(s, k, new TrainerOptions { Epochs = 3, BatchSize = 16, Seed = 5 }, rec);
                t.Resume(Checkpoint.Load(path), path);
                t.Fit(train);
                Assert.Equal(straight.Skip(7), rec.Losses);
                for (int i = 0; i < final.Length; i++) Assert.Equal(final[i], s.Parameters[i].Value);
            }
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void UnderAccumulationEveryMicroBatchEntersTheFactors()
    {
        var options = new KfacOptions { InverseEvery = 1, Fallback = FallbackBlock.Identity };
        using var s = Session(options);
        using var kfac = new KfacOptimizer(s, options);
        var ctx = new StepContext(s.Parameters, s) { UpdateCount = 1 };
        var layer = s.Manifest.Layers[0];
        var sums = new double[2][];
        using var data = RuntimeFixture.Images(16, 33);
        var batch = s.Bind(8);
        var x = new float[16 * 784];
        var y = new long[16];
        using (var loader = new DataLoader(data, new LoaderOptions { BatchSize = 16, Shuffle = false }))
            Assert.True(loader.TryNextBatch(x, y, out _));
        for (int m = 0; m < 2; m++)
        {
            x.AsSpan(m * 8 * 784, 8 * 784).CopyTo(batch.Input<float>(s.DataInputs[0].Name));
            y.AsSpan(m * 8, 8).CopyTo(batch.Input<long>(s.TargetInput.Name));
            ctx.Loss = s.Run(batch);
            var a = s.GetOutput(layer.Outputs.FactorA!);
            sums[m] = [.. a.ToArray().Select(v => (double)v)];
            kfac.ObserveBatch(ctx, 8);
        }
        kfac.Step(ctx);
        var (ema, _, _, _) = kfac.FactorsOf(layer.Name);
        for (int i = 0; i < ema.Length; i += 997)
            Assert.Equal((sums[0][i] + sums[1][i]) / 2, ema[i], 6);

        // A skipped update's micro-batches are forgotten: only the next one enters (ε = 0.5 at k = 2).
        ctx.UpdateCount = 2;
        kfac.ObserveBatch(ctx, 8);            // batch 2 again: to be discarded
        kfac.DiscardObserved();
        x.AsSpan(0, 8 * 784).CopyTo(batch.Input<float>(s.DataInputs[0].Name));
        y.AsSpan(0, 8).CopyTo(batch.Input<long>(s.TargetInput.Name));
        ctx.Loss = s.Run(batch);
        kfac.ObserveBatch(ctx, 8);
        kfac.Step(ctx);
        for (int i = 0; i < ema.Length; i += 997)
            Assert.Equal(0.5 * (sums[0][i] + sums[1][i]) / 2 + 0.5 * sums[0][i], ema[i], 6);
    }

    /// <summary>
    /// One run per update (the trainer without accumulation or ranks): the factors fold straight from
    /// the run's outputs at the step, in the same bits as through the float64 sums; a discarded
    /// observation leaves nothing behind, and a second observation before the step is refused.
    /// </summary>
    [Fact]
    public void OneRunPerUpdateFoldsTheSameBitsAsTheSums()
    {
        var options = new KfacOptions { LearningRate = 0.003, Damping = 0.01, InverseEvery = 2, Fallback = FallbackBlock.Identity };
        using var data = RuntimeFixture.Images(64, 35);
        var x = new float[64 * 784];
        var y = new long[64];
        using (var loader = new DataLoader(data, new LoaderOptions { BatchSize = 64, Shuffle = false }))
            Assert.True(loader.TryNextBatch(x, y, out _));
        using var summed = Session(options);
        using var direct = Session(options);
        using var kSummed = new KfacOptimizer(summed, options);
        using var kDirect = new KfacOptimizer(direct, options);
        var cSummed = new StepContext(summed.Parameters, summed) { OneRunPerUpdate = false };
        var cDirect = new StepContext(direct.Parameters, direct) { OneRunPerUpdate = true };
        var bSummed = summed.Bind(16);
        var bDirect = direct.Bind(16);

        void Load(TrainingSession s, BatchBinding b, int batch)
        {
            x.AsSpan(batch * 16 * 784, 16 * 784).CopyTo(b.Input<float>(s.DataInputs[0].Name));
            y.AsSpan(batch * 16, 16).CopyTo(b.Input<long>(s.TargetInput.Name));
        }

        for (int u = 1; u <= 5; u++)
        {
            foreach (var (s, k, c, b) in new[] { (summed, kSummed, cSummed, bSummed), (direct, kDirect, cDirect, bDirect) })
            {
                c.UpdateCount = u;
                if (u == 3)
                {
                    // Update 3's first observation is discarded (a skipped update): the next run's statistics alone enter.
                    Load(s, b, 3);
                    s.Run(b);
                    k.ObserveBatch(c, 16);
                    k.DiscardObserved();
                }
                Load(s, b, (u - 1) % 4);
                c.Loss = s.Run(b);
                k.ObserveBatch(c, 16);
                k.Step(c);
            }
            foreach (var layer in summed.Manifest.Layers.Where(l => l.Outputs.FactorA is not null))
            {
                var f = kSummed.FactorsOf(layer.Name);
                var g = kDirect.FactorsOf(layer.Name);
                Assert.Equal(f.A, g.A);
                Assert.Equal(f.G, g.G);
            }
            for (int i = 0; i < summed.Parameters.Count; i++) Assert.Equal(summed.Parameters[i].Value, direct.Parameters[i].Value);
        }
        var first = kDirect.FactorsOf(summed.Manifest.Layers[0].Name).A;
        Assert.Contains(first, v => v != 0);

        // A second batch for an update said to be one run is an error that names the layer.
        cDirect.UpdateCount = 6;
        direct.Run(bDirect);
        kDirect.ObserveBatch(cDirect, 16);
        var e = Assert.Throws<InvalidOperationException>(() => kDirect.ObserveBatch(cDirect, 16));
        Assert.Contains("OneRunPerUpdate", e.Message);
    }

    [Fact]
    public void RollbackReturnsToTheLastGoodWeightsAndRaisesTheDamping()
    {
        // Example 20 is NaN: its batch's loss is not finite, as after a diverged update.
        using var train = RuntimeFixture.Images(64, 34, nanExample: 20);
        var options = new KfacOptions { LearningRate = 0.003, Damping = 1e-3, RollbackOnDivergence = true, InverseEvery = 1 };
        using var s = Session(options);
        using var kfac = new KfacOptimizer(s, options);
        var rec = new LossRecorder();
        var result = new Trainer(s, kfac, new TrainerOptions { Epochs = 2, BatchSize = 16, Seed = 6 }, rec).Fit(train);
        Assert.True(result.SkippedSteps > 0, "no batch was skipped");
        Assert.Equal(2 * 4 - result.SkippedSteps, result.Steps);
        Assert.Contains(rec.Messages, m => m.Contains("returned to the weights before the last update", StringComparison.Ordinal));
        Assert.True(kfac.Damping > options.Damping, $"damping {kfac.Damping} was not raised");
        foreach (var p in s.Parameters) Assert.All(p.Value, v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void WithoutRollbackADivergingRunStopsWithAdviceAboutTheDamping()
    {
        using var train = RuntimeFixture.Images(64, 34, nanExample: 20);
        var options = new KfacOptions { LearningRate = 0.003, Damping = 1e-3, InverseEvery = 1 };
        using var s = Session(options);
        using var kfac = new KfacOptimizer(s, options);
        var e = Assert.Throws<Graph.OnnxKfacException>(() => new Trainer(s, kfac, new TrainerOptions { Epochs = 2, BatchSize = 16, Seed = 6 }).Fit(train));
        Assert.Contains("non-finite loss", e.Message);
        Assert.Contains("--kfac-damping", e.Message);
    }

    [Fact]
    public void BetweenStatisticsUpdatesTheGraphWithoutStatisticsGivesTheSameLossAndGradients()
    {
        var options = new KfacOptions { StatisticsEvery = 3 };
        using var s = Session(options);
        using var data = RuntimeFixture.Images(16, 35);
        var batch = s.Bind(16);
        using (var loader = new DataLoader(data, new LoaderOptions { BatchSize = 16, Shuffle = false }))
            Assert.True(loader.TryNextBatch(batch.Input<float>(s.DataInputs[0].Name), batch.Input<long>(s.TargetInput.Name), out _));
        double full = s.Run(batch, statistics: true);
        var grads = s.Parameters.Select(p => (float[])p.Grad.Clone()).ToArray();
        foreach (var p in s.Parameters) Array.Clear(p.Grad);
        double light = s.Run(batch, statistics: false);
        Assert.Equal(full, light, 6);
        for (int k = 0; k < grads.Length; k++)
        {
            float scale = grads[k].Max(Math.Abs);
            for (int i = 0; i < grads[k].Length; i++)
                Assert.True(Math.Abs(grads[k][i] - s.Parameters[k].Grad[i]) <= 1e-5f * scale, $"{s.Parameters[k].Name}[{i}]");
        }
        using var kfac = new KfacOptimizer(s, options);
        Assert.True(kfac.NeedsStatistics(1));
        Assert.False(kfac.NeedsStatistics(2));
        Assert.False(kfac.NeedsStatistics(3));
        Assert.True(kfac.NeedsStatistics(4));
    }
}
