using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Tests.Support;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Graph.Tests.Training;

/// <summary>
/// Whole models exported by PyTorch: the training graph's loss and every parameter
/// gradient equal PyTorch autograd (max abs error at most 1e-4 of the largest entry).
/// </summary>
public class FixtureGradientTests(Xunit.Abstractions.ITestOutputHelper log)
{
    public static IEnumerable<object[]> Fixtures => Fixture.All();

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void LossAndGradientsMatchPyTorch(string name)
    {
        var f = Fixture.Load(name);
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { SampledFisher = true, ConvPatches = true });
        // The default trainable set is exactly what PyTorch calls parameters: a tie the exporter
        // broke (tied_folded) trains as one parameter whose gradient is PyTorch's, the sum of the
        // partial derivatives through each copy (the fixture's per-initializer gradients).
        var expected = TiedGradients(f);
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), tg.Manifest.Parameters.Select(p => p.Name).Order(StringComparer.Ordinal));

        using var ort = new Ort(tg.Model);
        var feed = new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target };
        if (tg.Manifest.Fisher is { } fisher)
        {
            using var forward = new Ort(f.Model);
            var like = forward.Run(f.Inputs, [f.Output])[f.Output];
            feed[fisher.NoiseInput] = TestTensor.Random(like.ElemType, like.Shape, 3, 0.01, 0.99);
        }
        var outputs = ort.Run(feed);
        double loss = outputs[tg.Manifest.Loss.Loss].Data[0];
        Assert.True(Math.Abs(loss - f.Loss) <= 1e-5 * Math.Max(1, Math.Abs(f.Loss)), $"loss {loss} vs PyTorch {f.Loss}");
        double worst = 0;
        foreach (var p in tg.Manifest.Parameters)
        {
            var reference = expected[p.Name];
            var got = outputs[p.Gradient];
            Assert.Equal(reference.Shape, got.Shape);
            double scale = reference.Data.Max(Math.Abs);
            double err = reference.Data.Zip(got.Data, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(err <= 1e-4 * scale, $"{name}: gradient of '{p.Name}' max abs error {err:G3} > 1e-4 × {scale:G3}");
            if (scale > 0) worst = Math.Max(worst, err / scale);
        }
        log.WriteLine($"{name}: loss error {Math.Abs(loss - f.Loss):G3}, worst gradient error {worst:G3} of the largest entry, {tg.Manifest.Parameters.Count} parameters, {tg.Manifest.Layers.Count} layers");
    }

    /// <summary>The fixture's gradients with every broken tie's copy folded into its source (transposed back).</summary>
    public static Dictionary<string, TestTensor> TiedGradients(Fixture f)
    {
        var result = new Dictionary<string, TestTensor>(f.Gradients, StringComparer.Ordinal);
        foreach (var b in Ties.Detect(f.Model).Broken)
        {
            var s = result[b.Source];
            var c = result[b.Copy];
            var sum = (double[])s.Data.Clone();
            for (int i = 0; i < sum.Length; i++)
                sum[i] += b.Transposed ? c.Data[(i % s.Shape[1]) * s.Shape[0] + i / s.Shape[1]] : c.Data[i];
            result[b.Source] = new TestTensor(s.ElemType, s.Shape, sum);
            result.Remove(b.Copy);
        }
        return result;
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void TrainingGraphIsDeterministic(string name)
    {
        var f = Fixture.Load(name);
        var options = new TrainingGraphOptions(f.LossOptions) { SampledFisher = true, ConvPatches = true };
        var a = TrainingGraphBuilder.Build(f.Model, options);
        var b = TrainingGraphBuilder.Build(OnnxModelIO.Load(Path.Combine(f.Dir, "model.onnx")), options);
        Assert.Equal(Google.Protobuf.MessageExtensions.ToByteArray(a.Model), Google.Protobuf.MessageExtensions.ToByteArray(b.Model));
        Assert.Equal(a.Manifest.ToJson(), b.Manifest.ToJson());
    }
}
