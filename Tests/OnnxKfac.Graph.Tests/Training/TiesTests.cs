using System.Text.Json;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Graph.Tests.Training;

/// <summary>
/// Ties the exporter breaks (tied_folded: the output projection reads a folded transposed copy
/// of the embedding) or invents (encoder_merged: a fresh nn.TransformerEncoder whose deep-copied
/// layers come out sharing initializers), module-path globs and single-element parameters.
/// </summary>
public class TiesTests
{
    [Fact]
    public void DetectsTheTransposedCopyOfATiedEmbeddingAndNothingInUntiedModels()
    {
        var f = Fixture.Load("tied_folded_opset13");
        var report = Ties.Detect(f.Model);
        Assert.Equal(new BrokenTie("onnx::MatMul_24", "emb.weight", Transposed: true), Assert.Single(report.Broken));
        Assert.Empty(report.Merged);
        foreach (var name in new[] { "tied_opset17", "transformer_opset17", "mlp_opset13", "resnet_opset17" })
        {
            var r = Ties.Detect(Fixture.Load(name).Model);
            Assert.True(r.Broken.Count == 0 && r.Merged.Count == 0, $"{name}: {r}");
        }
    }

    [Fact]
    public void KeptTieTrainsOneParameterThroughATransposeWithPyTorchsGradientAndAKfacLayerPerUse()
    {
        var f = Fixture.Load("tied_folded_opset17");
        string copy = Assert.Single(Ties.Detect(f.Model).Broken).Copy;
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions));
        Assert.DoesNotContain(tg.Manifest.Parameters, p => p.Name == copy);
        var emb = Assert.Single(tg.Manifest.Parameters, p => p.Name == "emb.weight");
        // Both uses are layers of the one weight (embedding and dense through the Transpose), so K-FAC sees the tie.
        Assert.Equal(["dense", "embedding"], tg.Manifest.Layers.Where(l => l.Weight == "emb.weight").Select(l => l.Kind.ToString().ToLowerInvariant()).Order());
        Assert.True(tg.Manifest.Layers.Single(l => l.Weight == "emb.weight" && l.Kind == Layers.LayerKind.Dense).WeightTransposed);

        using var ort = new Ort(tg.Model);
        var outputs = ort.Run(new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target });
        // PyTorch's gradient of the tied weight: the sum of the partials through Gather and (transposed back) MatMul.
        var expected = FixtureGradientTests.TiedGradients(f)["emb.weight"].Data;
        var partial = f.Gradients["emb.weight"].Data;
        var got = outputs[emb.Gradient].Data;
        double scale = expected.Max(Math.Abs);
        Assert.True(expected.Zip(got, (a, b) => Math.Abs(a - b)).Max() <= 1e-4 * scale);
        Assert.True(expected.Zip(partial, (a, b) => Math.Abs(a - b)).Max() > 0.1 * scale, "the MatMul use contributes");

        // --untie leaves the tie broken: two parameters, each its own partial derivative.
        var apart = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { Untie = [copy] });
        Assert.Contains(apart.Manifest.Parameters, p => p.Name == copy);
    }

    [Fact]
    public void TheRewrittenModelComputesTheSameOutputAndRewritingItAgainChangesNothing()
    {
        var f = Fixture.Load("tied_folded_opset13");
        var tied = Ties.Apply(f.Model, []);
        Assert.DoesNotContain(tied.Graph.Initializer, t => t.Name == "onnx::MatMul_24");
        Assert.Single(tied.Graph.Node, n => n.OpType == "Transpose" && n.Input[0] == "emb.weight" && n.Output[0] == "onnx::MatMul_24");
        using var a = new Ort(f.Model);
        using var b = new Ort(tied);
        Assert.Equal(a.Run(f.Inputs)[f.Output].Data, b.Run(f.Inputs)[f.Output].Data);
        Assert.Same(tied, Ties.Apply(tied, []));

        var merged = Fixture.Load("encoder_merged_opset17").Model;
        var split = Ties.Apply(merged, ["*"]);
        // The split copies are equal initializers now; the model's mark keeps a later Apply from tying them again.
        var again = Ties.Apply(split, []);
        Assert.Equal(split.Graph.Initializer.Select(t => t.Name), again.Graph.Initializer.Select(t => t.Name));
        Assert.Equal(split.Graph.Node.Count, again.Graph.Node.Count);
    }

    [Fact]
    public void MergedLayersOfAFreshTransformerEncoderAreReportedAndTrainTiedByDefault()
    {
        var f = Fixture.Load("encoder_merged_opset17");
        var merged = Ties.Detect(f.Model).Merged;
        var inProj = Assert.Single(merged, m => m.Other("encoder.layers.1.self_attn") && m.Name.StartsWith("onnx::MatMul", StringComparison.Ordinal));
        Assert.Equal("encoder.layers.0.self_attn", inProj.Module);
        Assert.Contains(merged, m => m.Name == "encoder.layers.0.linear1.bias" && m.Copies.SequenceEqual(["encoder.layers.1.linear1.bias"]));
        // The default: one parameter per merged initializer, the gradient PyTorch's sum over the merged parameters
        // (checked for every parameter by FixtureGradientTests); the 1-element head bias is one of them.
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions));
        Assert.Equal(11, tg.Manifest.Parameters.Count);
        Assert.Contains(tg.Manifest.Parameters, p => p.Name == "head.bias" && p.Shape.SequenceEqual([1L]));
    }

    [Fact]
    public void UntieGivesEveryLayerItsOwnCopyWithPyTorchsGradient()
    {
        var f = Fixture.Load("encoder_merged_opset17");
        var untied = Untied(f);
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { Untie = ["*"] });
        Assert.Equal(untied.Keys.Order(StringComparer.Ordinal), tg.Manifest.Parameters.Select(p => p.Name).Order(StringComparer.Ordinal));
        Assert.All(tg.Manifest.Parameters, p => Assert.Equal(1, p.Uses));
        using var ort = new Ort(tg.Model);
        var outputs = ort.Run(new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target });
        Assert.True(Math.Abs(outputs[tg.Manifest.Loss.Loss].Data[0] - f.Loss) <= 1e-5 * f.Loss);
        foreach (var p in tg.Manifest.Parameters)
        {
            var reference = untied[p.Name].Data;
            var got = outputs[p.Gradient].Data;
            double err = reference.Zip(got, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(err <= 1e-4 * Math.Max(reference.Max(Math.Abs), 1e-3), $"gradient of '{p.Name}': max abs error {err:G3}");
        }
        // Layer 1's copies differ in gradient from layer 0's, so they will train apart.
        Assert.NotEqual(untied["encoder.layers.0.linear1.bias"].Data, untied["encoder.layers.1.linear1.bias"].Data);
        // Only the matched tie is split.
        var one = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { Untie = ["encoder.layers.1.linear1.*"] });
        Assert.Contains(one.Manifest.Parameters, p => p.Name == "encoder.layers.1.linear1.bias");
        Assert.DoesNotContain(one.Manifest.Parameters, p => p.Name == "encoder.layers.1.linear2.bias");
        var error = Assert.Throws<OnnxKfacException>(() => TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { Untie = ["head.*"] }));
        Assert.Contains("--untie 'head.*' matches no tied initializer", error.Message);
    }

    [Fact]
    public void GlobsByModulePathSelectWeightsTheExporterRenamed()
    {
        var f = Fixture.Load("transformer_opset17");
        var all = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions)).Manifest.Parameters;
        var ff1 = Assert.Single(all, p => p.Name == "onnx::MatMul_138");
        Assert.Equal(["ff1.weight"], ff1.Names);
        var frozen = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { Frozen = ["ff1.*", "attn.*"] }).Manifest;
        Assert.DoesNotContain(frozen.Parameters, p => p.Name is "onnx::MatMul_138" or "ff1.bias" or "onnx::MatMul_137" or "attn.in_proj_bias");
        Assert.Contains(frozen.Excluded, e => e.Name == "onnx::MatMul_138" && e.Reason == "frozen by 'ff1.*'");
        Assert.Empty(frozen.Warnings);
        var trainable = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { Trainable = ["ff*"] }).Manifest;
        Assert.Equal(["ff1.bias", "ff2.bias", "onnx::MatMul_138", "onnx::MatMul_139"], trainable.Parameters.Select(p => p.Name).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void APatternThatTakesPartOfAModuleSaysWhichTensorsItLeavesOut()
    {
        var f = Fixture.Load("transformer_opset17");
        var m = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { Frozen = ["ff1.bias", "head.*"] }).Manifest;
        var w = Assert.Single(m.Warnings);
        Assert.Equal("pattern 'ff1.bias' matches only part of module 'ff1': it leaves out onnx::MatMul_138", w);
    }

    [Fact]
    public void ASingleElementParameterTrainsButAnExporterConstantDoesNot()
    {
        // A Linear(4, 1) head: y = x Wᵀ + b with b of one element; plus a folded scalar constant.
        var nodes = new[]
        {
            new NodeProto { OpType = "Gemm", Name = "/head/Gemm", Input = { "x", "head.weight", "head.bias" }, Output = { "z" }, Attribute = { Attributes.Int("transB", 1) } },
            new NodeProto { OpType = "Mul", Name = "/Mul", Input = { "z", "onnx::Mul_7" }, Output = { "y" } },
        };
        var model = TestModels.Graph(17, nodes, new Dictionary<string, TestTensor> { ["x"] = TestTensor.Random(1, [3, 4], 1) },
            new Dictionary<string, TestTensor>
            {
                ["head.weight"] = TestTensor.Random(1, [1, 4], 2), ["head.bias"] = TestTensor.Float([1], [0.5]), ["onnx::Mul_7"] = TestTensor.Float([], [2]),
            }, ["y"]);
        var tg = TrainingGraphBuilder.Build(model, new TrainingGraphOptions(new LossOptions(LossKind.Mse)));
        Assert.Equal(["head.bias", "head.weight"], tg.Manifest.Parameters.Select(p => p.Name).Order(StringComparer.Ordinal));
        Assert.Equal("single-element exporter constant", Assert.Single(tg.Manifest.Excluded).Reason);
        // d mean((2(xWᵀ+b) - t)²) / db = mean(4 (2z - t)).
        var x = TestTensor.Random(1, [3, 4], 1);
        var t = TestTensor.Random(1, [3, 1], 9);
        using var ort = new Ort(tg.Model);
        var o = ort.Run(new Dictionary<string, TestTensor> { ["x"] = x, [tg.Manifest.Loss.Target] = t });
        var w = model.Graph.Initializer.First(i => i.Name == "head.weight");
        var wv = TensorData.ToFloats(w);
        double expected = Enumerable.Range(0, 3).Select(i => 4 * (2 * (Enumerable.Range(0, 4).Sum(j => (double)(float)x.Data[i * 4 + j] * wv[j]) + 0.5) - (float)t.Data[i])).Average();
        double got = o[tg.Manifest.Parameters.Single(p => p.Name == "head.bias").Gradient].Data[0];
        Assert.True(Math.Abs(got - expected) <= 1e-5 * Math.Abs(expected), $"{got} vs {expected}");
    }

    /// <summary>The fixture's per-copy (untied) PyTorch gradients.</summary>
    private static Dictionary<string, TestTensor> Untied(Fixture f)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(f.Dir, "reference.json")));
        var result = new Dictionary<string, TestTensor>(StringComparer.Ordinal);
        foreach (var p in doc.RootElement.GetProperty("gradients_untied").EnumerateObject())
            result[p.Name] = TestTensor.FromProto(TensorProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(f.Dir, p.Value.GetString()!))));
        return result;
    }
}

internal static class MergedTieExtensions
{
    public static bool Other(this MergedTie m, string module) => m.OtherModules.Contains(module);
}
