using OnnxKfac.Toolkit.Checkpoints;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using TrainingSession = OnnxKfac.Toolkit.Runtime.TrainingSession;

namespace OnnxKfac.Toolkit.Tests.Runtime;

/// <summary>
/// Resume restores the state itself, not only a loss trajectory: losses do not depend on the
/// Fisher noise, the best validation loss, the best weights or the patience counter, so each
/// is asserted directly (through the trainer's internal read-only views) and through what it
/// changes after resuming: the sampled-Fisher outputs, which validations improve, where early
/// stopping stops and which weights a run ends with.
/// </summary>
public class TrainerResumeTests
{
    private static string Temp(string name) => Path.Combine(Path.GetTempPath(), $"okfac-{name}-{Guid.NewGuid():N}");

    /// <summary>Validation labels unrelated to the images: the more the model learns, the worse it does there.</summary>
    private static Dataset UnrelatedValidation()
    {
        var rng = new Random(5);
        var x = Enumerable.Range(0, 32 * 784).Select(_ => (float)rng.NextDouble()).ToArray();
        var y = Enumerable.Range(0, 32).Select(_ => (long)rng.Next(10)).ToArray();
        return Dataset.FromTensors(DataTensor.FromFloat(x, 32, 1, 28, 28), DataTensor.FromInt64(y, 32));
    }

    private static IOptimizer Sgd(TrainingSession s) =>
        new Sgd(s.Parameters, new SgdOptions { LearningRate = 0.05, Momentum = 0.9, Schedule = new StepSchedule(3, 0.5) });

    private static IOptimizer AdamW(TrainingSession s) =>
        new AdamW(s.Parameters, new AdamWOptions
        {
            LearningRate = 2e-3, WeightDecay = 0.01, AmsGrad = true, Schedule = new WarmupSchedule(3, new CosineSchedule(20)),
        });

    private static byte[] Bytes(OptimizerState state)
    {
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream)) state.Write(w);
        return stream.ToArray();
    }

    private static float[][] Weights(TrainingSession s) => s.Parameters.Select(p => p.Value.ToArray()).ToArray();

    /// <summary>Losses, validations and every layer's sampled-Fisher output (the noise at work) per update.</summary>
    private sealed class Recorder(TrainingSession session) : ITrainingObserver
    {
        public List<double> Losses { get; } = [];
        public List<float[]> Fisher { get; } = [];
        public List<ValidationReport> Validations { get; } = [];

        public void OnStep(in StepReport step)
        {
            if (step.Skipped) return;
            Losses.Add(step.Loss);
            var sampled = new List<float>();
            foreach (var layer in session.Manifest.Layers)
                if (layer.Outputs.SampledPreactivationGradient is { } name) sampled.AddRange(session.GetOutput(name).ToArray());
            Fisher.Add([.. sampled]);
        }

        public void OnValidation(in ValidationReport validation) => Validations.Add(validation);
    }

    [Fact]
    public void ResumeRestoresEachPieceOfStateTheCheckpointCarries()
    {
        using var train = RuntimeFixture.Images(160, 4, nanExample: 70); // one skipped batch an epoch
        using var val = UnrelatedValidation();
        string path = Temp("state");
        try
        {
            var options = new TrainerOptions { Epochs = 3, BatchSize = 32, Seed = 11, ValidateEvery = 1, EarlyStoppingPatience = 50, MaxSteps = 7, CheckpointPath = path, SkipNonFinite = true };
            using var sa = RuntimeFixture.FashionSession(fisher: true);
            var a = new Trainer(sa, Sgd(sa), options);
            a.Fit(train, val);
            // The state is worth restoring: updates were skipped, validation stopped improving, the noise moved on.
            Assert.True(a.SkippedSteps > 0, "precondition: no update was skipped");
            Assert.True(a.SinceImprovement > 0, $"precondition: {a.SinceImprovement} validations without improvement");
            Assert.NotNull(a.BestMetrics);

            using var sb = RuntimeFixture.FashionSession(fisher: true);
            var b = new Trainer(sb, Sgd(sb), options with { MaxSteps = null });
            Assert.NotEqual(a.NoiseState, b.NoiseState);
            b.Resume(Checkpoint.Load(path), path);

            Assert.Equal(7, b.Step);
            Assert.Equal(a.NextUpdate, b.NextUpdate); // the schedule's position
            Assert.Equal(a.SkippedSteps, b.SkippedSteps);
            Assert.Equal(a.NoiseState, b.NoiseState);
            Assert.Equal(a.BestLoss, b.BestLoss);
            Assert.Equal(a.BestMetrics, b.BestMetrics);
            Assert.Equal(a.SinceImprovement, b.SinceImprovement);
            Assert.Equal(a.BestWeights.Count, b.BestWeights.Count);
            for (int k = 0; k < a.BestWeights.Count; k++) Assert.Equal(a.BestWeights[k], b.BestWeights[k]);
            Assert.Equal(Bytes(a.Optimizer.SaveState()), Bytes(b.Optimizer.SaveState()));
            // 7 updates and the skipped batches, 32 examples each, from 5 batches an epoch.
            var pos = Assert.IsType<LoaderPosition>(b.ResumePosition);
            Assert.Equal((1, 32 * (7 + (int)a.SkippedSteps - 5), 160), (pos.Epoch, pos.Index, pos.DatasetCount));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void ResumedRunDrawsTheSameFisherSamplesValidatesAlikeAndStopsWhereTheStraightRunStops()
    {
        using var train = RuntimeFixture.Images(160, 4);
        using var val = UnrelatedValidation();
        var options = new TrainerOptions { Epochs = 20, BatchSize = 32, Seed = 11, ValidateEvery = 1, EarlyStoppingPatience = 4 };

        using var sFull = RuntimeFixture.FashionSession(fisher: true);
        var full = new Recorder(sFull);
        var rFull = new Trainer(sFull, Sgd(sFull), options, full).Fit(train, val);
        Assert.Equal("early stopping", rFull.StopReason);
        // Stop the first part two validations before the straight run stops, with the patience count under way.
        long split = rFull.Steps - 2;
        Assert.True(split > 2, $"precondition: the straight run stopped after {rFull.Steps} updates");

        string path = Temp("patience");
        try
        {
            using (var s1 = RuntimeFixture.FashionSession(fisher: true))
            {
                var first = new Recorder(s1);
                new Trainer(s1, Sgd(s1), options with { MaxSteps = split, CheckpointPath = path }, first).Fit(train, val);
                using var s2 = RuntimeFixture.FashionSession(fisher: true);
                var second = new Recorder(s2);
                var t = new Trainer(s2, Sgd(s2), options, second);
                t.Resume(Checkpoint.Load(path), path);
                var r2 = t.Fit(train, val);

                Assert.Equal(full.Losses, first.Losses.Concat(second.Losses));
                var fisher = first.Fisher.Concat(second.Fisher).ToArray();
                Assert.Equal(full.Fisher.Count, fisher.Length);
                for (int k = 0; k < fisher.Length; k++) Assert.True(full.Fisher[k].AsSpan().SequenceEqual(fisher[k]), $"sampled-Fisher outputs differ at update {k + 1}");
                Assert.Equal(full.Validations, first.Validations.Concat(second.Validations));
                Assert.Equal((rFull.Steps, rFull.StopReason), (r2.Steps, r2.StopReason));
                Assert.Equal(rFull.BestValidation, r2.BestValidation);
                Assert.Equal(rFull.FinalValidation, r2.FinalValidation);
                Assert.Equal(Weights(sFull), Weights(s2)); // the best weights, restored at the end
            }
        }
        finally { File.Delete(path); }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void AdamWResumesThroughACheckpointFile(int accumulate)
    {
        using var train = RuntimeFixture.Images(160, 6);
        var options = new TrainerOptions { Epochs = 2, BatchSize = 16, Seed = 5, AccumulationSteps = accumulate };

        using var sFull = RuntimeFixture.FashionSession(fisher: true);
        var full = new Recorder(sFull);
        var straight = new Trainer(sFull, AdamW(sFull), options, full);
        Assert.Equal(20 / accumulate, straight.Fit(train).Steps);

        string path = Temp("adamw");
        try
        {
            using (var s1 = RuntimeFixture.FashionSession(fisher: true))
            {
                var first = new Recorder(s1);
                var a = new Trainer(s1, AdamW(s1), options with { MaxSteps = 4, CheckpointPath = path }, first);
                a.Fit(train);
                var cp = Checkpoint.Load(path);
                Assert.Equal("adamw", cp.Optimizer!.Kind);

                using var s2 = RuntimeFixture.FashionSession(fisher: true);
                var second = new Recorder(s2);
                var b = new Trainer(s2, AdamW(s2), options, second);
                b.Resume(cp, path);
                Assert.Equal(Bytes(a.Optimizer.SaveState()), Bytes(b.Optimizer.SaveState()));
                Assert.Equal(a.NoiseState, b.NoiseState);
                // A checkpoint lands on an update, so on an accumulation boundary: nothing is half accumulated.
                Assert.Equal(4 * accumulate * 16, b.ResumePosition!.Value.Index);
                b.Fit(train);

                Assert.Equal(full.Losses, first.Losses.Concat(second.Losses));
                Assert.Equal(full.Fisher.Count, first.Fisher.Count + second.Fisher.Count);
                Assert.Equal(Weights(sFull), Weights(s2));
                Assert.Equal(Bytes(straight.Optimizer.SaveState()), Bytes(b.Optimizer.SaveState()));
            }
        }
        finally { File.Delete(path); }
    }
}
