using OnnxKfac.Toolkit.Checkpoints;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Toolkit.Tests.Runtime;

/// <summary>What the final checkpoint holds, and resuming a run that has nothing left to do.</summary>
public class TrainerCheckpointTests
{
    private static string Temp(string name) => Path.Combine(Path.GetTempPath(), $"okfac-{name}-{Guid.NewGuid():N}");

    [Fact]
    public void ResumingAFinishedRunOrASpentBudgetTrainsNoFurther()
    {
        using var train = RuntimeFixture.Images(64, 21);
        string path = Temp("done");
        try
        {
            var options = new TrainerOptions { Epochs = 2, BatchSize = 32, Seed = 3, CheckpointPath = path, CheckpointConfig = "{\"lr\": 0.01}" };
            using (var s = RuntimeFixture.FashionSession())
                Assert.Equal(4, new Trainer(s, new Sgd(s.Parameters), options).Fit(train).Steps);
            Assert.Equal("{\"lr\": 0.01}", Checkpoint.Load(path).Config);
            foreach (var o in new[] { options, options with { Epochs = 1, MaxSteps = 4 } })
            {
                using var s = RuntimeFixture.FashionSession();
                var rec = new LossRecorder();
                var t = new Trainer(s, new Sgd(s.Parameters), o, rec);
                t.Resume(Checkpoint.Load(path), path);
                var r = t.Fit(train);
                Assert.Equal(4, r.Steps);
                Assert.Empty(rec.Losses);
            }
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void TheFinalCheckpointHoldsTheLastWeightsAndMarksWhenTheResultIsTheBest()
    {
        using var train = RuntimeFixture.Images(64, 22);
        // Validation labels unrelated to the images: the more the model learns, the worse it does there.
        var rng = new Random(5);
        var x = Enumerable.Range(0, 32 * 784).Select(_ => (float)rng.NextDouble()).ToArray();
        var y = Enumerable.Range(0, 32).Select(_ => (long)rng.Next(10)).ToArray();
        using var val = Dataset.FromTensors(DataTensor.FromFloat(x, 32, 1, 28, 28), DataTensor.FromInt64(y, 32));
        string path = Temp("best");
        try
        {
            using var s = RuntimeFixture.FashionSession();
            var t = new Trainer(s, new Sgd(s.Parameters, new SgdOptions { LearningRate = 0.05 }),
                new TrainerOptions { Epochs = 4, BatchSize = 32, Seed = 1, CheckpointPath = path });
            var r = t.Fit(train, val);
            var cp = Checkpoint.Load(path);
            bool restored = r.FinalValidation == r.BestValidation && cp.Longs.ContainsKey("result_is_best");
            Assert.True(restored, "expected the best weights to be restored");
            // the session now holds the best weights, the checkpoint the last ones and the best ones
            Assert.Equal(s.Parameters[0].Value, cp.Tensors["best/" + s.Parameters[0].Name]);
            Assert.NotEqual(s.Parameters[0].Value, cp.Parameters[0].Value);
        }
        finally { File.Delete(path); }
    }
}
