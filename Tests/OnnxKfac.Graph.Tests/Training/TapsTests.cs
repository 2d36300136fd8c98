using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Tests.Support;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Graph.Tests.Training;

/// <summary>
/// The K-FAC taps are what the K-FAC stage assumes: for a dense layer the weight gradient
/// is Σ_n g_n a_nᵀ and the bias gradient Σ_n g_n; the sampled pass draws its targets from
/// the model's own predictive distribution.
/// </summary>
public class TapsTests
{
    private static (TrainingGraph Graph, Dictionary<string, TestTensor> Out, Fixture F) Run(string fixture, bool fisher, int noiseSeed = 3)
    {
        var f = Fixture.Load(fixture);
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { SampledFisher = fisher });
        var feed = new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target };
        if (tg.Manifest.Fisher is { } fi) feed[fi.NoiseInput] = Noise(tg, f, noiseSeed);
        using var ort = new Ort(tg.Model);
        return (tg, ort.Run(feed), f);
    }

    private static TestTensor Noise(TrainingGraph tg, Fixture f, int seed)
    {
        var shape = tg.Manifest.Inputs.First(i => i.Role == TensorRole.Noise).Shape!.ToArray();
        shape[0] = f.Target.Shape[0];
        if (tg.Manifest.Fisher!.NoiseDistribution == "normal")
        {
            var rng = new Random(seed);
            long n = shape.Aggregate(1L, (a, b) => a * b);
            return TestTensor.Float(shape, Enumerable.Range(0, (int)n).Select(_ =>
                Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())).ToArray());
        }
        return TestTensor.Random(1, shape, seed, 1e-6, 1 - 1e-6);
    }

    [Theory]
    [InlineData("mlp_opset17")]
    [InlineData("mlp_opset13")]
    [InlineData("autoencoder_bce_opset17")]
    [InlineData("transformer_opset13")]
    public void DenseWeightGradientIsTheSumOfOuterProductsOfTheTaps(string fixture)
    {
        var (tg, outs, _) = Run(fixture, fisher: false);
        var dense = tg.Manifest.Layers.Where(l => l.Kind == LayerKind.Dense).ToArray();
        Assert.NotEmpty(dense);
        foreach (var l in dense)
        {
            var a = outs[l.Outputs.Input!];
            var g = outs[l.Outputs.PreactivationGradient!];
            int din = (int)l.InFeatures, dout = (int)l.OutFeatures;
            int rows = a.Data.Length / din;
            Assert.Equal(rows * dout, g.Data.Length); // one g row per a row (positions count as examples)
            var gradW = outs[tg.Manifest.Parameters.First(p => p.Name == l.Weight).Gradient].Data;
            double scale = gradW.Max(Math.Abs);
            for (int o = 0; o < dout; o++)
                for (int i = 0; i < din; i++)
                {
                    double s = 0;
                    for (int n = 0; n < rows; n++) s += g.Data[n * dout + o] * a.Data[n * din + i];
                    double expected = s * l.Alpha;
                    double got = l.WeightTransposed ? gradW[o * din + i] : gradW[i * dout + o];
                    Assert.True(Math.Abs(expected - got) <= 1e-5 * scale + 1e-7, $"{l.Name}: dW[{o},{i}] {got} vs Σ g aᵀ {expected}");
                }
            if (l.Bias is { } b)
            {
                var gradB = outs[tg.Manifest.Parameters.First(p => p.Name == b).Gradient].Data;
                for (int o = 0; o < dout; o++)
                {
                    double s = 0;
                    for (int n = 0; n < rows; n++) s += g.Data[n * dout + o];
                    Assert.True(Math.Abs(s * l.Beta - gradB[o]) <= 1e-5 * Math.Max(1, gradB.Max(Math.Abs)), $"{l.Name}: db[{o}]");
                }
            }
        }
    }

    [Fact]
    public void CategoricalSamplesFollowTheModelsSoftmax()
    {
        // Recover the sampled one-hot from the last layer's sampled gradient: g = (p - onehot) / N.
        var f = Fixture.Load("mlp_opset17");
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { SampledFisher = true });
        var last = tg.Manifest.Layers[^1];
        using var ort = new Ort(tg.Model);
        var feed = new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target };
        int n = (int)f.Target.Shape[0], classes = 5, draws = 3000;
        var counts = new double[n * classes];
        double[]? p = null;
        for (int d = 0; d < draws; d++)
        {
            feed[tg.Manifest.Fisher!.NoiseInput] = Noise(tg, f, 1000 + d);
            var o = ort.Run(feed, [last.Outputs.SampledPreactivationGradient!, f.Output]);
            var logits = o[f.Output].Data;
            p ??= Softmax(logits, classes);
            var g = o[last.Outputs.SampledPreactivationGradient!].Data;
            for (int k = 0; k < counts.Length; k++) counts[k] += Math.Round(p[k] - n * g[k]);
        }
        for (int k = 0; k < counts.Length; k++)
        {
            double freq = counts[k] / draws, sd = Math.Sqrt(p![k] * (1 - p[k]) / draws);
            Assert.True(Math.Abs(freq - p[k]) <= 4 * sd + 1e-3, $"class frequency {freq:F3} vs softmax {p[k]:F3} (entry {k})");
        }
    }

    [Fact]
    public void GaussianSampledGradientHasTheFisherOfSquaredError()
    {
        // mse = Gaussian NLL with variance 1/2: the sampled output gradient is -√2 ε / N, ε ~ N(0, 1).
        var (tg, outs, f) = Run("autoencoder_mse_opset17", fisher: true);
        Assert.Equal("gaussian", tg.Manifest.Fisher!.Distribution);
        Assert.Equal("normal", tg.Manifest.Fisher.NoiseDistribution);
        var noise = Noise(tg, f, 3).Data;
        int n = (int)f.Target.Shape[0];
        // The model's output is a Sigmoid of the last layer, so compare through the output gradient
        // via the layer tap: the last layer's sampled g = dY ⊙ y(1-y).
        var last = tg.Manifest.Layers[^1];
        var g = outs[last.Outputs.SampledPreactivationGradient!].Data;
        var y = outs[f.Output].Data;
        for (int k = 0; k < g.Length; k++)
        {
            double expected = -Math.Sqrt(2) * noise[k] / n * y[k] * (1 - y[k]);
            Assert.True(Math.Abs(expected - g[k]) <= 1e-5 * Math.Max(1e-3, Math.Abs(expected)) + 1e-7, $"entry {k}: {g[k]} vs {expected}");
        }
    }

    [Fact]
    public void BernoulliSamplesFollowTheSigmoid()
    {
        var f = Fixture.Load("autoencoder_bce_opset17");
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { SampledFisher = true });
        Assert.Equal("bernoulli", tg.Manifest.Fisher!.Distribution);
        var last = tg.Manifest.Layers[^1]; // its pre-activation is the logits output
        using var ort = new Ort(tg.Model);
        var feed = new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target };
        int n = (int)f.Target.Shape[0], draws = 2000;
        double[]? p = null, ones = null;
        for (int d = 0; d < draws; d++)
        {
            feed[tg.Manifest.Fisher.NoiseInput] = Noise(tg, f, 5000 + d);
            var o = ort.Run(feed, [last.Outputs.SampledPreactivationGradient!, f.Output]);
            p ??= o[f.Output].Data.Select(z => 1 / (1 + Math.Exp(-z))).ToArray();
            ones ??= new double[p.Length];
            var g = o[last.Outputs.SampledPreactivationGradient!].Data;
            for (int k = 0; k < p.Length; k++) ones[k] += Math.Round(p[k] - n * g[k]); // t = p - N g
        }
        for (int k = 0; k < p!.Length; k++)
        {
            double freq = ones![k] / draws, sd = Math.Sqrt(p[k] * (1 - p[k]) / draws);
            Assert.True(Math.Abs(freq - p[k]) <= 4 * sd + 2e-3, $"entry {k}: {freq:F3} vs {p[k]:F3}");
        }
    }

    [Fact]
    public void SumReductionIsMeanTimesCount()
    {
        var f = Fixture.Load("mlp_opset17");
        var mean = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions));
        var sum = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions with { Reduction = LossReduction.Sum }));
        var feed = new Dictionary<string, TestTensor>(f.Inputs) { [mean.Manifest.Loss.Target] = f.Target };
        using var a = new Ort(mean.Model);
        using var b = new Ort(sum.Model);
        var oa = a.Run(feed);
        var ob = b.Run(feed);
        int n = (int)f.Target.Shape[0];
        Assert.Equal(oa[mean.Manifest.Loss.Loss].Data[0] * n, ob[sum.Manifest.Loss.Loss].Data[0], 4);
        foreach (var p in mean.Manifest.Parameters)
        {
            var ga = oa[p.Gradient].Data;
            var gb = ob[sum.Manifest.Parameters.First(q => q.Name == p.Name).Gradient].Data;
            for (int k = 0; k < ga.Length; k++) Assert.Equal(ga[k] * n, gb[k], 4);
        }
    }

    private static double[] Softmax(double[] logits, int classes)
    {
        var p = new double[logits.Length];
        for (int r = 0; r < logits.Length / classes; r++)
        {
            double max = logits.Skip(r * classes).Take(classes).Max(), sum = 0;
            for (int c = 0; c < classes; c++) sum += p[r * classes + c] = Math.Exp(logits[r * classes + c] - max);
            for (int c = 0; c < classes; c++) p[r * classes + c] /= sum;
        }
        return p;
    }
}

public class ConvPatchTests
{
    [Theory]
    [InlineData("cnn_opset17")]
    [InlineData("cnn_opset13")]
    [InlineData("resnet_opset17")]
    public void ConvWeightGradientIsTheSumOverPositionsOfGTimesPatches(string fixture)
    {
        var f = Fixture.Load(fixture);
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { ConvPatches = true });
        var feed = new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target };
        using var ort = new Ort(tg.Model);
        var outs = ort.Run(feed);
        var convs = tg.Manifest.Layers.Where(l => l.Kind == LayerKind.Conv).ToArray();
        Assert.NotEmpty(convs);
        foreach (var l in convs)
        {
            var patches = outs[l.Outputs.Patches!];        // [N, C·K, positions...]
            var g = outs[l.Outputs.PreactivationGradient!]; // [N, O, positions...]
            var w = tg.Manifest.Parameters.First(p => p.Name == l.Weight);
            var dW = outs[w.Gradient].Data;        // [O, C/G, k...] = [O, perGroup]
            long groups = l.Conv!.Group, outCh = l.OutFeatures, perGroup = l.InFeatures;
            long n = patches.Shape[0], rowsP = patches.Shape[1], positions = patches.Count / (n * rowsP);
            Assert.Equal(groups * perGroup, rowsP);
            Assert.Equal(n * outCh * positions, g.Count);
            double scale = dW.Max(Math.Abs);
            for (long o = 0; o < outCh; o++)
            {
                long grp = o / (outCh / groups);
                for (long j = 0; j < perGroup; j++)
                {
                    double s = 0;
                    for (long b = 0; b < n; b++)
                        for (long t = 0; t < positions; t++)
                            s += g.Data[(b * outCh + o) * positions + t] * patches.Data[(b * rowsP + grp * perGroup + j) * positions + t];
                    Assert.True(Math.Abs(s - dW[o * perGroup + j]) <= 1e-4 * scale, $"{l.Name}: dW[{o},{j}] {dW[o * perGroup + j]} vs Σ g·patch {s}");
                }
            }
        }
    }
}

public class MoreTapsTests
{
    [Theory]
    [InlineData(1, 0, 0.5f, 2.0f)]
    [InlineData(0, 1, 1.5f, 1.0f)]
    [InlineData(1, 1, -1.0f, 0.5f)]
    public void GemmTapsHonourTransposesAlphaAndBeta(int transA, int transB, float alpha, float beta)
    {
        long n = 4, din = 3, dout = 2;
        var x = TestTensor.Random(1, transA == 1 ? [din, n] : [n, din], 1);
        var w = TestTensor.Random(1, transB == 1 ? [dout, din] : [din, dout], 2);
        var b = TestTensor.Random(1, [dout], 3);
        var node = new Proto.NodeProto { OpType = "Gemm", Name = "fc", Input = { "x", "fc.weight", "fc.bias" }, Output = { "y" } };
        node.Attribute.Add(Model.Attributes.Int("transA", transA));
        node.Attribute.Add(Model.Attributes.Int("transB", transB));
        node.Attribute.Add(Model.Attributes.Float("alpha", alpha));
        node.Attribute.Add(Model.Attributes.Float("beta", beta));
        var model = TestModels.Graph(17, [node], new Dictionary<string, TestTensor> { ["x"] = x },
            new Dictionary<string, TestTensor> { ["fc.weight"] = w, ["fc.bias"] = b }, ["y"]);
        var tg = TrainingGraphBuilder.Build(model, new TrainingGraphOptions(new LossOptions(LossKind.Mse)));
        var layer = Assert.Single(tg.Manifest.Layers);
        Assert.Equal("fc", layer.Name);
        Assert.Equal(din, layer.InFeatures);
        Assert.Equal(dout, layer.OutFeatures);
        using var ort = new Ort(tg.Model);
        var outs = ort.Run(new Dictionary<string, TestTensor> { ["x"] = x, [tg.Manifest.Loss.Target] = TestTensor.Random(1, [n, dout], 4) });
        var a = outs[layer.Outputs.Input!];
        Assert.Equal(new long[] { n, din }, a.Shape); // exposed as [N, in] whatever transA
        var g = outs[layer.Outputs.PreactivationGradient!].Data;
        var dW = outs[tg.Manifest.Parameters.First(p => p.Name == "fc.weight").Gradient].Data;
        var dB = outs[tg.Manifest.Parameters.First(p => p.Name == "fc.bias").Gradient].Data;
        for (int o = 0; o < dout; o++)
        {
            double sb = 0;
            for (int r = 0; r < n; r++) sb += g[r * dout + o];
            Assert.Equal(beta * sb, dB[o], 4);
            for (int i = 0; i < din; i++)
            {
                double s = 0;
                for (int r = 0; r < n; r++) s += g[r * dout + o] * a.Data[r * din + i];
                Assert.Equal(alpha * s, layer.WeightTransposed ? dW[o * din + i] : dW[i * dout + o], 4);
            }
        }
    }

    [Fact]
    public void EmbeddingGradientIsTheScatterSumOfItsPreactivationGradients()
    {
        var f = Fixture.Load("transformer_opset13");
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions));
        var emb = Assert.Single(tg.Manifest.Layers, l => l.Kind == Layers.LayerKind.Embedding);
        using var ort = new Ort(tg.Model);
        var outs = ort.Run(new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target });
        var ids = outs[emb.Outputs.Input!].Data;
        var g = outs[emb.Outputs.PreactivationGradient!].Data;
        var dW = outs[tg.Manifest.Parameters.First(p => p.Name == emb.Weight).Gradient].Data;
        int d = (int)emb.OutFeatures;
        var expected = new double[dW.Length];
        for (int t = 0; t < ids.Length; t++)
            for (int k = 0; k < d; k++) expected[(int)ids[t] * d + k] += g[t * d + k];
        double scale = dW.Max(Math.Abs);
        for (int k = 0; k < dW.Length; k++) Assert.True(Math.Abs(expected[k] - dW[k]) <= 1e-5 * scale, $"dW[{k}]");
    }

    [Fact]
    public void TapLayerExposesTheInputAndGradientTapsOfTheChosenLayersOnly()
    {
        var f = Fixture.Load("mlp_opset17");
        var all = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { LayerTaps = false, FactorStatistics = true }).Manifest.Layers;
        string chosen = all[0].Name;
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions)
        {
            LayerTaps = false, FactorStatistics = true, SampledFisher = true, TapLayer = l => l.Name == chosen,
        });
        foreach (var l in tg.Manifest.Layers)
        {
            Assert.Equal(l.Name == chosen, l.Outputs.Input is not null);
            Assert.Equal(l.Name == chosen, l.Outputs.PreactivationGradient is not null);
            Assert.Null(l.Outputs.SampledPreactivationGradient);   // only a and g: what per-example preconditioning reads
            Assert.NotNull(l.Outputs.FactorA);
        }
        Assert.Equal(2, tg.Manifest.Outputs.Count(o => o.Role is TensorRole.LayerInput or TensorRole.PreactivationGradient));
    }
}
