using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Tests.Support;
using Xunit.Abstractions;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

/// <summary>
/// Normalisation gradients against finite differences: BatchNormalization and
/// LayerNormalization run in float64 on the CPU build, InstanceNormalization in float32 only.
/// </summary>
public class NormalizationRulesTests(ITestOutputHelper log)
{
    private const int D = 11, F = 1;
    private static readonly GradCheck.Options Float = new() { Step = 3e-3, Tolerance = 1e-3 };

    private static (Dictionary<string, TestTensor> Inputs, Dictionary<string, TestTensor> Stats) BatchNormInputs(int type, long[] x)
    {
        long c = x[1];
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(type, x, 1), ["scale"] = Random(type, [c], 2, 0.5, 1.5), ["b"] = Random(type, [c], 3) };
        var stats = new Dictionary<string, TestTensor> { ["mean"] = Random(type, [c], 4), ["var"] = Random(type, [c], 5, 0.2, 2) };
        return (inputs, stats);
    }

    [Theory]
    [InlineData(new long[] { 2, 3, 4, 5 })]
    [InlineData(new long[] { 4, 3 })]
    [InlineData(new long[] { 2, 3, 5 })]
    [InlineData(new long[] { 1, 2, 2, 3, 2 })]
    public void BatchNormalizationInference(long[] shape)
    {
        var (inputs, stats) = BatchNormInputs(D, shape);
        RuleCheck.Op(log, "BatchNormalization", ["x", "scale", "b", "mean", "var"], inputs, stats, attributes: Attributes.Float("epsilon", 1e-3f));
    }

    [Fact]
    public void BatchNormalizationFloatAndDynamicBatch()
    {
        var (inputs, stats) = BatchNormInputs(F, [3, 2, 4, 3]);
        RuleCheck.Op(log, "BatchNormalization", ["x", "scale", "b", "mean", "var"], inputs, stats, options: Float);
        var (dInputs, dStats) = BatchNormInputs(D, [3, 2, 4, 3]);
        var model = TestModels.SingleOp("BatchNormalization", 17, ["x", "scale", "b", "mean", "var"], dInputs, dStats);
        model.Graph.Input[0].Type.TensorType.Shape.Dim[0].ClearDimValue();
        RuleCheck.Log(log, "BatchNormalization", 17, GradCheck.Check(model, dInputs, ["x", "scale", "b"]));
    }

    [Fact]
    public void BatchNormalizationStatisticsAreNotDifferentiated()
    {
        // Mean and var fed as graph inputs: a gradient is asked for but none flows (zeros).
        var (inputs, stats) = BatchNormInputs(D, [2, 3, 4]);
        foreach (var (k, v) in stats) inputs[k] = v;
        var model = TestModels.SingleOp("BatchNormalization", 17, ["x", "scale", "b", "mean", "var"], inputs);
        var grad = GradientGraph.Build(model, ["y0"], ["x", "mean"]);
        using var ort = new Ort(grad);
        var feed = new Dictionary<string, TestTensor>(inputs) { ["y0_seed"] = Random(D, [2, 3, 4], 9) };
        Assert.All(ort.Run(feed, ["mean_grad"])["mean_grad"].Data, v => Assert.Equal(0.0, v));
    }

    [Fact]
    public void BatchNormalizationTrainingModeIsRejected()
    {
        var (inputs, stats) = BatchNormInputs(D, [2, 3, 4]);
        var model = TestModels.SingleOp("BatchNormalization", 17, ["x", "scale", "b", "mean", "var"], inputs, stats, 1, Attributes.Int("training_mode", 1));
        var e = Assert.Throws<UnsupportedOpException>(() => GradientGraph.Build(model, ["y0"], ["x"]));
        Assert.Contains("batchnormalization0", e.Message);
        Assert.Contains("training_mode", e.Message);
    }

    private static Dictionary<string, TestTensor> LayerNormInputs(int type, long[] x, long[] param, bool bias)
    {
        var d = new Dictionary<string, TestTensor> { ["x"] = Random(type, x, 1, -2, 2), ["scale"] = Random(type, param, 2, 0.5, 1.5) };
        if (bias) d["b"] = Random(type, param, 3);
        return d;
    }

    [Theory]
    [InlineData(-1, new long[] { 2, 3, 5 }, new long[] { 5 })]
    [InlineData(1, new long[] { 2, 3, 4 }, new long[] { 3, 4 })]
    [InlineData(0, new long[] { 3, 4 }, new long[] { 3, 4 })]
    [InlineData(2, new long[] { 2, 2, 3, 4 }, new long[] { 3, 4 })]
    public void LayerNormalizationDouble(int axis, long[] x, long[] param)
    {
        // float64 X: the statistics are recomputed in float64 (the op stashes them in float32).
        RuleCheck.Op(log, "LayerNormalization", ["x", "scale", "b"], LayerNormInputs(D, x, param, true), opsets: [17, 20],
            attributes: [Attributes.Int("axis", axis), Attributes.Float("epsilon", 1e-3f)]);
    }

    [Theory]
    [InlineData(-1, new long[] { 2, 3, 6 }, new long[] { 6 })]
    [InlineData(-2, new long[] { 2, 3, 4 }, new long[] { 3, 4 })]
    public void LayerNormalizationFloatUsesForwardStatistics(int axis, long[] x, long[] param)
    {
        var inputs = LayerNormInputs(F, x, param, true);
        RuleCheck.Op(log, "LayerNormalization", ["x", "scale", "b"], inputs, opsets: [17, 20], options: Float, attributes: Attributes.Int("axis", axis));
        var grad = GradientGraph.Build(TestModels.SingleOp("LayerNormalization", 17, ["x", "scale", "b"], inputs, null, 1, Attributes.Int("axis", axis)), ["y0"], ["x"]);
        var node = grad.Graph.Node.Single(n => n.OpType == "LayerNormalization");
        Assert.Equal(3, node.Output.Count(o => o.Length > 0)); // Mean and InvStdDev requested
    }

    [Fact]
    public void LayerNormalizationWithoutBiasAndDynamicBatch()
    {
        RuleCheck.Op(log, "LayerNormalization", ["x", "scale"], LayerNormInputs(D, [3, 4], [4], false), opsets: [17, 20]);
        var inputs = LayerNormInputs(D, [3, 2, 5], [5], true);
        var model = TestModels.SingleOp("LayerNormalization", 17, ["x", "scale", "b"], inputs);
        model.Graph.Input[0].Type.TensorType.Shape.Dim[0].ClearDimValue();
        RuleCheck.Log(log, "LayerNormalization", 17, GradCheck.Check(model, inputs, ["x", "scale", "b"]));
    }

    [Fact]
    public void LayerNormalizationGradientIntoStatisticsIsRejected()
    {
        var model = TestModels.SingleOp("LayerNormalization", 17, ["x", "scale"], LayerNormInputs(F, [2, 4], [4], false), null, 3);
        var e = Assert.Throws<UnsupportedOpException>(() => GradientGraph.Build(model, ["y0", "y2"], ["x"]));
        Assert.Contains("layernormalization0", e.Message);
        Assert.Contains("InvStdDev", e.Message);
    }

    [Theory]
    [InlineData(new long[] { 2, 3, 4, 5 })]
    [InlineData(new long[] { 2, 3, 7 })]
    public void InstanceNormalization(long[] x)
    {
        var inputs = new Dictionary<string, TestTensor>
        {
            ["x"] = Random(F, x, 1, -2, 2), ["scale"] = Random(F, [x[1]], 2, 0.5, 1.5), ["b"] = Random(F, [x[1]], 3),
        };
        RuleCheck.Op(log, "InstanceNormalization", ["x", "scale", "b"], inputs, options: Float, attributes: Attributes.Float("epsilon", 1e-3f));
    }
}
