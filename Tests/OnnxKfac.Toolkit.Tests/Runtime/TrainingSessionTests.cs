using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Export;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using TrainingSession = OnnxKfac.Toolkit.Runtime.TrainingSession;

namespace OnnxKfac.Toolkit.Tests.Runtime;

public class TrainingSessionTests
{
    private static void FillBatch(BatchBinding b, int seed)
    {
        var rng = new Random(seed);
        var x = b.Input<float>("input");
        for (int i = 0; i < x.Length; i++) x[i] = (float)rng.NextDouble();
        var y = b.Input<long>("target");
        for (int i = 0; i < y.Length; i++) y[i] = rng.Next(10);
    }

    [Fact]
    public void GradientsLandInParameterBuffersAndWeightsAreReadInPlace()
    {
        using var s = RuntimeFixture.FashionSession();
        var b = s.Bind(8);
        FillBatch(b, 1);
        double loss0 = s.Run(b);
        Assert.True(double.IsFinite(loss0) && loss0 > 0);
        var w = s.Parameters.First(p => p.Name.EndsWith("weight", StringComparison.Ordinal));
        Assert.Contains(w.Grad, g => g != 0);

        // Writing into the parameter array changes what ONNX Runtime sees: no copy in between.
        foreach (var p in s.Parameters) Array.Clear(p.Value);
        double loss1 = s.Run(b);
        Assert.Equal(Math.Log(10), loss1, 5); // all-zero weights: uniform prediction
    }

    [Fact]
    public void GradientMatchesFiniteDifferenceOfTheSessionLoss()
    {
        using var s = RuntimeFixture.FashionSession();
        var b = s.Bind(4);
        FillBatch(b, 2);
        s.Run(b);
        var p = s.Parameters.Last(); // the output bias
        var analytic = p.Grad.ToArray();
        const float h = 1e-2f;
        for (int i = 0; i < p.Value.Length; i++)
        {
            float v = p.Value[i];
            p.Value[i] = v + h; double up = s.Run(b);
            p.Value[i] = v - h; double down = s.Run(b);
            p.Value[i] = v;
            Assert.Equal((up - down) / (2 * h), analytic[i], 3);
        }
    }

    [Fact]
    public void StepsAllocateNothingInSteadyState()
    {
        using var s = RuntimeFixture.FashionSession();
        var sgd = new Sgd(s.Parameters, new SgdOptions { LearningRate = 0.01, Momentum = 0.9 });
        var ctx = new StepContext(s.Parameters, s);
        var b = s.Bind(16);
        FillBatch(b, 3);
        for (int k = 0; k < 5; k++) { s.Run(b); sgd.Step(ctx); ctx.Advance(b.Loss); }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int k = 0; k < 100; k++) { s.Run(b); sgd.Step(ctx); ctx.Advance(b.Loss); }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated == 0, $"100 steps allocated {allocated} bytes");
    }

    [Fact]
    public void EvaluateGivesTheSameLossAsTheTrainingGraph()
    {
        using var s = RuntimeFixture.FashionSession();
        var b = s.Bind(8);
        FillBatch(b, 4);
        double train = s.Run(b);
        double eval = s.Evaluate(b);
        Assert.Equal(train, eval, 6);
        Assert.Equal(b.Output("logits").ToArray(), b.EvalOutput("logits").ToArray());
    }

    [Fact]
    public void SampledFisherNoiseIsSeededAndRestorable()
    {
        using var s = RuntimeFixture.FashionSession(fisher: true);
        var b = s.Bind(8);
        FillBatch(b, 5);
        var state = s.NoiseState;
        s.Run(b);
        string tap = s.Manifest.Layers[0].Outputs.SampledPreactivationGradient!;
        var first = b.Output(tap).ToArray();
        s.Run(b);
        Assert.NotEqual(first, b.Output(tap).ToArray()); // new targets each step
        s.NoiseState = state;
        s.Run(b);
        Assert.Equal(first, b.Output(tap).ToArray());   // same state, same targets
    }

    [Fact]
    public void ExportedModelComputesWhatTheSessionComputes()
    {
        using var s = RuntimeFixture.FashionSession();
        var b = s.Bind(8);
        FillBatch(b, 6);
        var sgd = new Sgd(s.Parameters, new SgdOptions { LearningRate = 0.5 });
        var ctx = new StepContext(s.Parameters, s);
        for (int k = 0; k < 3; k++) { s.Run(b); sgd.Step(ctx); ctx.Advance(b.Loss); }
        s.Evaluate(b);
        var expected = b.EvalOutput("logits").ToArray();

        string path = Path.Combine(Path.GetTempPath(), $"okfac-export-{Guid.NewGuid():N}.onnx");
        try
        {
            ModelExport.Save(s.SourceModel, s.Parameters, path);
            var exported = Graph.Model.OnnxModelIO.Load(path);
            // Same interface and graph as the original, only the initializer values differ.
            Assert.Equal(s.SourceModel.Graph.Input, exported.Graph.Input);
            Assert.Equal(s.SourceModel.Graph.Output, exported.Graph.Output);
            Assert.Equal(s.SourceModel.Graph.Node, exported.Graph.Node);
            Assert.Equal(s.SourceModel.OpsetImport, exported.OpsetImport);
            Assert.Equal(s.SourceModel.MetadataProps, exported.MetadataProps);
            using var ort = new InferenceSession(path);
            var x = b.Input<float>("input").ToArray();
            using var input = OrtValue.CreateTensorValueFromMemory(x, [8, 1, 28, 28]);
            using var outputs = ort.Run(new RunOptions(), ["input"], [input], ["logits"]);
            var got = outputs[0].GetTensorDataAsSpan<float>().ToArray();
            for (int i = 0; i < got.Length; i++) Assert.Equal(expected[i], got[i], 4);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void CudaOnTheCpuBuildIsOneClearError()
    {
        var e = Assert.Throws<OnnxKfacException>(() => TrainingSession.Create(RuntimeFixture.Fashion(),
            new TrainingGraphOptions(new LossOptions(LossKind.CrossEntropy)), new TrainingSessionOptions { Device = Device.Parse("cuda:0") }));
        Assert.Contains("device cuda:0", e.Message);
        Assert.Contains("-p:OnnxKfacGpu=true", e.Message);
        Assert.Throws<OnnxKfacException>(() => Device.Parse("tpu"));
    }

    [Fact]
    public void DoubleParametersAreRefusedWithTheirName()
    {
        var model = RuntimeFixture.Fashion();
        var t = model.Graph.Initializer[0];
        var values = Graph.Model.TensorData.ToDoubles(t);
        var d = Graph.Model.TensorData.FromDoubles(t.Name, t.Dims.ToArray(), values);
        model.Graph.Initializer[0] = d;
        var e = Assert.ThrowsAny<OnnxKfacException>(() =>
            TrainingSession.Create(model, new TrainingGraphOptions(new LossOptions(LossKind.CrossEntropy))));
        Assert.Contains(t.Name, e.Message);
    }
}
