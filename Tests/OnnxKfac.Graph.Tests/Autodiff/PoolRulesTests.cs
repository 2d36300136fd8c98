using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using Xunit.Abstractions;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

/// <summary>
/// Pooling gradients against finite differences. MaxPool runs in float64 on the CPU build
/// (random inputs have no ties at the step used); AveragePool and the global pools are
/// float32 only and linear (or piecewise linear), so a large step keeps rounding small.
/// </summary>
public class PoolRulesTests(ITestOutputHelper log)
{
    private const int D = 11, F = 1;
    private static readonly GradCheck.Options Linear = ConvRulesTests.Linear;

    private static Dictionary<string, TestTensor> X(int type, long[] shape) => new() { ["x"] = Random(type, shape, 1) };

    [Fact]
    public void MaxPoolIndicesAreFlatOverBatchChannelsAndUnpaddedInput()
    {
        // The convention the rule relies on: Indices count over N·C·H·W of the unpadded input.
        var x = Double([2, 2, 2, 3], Enumerable.Range(0, 24).Select(i => (double)((i * 7) % 24)).ToArray());
        var model = TestModels.SingleOp("MaxPool", 17, ["x"], new Dictionary<string, TestTensor> { ["x"] = x }, null, 2,
            Attributes.Ints("kernel_shape", [2, 2]), Attributes.Ints("pads", [1, 1, 1, 0]), Attributes.Ints("strides", [2, 2]));
        using var ort = new Ort(model);
        var r = ort.Run(new Dictionary<string, TestTensor> { ["x"] = x }, ["y0", "y1"]);
        Assert.Equal([2L, 2, 2, 2], r["y1"].Shape);
        for (int p = 0; p < 4; p++) // each (n, c) plane of 6: windows over rows {pad,0}/{1,pad} and cols {pad,0}/{1,2}
        {
            int b = 6 * p;
            var v = x.Data;
            long Arg(params int[] cand) => b + cand.OrderByDescending(i => v[b + i]).First();
            long[] expected = [Arg(0), Arg(1, 2), Arg(3), Arg(4, 5)];
            Assert.Equal(expected, r["y1"].Data.Skip(4 * p).Take(4).Select(d => (long)d).ToArray());
            Assert.Equal(expected.Select(i => v[i]).ToArray(), r["y0"].Data.Skip(4 * p).Take(4).ToArray());
        }
    }

    [Fact]
    public void MaxPoolOverlappingWindows() =>
        RuleCheck.Op(log, "MaxPool", ["x"], X(D, [2, 3, 5, 5]), attributes: [Attributes.Ints("kernel_shape", [3, 3]), Attributes.Ints("pads", [1, 1, 1, 1])]);

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void MaxPoolStride2Pad1(int ceil) =>
        RuleCheck.Op(log, "MaxPool", ["x"], X(D, [2, 2, 6, 7]), attributes:
            [Attributes.Ints("kernel_shape", [3, 3]), Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 1, 1, 1]), Attributes.Int("ceil_mode", ceil)]);

    [Fact]
    public void MaxPoolCeilModeDropsWindowStartingInPadding() =>
        // Ceil mode would start a third window at 6 ≥ 4 + 1; the runtime drops it.
        RuleCheck.Op(log, "MaxPool", ["x"], X(D, [1, 2, 4, 5]), attributes:
            [Attributes.Ints("kernel_shape", [2, 2]), Attributes.Ints("strides", [3, 3]), Attributes.Ints("pads", [1, 1, 1, 1]), Attributes.Int("ceil_mode", 1)]);

    [Fact]
    public void MaxPoolDilation2AsymmetricPads() =>
        RuleCheck.Op(log, "MaxPool", ["x"], X(D, [2, 2, 7, 6]), attributes:
            [Attributes.Ints("kernel_shape", [2, 3]), Attributes.Ints("dilations", [2, 2]), Attributes.Ints("pads", [1, 0, 0, 2])]);

    [Theory]
    [InlineData("SAME_UPPER")]
    [InlineData("SAME_LOWER")]
    [InlineData("VALID")]
    public void MaxPoolAutoPad(string autoPad) =>
        RuleCheck.Op(log, "MaxPool", ["x"], X(D, [2, 2, 5, 6]), attributes:
            [Attributes.Ints("kernel_shape", [2, 3]), Attributes.Ints("strides", [2, 2]), Attributes.String("auto_pad", autoPad)]);

    [Fact]
    public void MaxPool1dAnd3d()
    {
        RuleCheck.Op(log, "MaxPool", ["x"], X(D, [2, 3, 9]), attributes: [Attributes.Ints("kernel_shape", [3]), Attributes.Ints("strides", [2]), Attributes.Ints("pads", [1, 0])]);
        RuleCheck.Op(log, "MaxPool", ["x"], X(D, [1, 2, 4, 3, 5]), attributes: [Attributes.Ints("kernel_shape", [2, 2, 2]), Attributes.Ints("strides", [2, 1, 2])]);
    }

    [Fact]
    public void MaxPoolDynamicBatch()
    {
        var inputs = X(D, [3, 2, 5, 5]);
        var model = TestModels.SingleOp("MaxPool", 17, ["x"], inputs, null, 1, Attributes.Ints("kernel_shape", [3, 3]), Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 1, 1, 1]));
        model.Graph.Input[0].Type.TensorType.Shape.Dim[0].ClearDimValue();
        RuleCheck.Log(log, "MaxPool", 17, GradCheck.Check(model, inputs, ["x"]));
    }

    [Fact]
    public void MaxPoolColumnMajorIndicesAreRejected()
    {
        var model = TestModels.SingleOp("MaxPool", 17, ["x"], X(D, [1, 1, 4, 4]), null, 1, Attributes.Ints("kernel_shape", [2, 2]), Attributes.Int("storage_order", 1));
        var e = Assert.Throws<UnsupportedOpException>(() => GradientGraph.Build(model, ["y0"], ["x"]));
        Assert.Contains("maxpool0", e.Message);
        Assert.Contains("storage_order", e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void AveragePoolStride2Pad1(int countIncludePad) =>
        RuleCheck.Op(log, "AveragePool", ["x"], X(F, [2, 3, 5, 6]), options: Linear, attributes:
            [Attributes.Ints("kernel_shape", [3, 3]), Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 1, 1, 1]), Attributes.Int("count_include_pad", countIncludePad)]);

    [Theory]
    [InlineData(0, 0)]
    [InlineData(1, 0)]
    [InlineData(0, 1)]
    [InlineData(1, 1)]
    public void AveragePoolCeilModeOverhang(int countIncludePad, int pad) =>
        // 6 + pads − 3 is odd: the last ceil-mode window overhangs the (padded) input and
        // the runtime divides it by the clipped count.
        RuleCheck.Op(log, "AveragePool", ["x"], X(F, [2, 2, 6, 7]), options: Linear, attributes:
            [Attributes.Ints("kernel_shape", [3, 2]), Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [pad, 0, 0, pad]),
             Attributes.Int("ceil_mode", 1), Attributes.Int("count_include_pad", countIncludePad)]);

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void AveragePoolCeilModeDropsWindowStartingInPadding(int countIncludePad) =>
        RuleCheck.Op(log, "AveragePool", ["x"], X(F, [1, 2, 4, 6]), options: Linear, attributes:
            [Attributes.Ints("kernel_shape", [2, 3]), Attributes.Ints("strides", [3, 2]), Attributes.Ints("pads", [1, 2, 1, 0]),
             Attributes.Int("ceil_mode", 1), Attributes.Int("count_include_pad", countIncludePad)]);

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void AveragePoolDilations(int countIncludePad) =>
        // dilations on AveragePool are opset 19+.
        RuleCheck.Op(log, "AveragePool", ["x"], X(F, [2, 2, 7, 6]), opsets: [19, 20], options: Linear, attributes:
            [Attributes.Ints("kernel_shape", [2, 3]), Attributes.Ints("dilations", [2, 2]), Attributes.Ints("strides", [1, 2]), Attributes.Ints("pads", [1, 2, 1, 0]),
             Attributes.Int("count_include_pad", countIncludePad)]);

    [Theory]
    [InlineData("SAME_UPPER", 0)]
    [InlineData("SAME_LOWER", 0)]
    [InlineData("SAME_UPPER", 1)]
    [InlineData("SAME_LOWER", 1)]
    [InlineData("VALID", 0)]
    public void AveragePoolAutoPad(string autoPad, int countIncludePad) =>
        RuleCheck.Op(log, "AveragePool", ["x"], X(F, [2, 2, 7, 6]), options: Linear, attributes:
            [Attributes.Ints("kernel_shape", [3, 3]), Attributes.Ints("strides", [2, 2]), Attributes.String("auto_pad", autoPad), Attributes.Int("count_include_pad", countIncludePad)]);

    [Fact]
    public void AveragePool1dAnd3d()
    {
        RuleCheck.Op(log, "AveragePool", ["x"], X(F, [2, 3, 9]), options: Linear, attributes: [Attributes.Ints("kernel_shape", [3]), Attributes.Ints("strides", [2]), Attributes.Ints("pads", [1, 2])]);
        RuleCheck.Op(log, "AveragePool", ["x"], X(F, [1, 2, 4, 3, 5]), options: Linear, attributes:
            [Attributes.Ints("kernel_shape", [2, 2, 3]), Attributes.Ints("strides", [2, 1, 2]), Attributes.Ints("pads", [1, 0, 1, 0, 1, 1])]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AveragePoolDynamicShapes(bool dynamicSpatial)
    {
        var inputs = X(F, [3, 2, 7, 6]);
        var model = TestModels.SingleOp("AveragePool", 17, ["x"], inputs, null, 1,
            Attributes.Ints("kernel_shape", [3, 3]), Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 0, 1, 1]));
        foreach (int k in dynamicSpatial ? new[] { 0, 2, 3 } : [0]) model.Graph.Input[0].Type.TensorType.Shape.Dim[k].ClearDimValue();
        if (dynamicSpatial) model.Graph.Output[0].Type = null;
        RuleCheck.Log(log, "AveragePool", 17, GradCheck.Check(model, inputs, ["x"], Linear));
    }

    [Fact]
    public void GlobalAveragePool()
    {
        RuleCheck.Op(log, "GlobalAveragePool", ["x"], X(F, [2, 3, 4, 5]), options: Linear);
        RuleCheck.Op(log, "GlobalAveragePool", ["x"], X(F, [2, 3, 7]), options: Linear);
    }

    [Fact]
    public void GlobalAveragePoolDynamicSpatial()
    {
        var inputs = X(F, [2, 3, 4, 5]);
        var model = TestModels.SingleOp("GlobalAveragePool", 17, ["x"], inputs, null, 1);
        foreach (int k in new[] { 0, 2, 3 }) model.Graph.Input[0].Type.TensorType.Shape.Dim[k].ClearDimValue();
        RuleCheck.Log(log, "GlobalAveragePool", 17, GradCheck.Check(model, inputs, ["x"], Linear));
    }

    [Fact]
    public void GlobalMaxPool()
    {
        // Values on a 0.05 grid, shuffled: no two within the step of each other.
        var rng = new Random(3);
        var data = Enumerable.Range(0, 2 * 3 * 4 * 5).Select(i => (i - 60) * 0.05).OrderBy(_ => rng.Next()).ToArray();
        RuleCheck.Op(log, "GlobalMaxPool", ["x"], new Dictionary<string, TestTensor> { ["x"] = Float([2, 3, 4, 5], data) },
            options: new GradCheck.Options { Step = 1e-2, Tolerance = 1e-4, MaxElementsPerInput = 120 });
    }
}
