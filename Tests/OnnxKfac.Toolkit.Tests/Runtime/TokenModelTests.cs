using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using TrainingSession = OnnxKfac.Toolkit.Runtime.TrainingSession;

namespace OnnxKfac.Toolkit.Tests.Runtime;

/// <summary>The PyTorch transformer fixture: int64 token ids in, fed from an integer tensor.</summary>
public class TokenModelTests
{
    private static Dataset Tokens(int count, int seed)
    {
        var rng = new Random(seed);
        var x = new long[count * 6];
        var y = new long[count];
        for (int n = 0; n < count; n++)
        {
            y[n] = rng.Next(4);
            for (int t = 0; t < 6; t++) x[n * 6 + t] = 5 * y[n] + rng.Next(5); // class c uses tokens 5c..5c+4
        }
        return Dataset.FromTensors(DataTensor.FromInt64(x, count, 6), DataTensor.FromInt64(y, count), new DataOptions { ClassCount = 4 });
    }

    [Fact]
    public void TransformerOnTokenIdsLearns()
    {
        var model = OnnxModelIO.Load(RuntimeFixture.ModelPath("transformer.onnx"));
        var graph = new TrainingGraphOptions(new LossOptions(LossKind.CrossEntropy)) { SampledFisher = true };
        using var train = Tokens(256, 1);
        using var val = Tokens(128, 2);
        var options = new TrainerOptions { Epochs = 6, BatchSize = 32, Seed = 3 };
        var rec = new LossRecorder();
        using var s = TrainingSession.Create(model, graph, new TrainingSessionOptions { Threads = 1 });
        Assert.Equal("int64", s.DataInputs.Single().ElemType);
        var trainer = new Trainer(s, new AdamW(s.Parameters, new AdamWOptions { LearningRate = 3e-3 }), options, rec);
        var before = trainer.Evaluate(val);
        var result = trainer.Fit(train, val);
        Assert.True(result.FinalValidation!.Value.Loss < before.Loss - 0.2, $"{before.Loss} -> {result.FinalValidation.Value.Loss}");
        Assert.True(result.FinalValidation.Value.Accuracy > before.Accuracy + 0.2, $"{before.Accuracy} -> {result.FinalValidation.Value.Accuracy}");
        Assert.All(rec.Losses, l => Assert.True(double.IsFinite(l)));
    }
}
