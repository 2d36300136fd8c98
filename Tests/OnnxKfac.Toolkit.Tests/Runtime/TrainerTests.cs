using OnnxKfac.Graph;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Checkpoints;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using TrainingSession = OnnxKfac.Toolkit.Runtime.TrainingSession;

namespace OnnxKfac.Toolkit.Tests.Runtime;

public class TrainerTests
{
    private static string Temp(string name) => Path.Combine(Path.GetTempPath(), $"okfac-{name}-{Guid.NewGuid():N}");

    [Fact]
    public void TrainingLowersTheValidationLossAndRaisesAccuracy()
    {
        using var s = RuntimeFixture.FashionSession();
        using var train = RuntimeFixture.Images(256, 1);
        using var val = RuntimeFixture.Images(128, 2);
        var trainer = new Trainer(s, new AdamW(s.Parameters, new AdamWOptions { LearningRate = 1e-3 }),
            new TrainerOptions { Epochs = 4, BatchSize = 32, Seed = 7 });
        var before = trainer.Evaluate(val);
        var result = trainer.Fit(train, val);
        Assert.Equal(32, result.Steps);
        Assert.True(result.FinalValidation!.Value.Loss < before.Loss - 0.1, $"{before.Loss} -> {result.FinalValidation.Value.Loss}");
        Assert.True(result.FinalValidation.Value.Accuracy > before.Accuracy);
    }

    [Fact]
    public void PartialLastBatchIsTrainedOnItsOwnBinding()
    {
        using var s = RuntimeFixture.FashionSession();
        using var train = RuntimeFixture.Images(70, 3); // 32 + 32 + 6
        var rec = new LossRecorder();
        var trainer = new Trainer(s, new Sgd(s.Parameters, new SgdOptions { LearningRate = 0.01 }), new TrainerOptions { Epochs = 1, BatchSize = 32 }, rec);
        var r = trainer.Fit(train);
        Assert.Equal(3, r.Steps);
        Assert.Equal(3, rec.Losses.Count);
    }

    [Fact]
    public void ResumedRunFollowsTheUninterruptedTrajectoryBitForBit()
    {
        using var train = RuntimeFixture.Images(160, 4);
        var options = new TrainerOptions { Epochs = 3, BatchSize = 32, Seed = 11 };
        IOptimizer Make(TrainingSession s) => new Sgd(s.Parameters, new SgdOptions { LearningRate = 0.05, Momentum = 0.9, Nesterov = true });

        var full = new LossRecorder();
        using (var s = RuntimeFixture.FashionSession(fisher: true))
            new Trainer(s, Make(s), options, full).Fit(train);

        string path = Temp("ckpt");
        try
        {
            var first = new LossRecorder();
            using (var s = RuntimeFixture.FashionSession(fisher: true))
                new Trainer(s, Make(s), options with { MaxSteps = 7, CheckpointPath = path }, first).Fit(train);
            var second = new LossRecorder();
            using (var s = RuntimeFixture.FashionSession(fisher: true))
            {
                var t = new Trainer(s, Make(s), options, second);
                t.Resume(Checkpoint.Load(path), path);
                t.Fit(train);
            }
            Assert.Equal(full.Losses, first.Losses.Concat(second.Losses));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void NonFiniteLossStopsWithAClearMessageAndWritesNoCheckpoint()
    {
        using var s = RuntimeFixture.FashionSession();
        using var train = RuntimeFixture.Images(64, 5);
        string path = Temp("nan");
        s.Parameters[0].Value[0] = float.NaN;
        var trainer = new Trainer(s, new Sgd(s.Parameters), new TrainerOptions { BatchSize = 32, CheckpointPath = path, CheckpointEvery = 1 });
        var e = Assert.Throws<OnnxKfacException>(() => trainer.Fit(train));
        Assert.Contains("non-finite", e.Message);
        Assert.Contains("update 1", e.Message);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void SkipNonFiniteSkipsPoisonedBatchesAndKeepsGoing()
    {
        using var s = RuntimeFixture.FashionSession();
        using var train = RuntimeFixture.Images(64, 6);
        s.Parameters[0].Value[0] = float.PositiveInfinity;
        var trainer = new Trainer(s, new Sgd(s.Parameters), new TrainerOptions { BatchSize = 32, SkipNonFinite = true });
        var r = trainer.Fit(train);
        Assert.Equal(2, r.SkippedSteps);
        Assert.Equal(0, r.Steps);
        Assert.True(float.IsPositiveInfinity(s.Parameters[0].Value[0])); // no update was applied
    }

    [Fact]
    public void LabelsOutOfRangeAreRefused()
    {
        using var s = RuntimeFixture.FashionSession();
        using var train = RuntimeFixture.Images(40, 7, classes: 12);
        var trainer = new Trainer(s, new Sgd(s.Parameters), new TrainerOptions { BatchSize = 8, Epochs = 5 });
        var e = Assert.Throws<OnnxKfacException>(() => trainer.Fit(train));
        Assert.Contains("out of range", e.Message);
        Assert.Contains("10 classes", e.Message);
    }

    [Fact]
    public void DataThatDoesNotFitTheModelInputIsRefused()
    {
        using var s = RuntimeFixture.FashionSession();
        using var data = OnnxKfac.Toolkit.Data.Dataset.FromTensors(OnnxKfac.Toolkit.Data.DataTensor.FromFloat(new float[10 * 20], 10, 20), OnnxKfac.Toolkit.Data.DataTensor.FromInt64(new long[10], 10));
        var trainer = new Trainer(s, new Sgd(s.Parameters));
        var e = Assert.Throws<OnnxKfacException>(() => trainer.Fit(data));
        Assert.Contains("20 features", e.Message);
        Assert.Contains("'input'", e.Message);
    }

    [Fact]
    public void CheckpointFromAnotherModelIsRefusedWithTheReason()
    {
        string path = Temp("other");
        try
        {
            using (var s = RuntimeFixture.FashionSession())
                new Trainer(s, new Sgd(s.Parameters), new TrainerOptions { MaxSteps = 1, CheckpointPath = path }).Fit(RuntimeFixture.Images(32, 8));
            var model = Graph.Model.OnnxModelIO.Load(RuntimeFixture.ModelPath("autoencoder_mse.onnx"));
            using var other = TrainingSession.Create(model, new TrainingGraphOptions(new LossOptions(LossKind.Mse)));
            var t = new Trainer(other, new Sgd(other.Parameters));
            var e = Assert.Throws<OnnxKfacException>(() => t.Resume(Checkpoint.Load(path), path));
            Assert.Contains("another model", e.Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void FailedCheckpointWriteLeavesThePreviousOneValid()
    {
        string path = Temp("disk");
        try
        {
            using var s = RuntimeFixture.FashionSession();
            var trainer = new Trainer(s, new Sgd(s.Parameters, new SgdOptions { LearningRate = 0.1 }), new TrainerOptions { MaxSteps = 2, CheckpointPath = path });
            trainer.Fit(RuntimeFixture.Images(64, 9));
            var saved = Checkpoint.Load(path);
            var cp = new Checkpoint { ModelFingerprint = "x", Parameters = s.Parameters };
            Assert.Throws<IOException>(() => cp.Save(path, raw => new FullDiskStream(raw, 1000)));
            var after = Checkpoint.Load(path);
            Assert.Equal(saved.Longs["step"], after.Longs["step"]);
            Assert.Equal(saved.Parameters[0].Value, after.Parameters[0].Value);
            Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, Path.GetFileName(path) + ".tmp-*"));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void TruncatedCheckpointIsRefused()
    {
        string path = Temp("trunc");
        try
        {
            using var s = RuntimeFixture.FashionSession();
            new Trainer(s, new Sgd(s.Parameters), new TrainerOptions { MaxSteps = 1, CheckpointPath = path }).Fit(RuntimeFixture.Images(32, 10));
            var bytes = File.ReadAllBytes(path);
            File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
            var e = Assert.Throws<OnnxKfacException>(() => Checkpoint.Load(path));
            Assert.Contains(path, e.Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void EarlyStoppingAndBestModelKeeping()
    {
        using var s = RuntimeFixture.FashionSession();
        using var train = RuntimeFixture.Images(64, 11);
        using var val = RuntimeFixture.Images(64, 12);
        var rec = new LossRecorder();
        // A learning rate this large makes validation worse after the first update.
        var trainer = new Trainer(s, new Sgd(s.Parameters, new SgdOptions { LearningRate = 3.0 }),
            new TrainerOptions { Epochs = 50, BatchSize = 32, ValidateEvery = 1, EarlyStoppingPatience = 2, SkipNonFinite = true }, rec);
        var r = trainer.Fit(train, val);
        Assert.Equal("early stopping", r.StopReason);
        Assert.True(r.Steps < 100);
        var best = rec.Validations.Min(v => v.Metrics.Loss);
        Assert.Equal(best, r.FinalValidation!.Value.Loss, 6);
        Assert.Equal(best, trainer.Evaluate(val).Loss, 5); // the best weights are the ones left in place
    }

    /// <summary>A stream that fails like a full disk after a number of bytes (and leaves the inner stream open).</summary>
    private sealed class FullDiskStream(Stream inner, long capacity) : Stream
    {
        private long _written;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _written;
        public override long Position { get => _written; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count)
        {
            if (_written + count > capacity) throw new IOException("No space left on device");
            inner.Write(buffer, offset, count);
            _written += count;
        }
    }
}
