using OnnxKfac.Graph;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using TrainingSession = OnnxKfac.Toolkit.Runtime.TrainingSession;

namespace OnnxKfac.Toolkit.Tests.Runtime;

/// <summary>The C# API on the PyTorch token classifier with an attention mask (inputs input_ids and attention_mask, int64).</summary>
public class MultiInputTrainingTests
{
    private const int Seq = 5, Vocab = 12;

    private static TrainingSession Session(KfacOptions? kfac = null)
    {
        var graph = new TrainingGraphOptions(new LossOptions(LossKind.CrossEntropy));
        return TrainingSession.Create(OnnxModelIO.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "token_mask_opset13", "model.onnx")),
            kfac is null ? graph : kfac.Configure(graph), new TrainingSessionOptions { Threads = 1 });
    }

    /// <summary>Class c uses tokens 4c..4c+3 at the unmasked positions; <paramref name="badId"/> goes into example 5.</summary>
    private static Dataset Tokens(int n, int seed, long? badId = null, bool floatIds = false, bool withMask = true)
    {
        var rng = new Random(seed);
        var ids = new long[n * Seq];
        var mask = new long[n * Seq];
        var y = new long[n];
        for (int i = 0; i < n; i++)
        {
            y[i] = rng.Next(3);
            int kept = 1 + rng.Next(Seq);
            for (int t = 0; t < Seq; t++)
            {
                mask[i * Seq + t] = t < kept ? 1 : 0;
                ids[i * Seq + t] = t < kept ? 4 * y[i] + rng.Next(4) : rng.Next(Vocab);
            }
        }
        if (badId is { } bad) ids[5 * Seq + 1] = bad;
        var inputs = new List<KeyValuePair<string, DataTensor>>
        {
            KeyValuePair.Create("input_ids", floatIds ? DataTensor.FromFloat(ids.Select(v => (float)v).ToArray(), n, Seq) : DataTensor.FromInt64(ids, n, Seq)),
        };
        if (withMask) inputs.Add(KeyValuePair.Create("attention_mask", DataTensor.FromInt64(mask, n, Seq)));
        return Dataset.FromTensors(inputs, DataTensor.FromInt64(y, n), new DataOptions { ClassCount = 3 });
    }

    [Fact]
    public void KfacTrainsATokenClassifierFedIdsAndMask()
    {
        var options = new KfacOptions { LearningRate = 0.3 };
        using var s = Session(options);
        Assert.Equal(["input_ids", "attention_mask"], s.DataInputs.Select(i => i.Name));
        using var train = Tokens(128, 1);
        using var val = Tokens(64, 2);
        using var kfac = new KfacOptimizer(s, options);
        var trainer = new Trainer(s, kfac, new TrainerOptions { Epochs = 4, BatchSize = 16, Seed = 3 });
        var before = trainer.Evaluate(val);
        var result = trainer.Fit(train, val);
        Assert.True(result.FinalValidation!.Value.Accuracy >= 0.95, $"{before.Accuracy} -> {result.FinalValidation.Value.Accuracy}");
        Assert.True(result.FinalValidation.Value.Loss < before.Loss - 0.5, $"{before.Loss} -> {result.FinalValidation.Value.Loss}");
    }

    [Theory]
    [InlineData(Vocab)]
    [InlineData(-1)]
    public void AnIdOutsideTheEmbeddingIsRefusedNamingTheInputAndTheRow(long bad)
    {
        using var s = Session();
        using var data = Tokens(32, 4, badId: bad);
        var e = Assert.Throws<OnnxKfacException>(() => new Evaluator(s, 8).Evaluate(data));
        Assert.Contains($"row 5 of input 'input_ids' holds id {bad}", e.Message);
        Assert.Contains("[0, 12)", e.Message);
    }

    [Fact]
    public void ARowNumberIsTheFilesRowAfterASplit()
    {
        using var s = Session();
        using var data = Tokens(40, 4, badId: 99);
        var (train, val) = data.Split(0.25, 1);
        using (train)
        using (val)
        {
            var errors = new[] { train, val }.Select(d => Record.Exception(() => new Evaluator(s, 8).Evaluate(d))).ToArray();
            var e = Assert.IsType<OnnxKfacException>(Assert.Single(errors, x => x is not null));
            Assert.Contains("row 5 of input 'input_ids' holds id 99", e.Message);
        }
    }

    [Fact]
    public void FloatIdsAMissingInputAndUnnamedDataAreRefused()
    {
        using var s = Session();
        var evaluator = new Evaluator(s, 8);
        using (var floats = Tokens(16, 5, floatIds: true))
            Assert.Contains("model input 'input_ids' takes int64 ids", Assert.Throws<OnnxKfacException>(() => evaluator.Evaluate(floats)).Message);
        using (var noMask = Tokens(16, 5, withMask: false))
            Assert.Contains("no data for model input 'attention_mask'", Assert.Throws<OnnxKfacException>(() => evaluator.Evaluate(noMask)).Message);
        using var unnamed = Dataset.FromTensors(DataTensor.FromInt64(new long[16 * Seq], 16, Seq), DataTensor.FromInt64(new long[16], 16));
        Assert.Contains("2 data inputs ('input_ids', 'attention_mask')", Assert.Throws<OnnxKfacException>(() => evaluator.Evaluate(unnamed)).Message);
    }
}
