using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Tests.Support;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Graph.Tests.Training;

/// <summary>
/// The factor statistics the graph emits equal the sums Toolkit/Kfac/README.md defines,
/// computed here row by row from the taps (patch by patch for conv, per group, id by id for
/// embeddings): A = ĀᵀĀ / R, G = (N²/D)·(R_all/R)·ĜᵀĜ over the sampled pre-activation gradients, D the
/// real loss's mean denominator.
/// </summary>
public class FactorStatisticsTests
{
    /// <param name="wholeBatch">
    /// Also expose every parameter's sampled gradient, which needs the sampled pass over the
    /// whole batch; otherwise a fraction below 1 runs it over a forward clone of the first
    /// ⌈f·N⌉ examples (ExampleSubset).
    /// </param>
    private static (TrainingGraph Graph, Dictionary<string, TestTensor> Out, Fixture F) Run(string fixture, double fraction = 1, bool sampled = true,
        bool wholeBatch = false)
    {
        var f = Fixture.Load(fixture);
        var options = new TrainingGraphOptions(f.LossOptions)
        {
            SampledFisher = sampled, FactorStatistics = true, ConvPatches = true, StatisticsFraction = fraction,
            SampledGradients = wholeBatch ? ["*"] : [],
        };
        var tg = TrainingGraphBuilder.Build(f.Model, options);
        var feed = new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target };
        if (tg.Manifest.Fisher is { } fi)
        {
            var shape = tg.Manifest.Inputs.First(i => i.Role == TensorRole.Noise).Shape!.ToArray();
            shape[0] = f.Target.Shape[0];
            feed[fi.NoiseInput] = TestTensor.Random(1, shape, 11, 1e-6, 1 - 1e-6);
        }
        using var ort = new Ort(tg.Model);
        return (tg, ort.Run(feed), f);
    }

    /// <summary>Null when <paramref name="actual"/> matches, else where it does not.</summary>
    private static string? Mismatch(double[] expected, double[] actual, string what)
    {
        if (expected.Length != actual.Length) return $"{what}: {actual.Length} values, expected {expected.Length}";
        double scale = Math.Max(1e-12, expected.Max(Math.Abs));
        for (int k = 0; k < expected.Length; k++)
            if (Math.Abs(expected[k] - actual[k]) > 1e-5 * scale) return $"{what}[{k}]: {actual[k]} vs {expected[k]} (scale {scale})";
        return null;
    }

    private static void AssertClose(double[] expected, double[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = Math.Max(1e-12, expected.Max(Math.Abs));
        for (int k = 0; k < expected.Length; k++)
            Assert.True(Math.Abs(expected[k] - actual[k]) <= 1e-5 * scale, $"{what}[{k}]: {actual[k]} vs {expected[k]} (scale {scale})");
    }

    /// <summary>Σ_r x_r x_rᵀ · scale for rows of length d.</summary>
    private static double[] Gram(IReadOnlyList<double[]> rows, int d, double scale)
    {
        var m = new double[d * d];
        foreach (var r in rows)
            for (int i = 0; i < d; i++)
                for (int j = 0; j < d; j++) m[i * d + j] += r[i] * r[j] * scale;
        return m;
    }

    [Theory]
    [InlineData("mlp_opset17", 1.0, false)]
    [InlineData("mlp_opset13", 0.5, false)]
    [InlineData("mlp_opset13", 0.5, true)]
    [InlineData("autoencoder_bce_opset17", 1.0, false)]
    [InlineData("autoencoder_bce_opset17", 0.25, false)]
    [InlineData("transformer_opset17", 1.0, false)]
    [InlineData("transformer_opset13", 0.5, false)]
    [InlineData("transformer_opset13", 0.5, true)]
    public void DenseFactorsAreTheMeanOuterProductsOfTheTaps(string fixture, double fraction, bool wholeBatch)
    {
        var (tg, outs, f) = Run(fixture, fraction, wholeBatch: wholeBatch);
        int n = (int)f.Target.Shape[0], seen = Math.Max(1, (int)Math.Ceiling(fraction * n));
        var dense = tg.Manifest.Layers.Where(l => l.Kind == LayerKind.Dense).ToArray();
        Assert.NotEmpty(dense);
        foreach (var l in dense)
        {
            var a = outs[l.Outputs.Input!];
            var g = outs[l.Outputs.SampledPreactivationGradient!];
            int din = (int)l.InFeatures, dout = (int)l.OutFeatures, dA = din + (l.Bias is null ? 0 : 1);
            int total = a.Data.Length / din, tapRows = g.Data.Length / dout;
            double denominator = f.LossOptions.Kind == Graph.Losses.LossKind.CrossEntropy ? n : f.Target.Count;
            // Whole batch: statistics see the first ⌈f·D⌉ entries of the layer's leading axis D
            // (the batch, or the sequence in seq-first attention), and the sampled tap has every row.
            // Subset: the sampled pass ran over the first ⌈f·N⌉ examples only, so its tap holds
            // exactly their rows (all positions) and nothing else: ⌈f·N⌉/N of the rows, laid out
            // example-major ([N, ...] or [N·T]) or, for seq-first layers ([T, N, ...] or [T·N]),
            // position-major. Each layout maps a row r of the input tap to a row of the sampled tap
            // or to none; the factors must match one of them. G is rescaled by all rows / rows seen.
            if (!wholeBatch && seen < n) Assert.True(tapRows < total, $"{l.Name}: the sampled pass should run over the first {seen} of {n} examples only");
            var layouts = new List<Func<int, int>>();
            if (wholeBatch || tapRows == total)
            {
                Assert.Equal(total, tapRows);
                int lead = (int)a.Shape[0], kept = Math.Max(1, (int)Math.Ceiling(fraction * lead)) * (total / lead);
                layouts.Add(r => r < kept ? r : -1);
            }
            else
            {
                Assert.Equal(total / n * seen, tapRows);
                layouts.Add(r => r < tapRows ? r : -1);                                               // example-major
                layouts.Add(r => r % n < seen ? r / n * seen + r % n : -1);                           // position-major
            }
            var mismatches = new List<string>();
            foreach (var layout in layouts)
            {
                var aRows = new List<double[]>();
                var gRows = new List<double[]>();
                for (int r = 0; r < total; r++)
                {
                    int gr = layout(r);
                    if (gr < 0) continue;
                    var row = new double[dA];
                    for (int i = 0; i < din; i++) row[i] = a.Data[r * din + i] * l.Alpha;
                    if (l.Bias is not null) row[din] = l.Beta;
                    aRows.Add(row);
                    gRows.Add(g.Data.Skip(gr * dout).Take(dout).ToArray());
                }
                int rows = aRows.Count;
                // G is the Fisher of the real loss: N²/D with D its mean denominator (N for cross-entropy, every element for bce).
                string? why = Mismatch(Gram(aRows, dA, 1.0 / rows), outs[l.Outputs.FactorA!].Data, $"{l.Name} A")
                    ?? Mismatch(Gram(gRows, dout, (double)n * n / denominator * total / rows), outs[l.Outputs.FactorG!].Data, $"{l.Name} G");
                if (why is null) break;
                mismatches.Add(why);
            }
            Assert.True(mismatches.Count < layouts.Count, string.Join("; ", mismatches));
            Assert.Equal(new long[] { 1, dA, dA }, outs[l.Outputs.FactorA!].Shape);
        }
    }

    /// <summary>
    /// The sampled pass over a forward clone of the first examples gives the statistics the
    /// pass over the whole batch gives (its rows sliced afterwards) for every layer whose rows
    /// are example-major, through recurrences, attention with masks, embeddings, several inputs
    /// and convolutions; seq-first layers are compared through the dense test above.
    /// </summary>
    [Theory]
    [InlineData("gpt_opset17")]
    [InlineData("lstm_opset17")]
    [InlineData("gru_opset13")]
    [InlineData("masked_encoder_opset17")]
    [InlineData("two_tower_opset17")]
    [InlineData("token_mask_opset17")]
    [InlineData("audio_conv1d_opset17")]
    [InlineData("tv_mobilenet_v3_opset13")]
    [InlineData("float_int_opset17")]
    public void SubsetPassGivesTheWholeBatchStatistics(string fixture)
    {
        var (tg, subset, f) = Run(fixture, 0.5);
        var (whole, full, _) = Run(fixture, 0.5, wholeBatch: true);
        Assert.Contains(tg.Model.Graph.Node, node => node.Name.StartsWith("sampled/subset/", StringComparison.Ordinal));
        Assert.DoesNotContain(whole.Model.Graph.Node, node => node.Name.StartsWith("sampled/subset/", StringComparison.Ordinal));
        int n = (int)f.Target.Shape[0], compared = 0;
        foreach (var l in tg.Manifest.Layers)
        {
            var w = whole.Manifest.Layers.Single(x => x.Name == l.Name);
            Assert.True(subset[l.Outputs.SampledPreactivationGradient!].Data.Length < full[w.Outputs.SampledPreactivationGradient!].Data.Length,
                $"{l.Name}: the subset's sampled pass should see fewer rows");
            // Example-major rows: the input tap's first axis is the batch ([N, ...], not [N·T] or [T, N]).
            var a = full[w.Outputs.Input!];
            if (a.Shape[0] != n || (a.Shape.Length == 2 && l.Kind == LayerKind.Dense && l.InputRank > 2)) continue;
            AssertClose(full[w.Outputs.FactorA!].Data, subset[l.Outputs.FactorA!].Data, $"{l.Name} A");
            AssertClose(full[w.Outputs.FactorG!].Data, subset[l.Outputs.FactorG!].Data, $"{l.Name} G");
            compared++;
        }
        Assert.True(compared > 0, "no example-major layer was compared");
    }

    /// <summary>
    /// Where every forward tensor is example-major (a batch-first MLP, CNN, MobileNet), the subset's
    /// forward values are slices of the full pass's: no layer product is computed twice, only the
    /// sampled backward runs over the k rows (and the statistics above still match the whole batch's).
    /// </summary>
    [Theory]
    [InlineData("mlp_opset17")]
    [InlineData("cnn_opset17")]
    [InlineData("tv_mobilenet_v3_opset13")]
    public void SubsetPassSlicesTheForwardInsteadOfRecomputingIt(string fixture)
    {
        var (tg, _, _) = Run(fixture, 0.5);
        var nodes = tg.Model.Graph.Node;
        Assert.Contains(nodes, n => n.OpType == "Slice" && n.Name.StartsWith("sampled/subset/", StringComparison.Ordinal));
        var recomputed = nodes.Where(n => n.Name.StartsWith("sampled/subset/", StringComparison.Ordinal) && n.OpType is "Gemm" or "MatMul" or "Conv").ToList();
        Assert.True(recomputed.Count == 0, $"the subset recomputes {string.Join(", ", recomputed.Select(n => n.Name))}");
        // The sampled backward itself still runs over the subset.
        Assert.Contains(nodes, n => n.Name.StartsWith("sampled/sampled/subset/", StringComparison.Ordinal) && n.OpType is "Gemm" or "MatMul" or "Conv" or "ConvTranspose");
    }

    [Theory]
    [InlineData("cnn_opset17", 1.0, false)]
    [InlineData("cnn_opset13", 0.75, false)]
    [InlineData("cnn_opset13", 0.75, true)]
    [InlineData("resnet_opset17", 1.0, false)]
    [InlineData("resnet_opset17", 0.5, false)]
    public void ConvFactorsArePatchByPatchSumsPerGroup(string fixture, double fraction, bool wholeBatch)
    {
        var (tg, outs, f) = Run(fixture, fraction, wholeBatch: wholeBatch);
        int n = (int)f.Target.Shape[0], seen = Math.Max(1, (int)Math.Ceiling(fraction * n));
        var convs = tg.Manifest.Layers.Where(l => l.Kind == LayerKind.Conv).ToArray();
        Assert.NotEmpty(convs);
        if (fixture.StartsWith("cnn", StringComparison.Ordinal)) Assert.Contains(convs, c => c.Groups > 1);
        foreach (var l in convs)
        {
            var patches = outs[l.Outputs.Patches!];                       // [N, C_in·k, L...]
            var g = outs[l.Outputs.SampledPreactivationGradient!];        // [N, C_out, L...]; [⌈f·N⌉, ...] over a subset
            Assert.Equal(wholeBatch ? n : seen, g.Shape[0]);
            int groups = (int)l.Groups, perIn = (int)l.InFeatures, cout = (int)l.OutFeatures, perOut = cout / groups;
            int cols = perIn * groups;
            int positions = (int)(patches.Data.Length / n / cols);
            int dA = perIn + (l.Bias is null ? 0 : 1);
            var expectedA = new List<double>();
            var expectedG = new List<double>();
            for (int gi = 0; gi < groups; gi++)
            {
                var aRows = new List<double[]>();
                var gRows = new List<double[]>();
                for (int e = 0; e < seen; e++)
                    for (int t = 0; t < positions; t++)
                    {
                        var row = new double[dA];
                        for (int c = 0; c < perIn; c++) row[c] = patches.Data[(e * cols + gi * perIn + c) * positions + t];
                        if (l.Bias is not null) row[perIn] = 1;
                        aRows.Add(row);
                        var grow = new double[perOut];
                        for (int o = 0; o < perOut; o++) grow[o] = g.Data[(e * cout + gi * perOut + o) * positions + t];
                        gRows.Add(grow);
                    }
                expectedA.AddRange(Gram(aRows, dA, 1.0 / aRows.Count));
                expectedG.AddRange(Gram(gRows, perOut, (double)n * n / seen));
            }
            AssertClose([.. expectedA], outs[l.Outputs.FactorA!].Data, $"{l.Name} A");
            AssertClose([.. expectedG], outs[l.Outputs.FactorG!].Data, $"{l.Name} G");
            Assert.Equal(new long[] { groups, dA, dA }, outs[l.Outputs.FactorA!].Shape);
        }
    }

    [Fact]
    public void EmbeddingFactorIsTheIdFrequency()
    {
        var (tg, outs, f) = Run("transformer_opset17");
        var emb = Assert.Single(tg.Manifest.Layers, l => l.Kind == LayerKind.Embedding);
        var ids = outs[emb.Outputs.Input!].Data;
        var expected = new double[emb.InFeatures];
        foreach (var id in ids) expected[(long)id] += 1.0 / ids.Length;
        AssertClose(expected, outs[emb.Outputs.FactorA!].Data, "embedding A");
        var g = outs[emb.Outputs.SampledPreactivationGradient!].Data;
        int d = (int)emb.OutFeatures, n = (int)f.Target.Shape[0];
        var rows = Enumerable.Range(0, g.Length / d).Select(r => g.Skip(r * d).Take(d).ToArray()).ToArray();
        AssertClose(Gram(rows, d, n), outs[emb.Outputs.FactorG!].Data, "embedding G");
    }

    [Theory]
    [InlineData("mlp_opset17")]              // cross-entropy: the mean divides by N
    [InlineData("autoencoder_mse_opset17")]  // mse: the mean divides by every element, N·16
    [InlineData("autoencoder_bce_opset13")]
    public void EmpiricalFisherUsesTheRealLossGradientsAsPerExampleGradients(string fixture)
    {
        // The real loss's output gradient is g/D (D: its mean denominator), so G = D·ĜᵀĜ is the
        // empirical Fisher of that loss, on the scale of the sampled pass's (N²/D)·ĜᵀĜ.
        var (tg, outs, f) = Run(fixture, sampled: false);
        Assert.Null(tg.Manifest.Fisher);
        int n = (int)f.Target.Shape[0];
        double d = fixture.StartsWith("mlp", StringComparison.Ordinal) ? n : f.Target.Count;
        foreach (var l in tg.Manifest.Layers)
        {
            var g = outs[l.Outputs.PreactivationGradient!].Data;
            int dg = (int)l.OutFeatures;
            var rows = Enumerable.Range(0, g.Length / dg).Select(r => g.Skip(r * dg).Take(dg).ToArray()).ToArray();
            AssertClose(Gram(rows, dg, d), outs[l.Outputs.FactorG!].Data, $"{l.Name} G");
        }
    }

    [Fact]
    public void StatisticsWithoutTapsExposeOnlyTheFactors()
    {
        var f = Fixture.Load("mlp_opset17");
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { LayerTaps = false, SampledFisher = true, FactorStatistics = true });
        Assert.All(tg.Manifest.Layers, l => { Assert.Null(l.Outputs.Input); Assert.NotNull(l.Outputs.FactorA); Assert.NotNull(l.Outputs.FactorG); });
        Assert.DoesNotContain(tg.Manifest.Outputs, o => o.Role is TensorRole.LayerInput or TensorRole.PreactivationGradient);
        Assert.Equal(2 * tg.Manifest.Layers.Count, tg.Manifest.Outputs.Count(o => o.Role is TensorRole.FactorA or TensorRole.FactorG));
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(1.5)]
    [InlineData(double.NaN)]
    public void FractionOutsideTheUnitIntervalIsRefused(double fraction)
    {
        var e = Assert.Throws<OnnxKfacException>(() => new TrainingGraphOptions(Fixture.Load("mlp_opset17").LossOptions) { StatisticsFraction = fraction });
        Assert.Contains("statistics fraction", e.Message);
    }
}
