using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using Xunit.Abstractions;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

/// <summary>
/// Conv and ConvTranspose gradients against finite differences. ONNX Runtime's CPU build has
/// float32 kernels only for both ops; they are bilinear, so central differences are exact up
/// to rounding and a large step keeps that small.
/// </summary>
public class ConvRulesTests(ITestOutputHelper log)
{
    private const int F = 1; // float
    internal static readonly GradCheck.Options Linear = new() { Step = 0.25, Tolerance = 1e-4, MaxElementsPerInput = 64 };

    private static Dictionary<string, TestTensor> Inputs(long[] x, long[] w, long? bias = null)
    {
        var d = new Dictionary<string, TestTensor> { ["x"] = Random(F, x, 1), ["w"] = Random(F, w, 2) };
        if (bias is { } b) d["b"] = Random(F, [b], 3);
        return d;
    }

    private void Conv(long[] x, long[] w, bool bias, params AttributeProto[] attributes)
    {
        var inputs = Inputs(x, w, bias ? w[0] : null);
        RuleCheck.Op(log, "Conv", bias ? ["x", "w", "b"] : ["x", "w"], inputs, options: Linear, attributes: attributes);
    }

    [Fact]
    public void Conv2dStride2Pad1WithBias() =>
        Conv([2, 3, 5, 5], [4, 3, 3, 3], true, Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 1, 1, 1]));

    [Fact]
    public void Conv2dEvenSizeNeedsOutputPadding() =>
        // (6 + 2 − 3) / 2 leaves a remainder: the transposed conv needs output_padding 1.
        Conv([2, 2, 6, 7], [3, 2, 3, 3], true, Attributes.Ints("strides", [2, 3]), Attributes.Ints("pads", [1, 1, 1, 1]));

    [Fact]
    public void Conv2dDilation2() =>
        Conv([1, 2, 7, 6], [3, 2, 3, 2], true, Attributes.Ints("dilations", [2, 2]), Attributes.Ints("pads", [2, 1, 2, 1]));

    // Unit strides, one group: the input gradient is a Conv with the window flipped (pads d(K − 1) − p).
    [Fact]
    public void Conv2dUnitStrideAsymmetricPads() =>
        Conv([2, 3, 6, 5], [4, 3, 3, 3], true, Attributes.Ints("pads", [0, 2, 2, 0]));

    [Fact]
    public void Conv1dUnitStrideDilatedPadJustInsideTheWindow() =>
        Conv([2, 2, 9], [3, 2, 3], false, Attributes.Ints("dilations", [3]), Attributes.Ints("pads", [1, 6]));

    [Fact]
    public void Conv3dUnitStride() =>
        Conv([1, 2, 4, 4, 3], [2, 2, 2, 3, 2], true, Attributes.Ints("pads", [1, 0, 1, 0, 1, 0]));

    [Fact]
    public void Conv2dUnitStridePadsAsWideAsTheWindowKeepTheTransposedConv() =>
        Conv([1, 2, 4, 4], [2, 2, 2, 2], false, Attributes.Ints("pads", [2, 1, 2, 2]));

    [Fact]
    public void Conv2dDilationAndStride() =>
        Conv([2, 2, 9, 8], [2, 2, 3, 3], false, Attributes.Ints("dilations", [2, 3]), Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 0, 0, 2]));

    [Fact]
    public void Conv2dGroups2() =>
        Conv([2, 4, 5, 5], [6, 2, 3, 3], true, Attributes.Int("group", 2), Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 1, 1, 1]));

    [Fact]
    public void Conv2dDepthwise() =>
        Conv([2, 3, 6, 5], [3, 1, 3, 3], true, Attributes.Int("group", 3), Attributes.Ints("pads", [1, 1, 1, 1]));

    [Fact]
    public void Conv2dDepthwiseWithMultiplier() =>
        Conv([2, 3, 5, 5], [6, 1, 2, 2], false, Attributes.Int("group", 3), Attributes.Ints("strides", [2, 2]));

    [Fact]
    public void Conv2dAsymmetricPadsAndRectangularKernel() =>
        Conv([2, 2, 5, 6], [3, 2, 2, 3], true, Attributes.Ints("pads", [0, 2, 1, 0]), Attributes.Ints("strides", [1, 2]));

    [Theory]
    [InlineData("SAME_UPPER")]
    [InlineData("SAME_LOWER")]
    [InlineData("VALID")]
    public void Conv2dAutoPad(string autoPad) =>
        Conv([2, 2, 7, 6], [3, 2, 2, 3], true, Attributes.String("auto_pad", autoPad), Attributes.Ints("strides", [2, 2]));

    [Fact]
    public void Conv1dStride3OddSize() =>
        Conv([2, 3, 11], [2, 3, 4], true, Attributes.Ints("strides", [3]), Attributes.Ints("pads", [2, 1]));

    [Fact]
    public void Conv3d() =>
        Conv([1, 2, 4, 5, 3], [2, 2, 2, 3, 2], true, Attributes.Ints("strides", [2, 1, 1]), Attributes.Ints("pads", [1, 1, 0, 0, 1, 1]));

    [Fact]
    public void ConvWithKernelShapeAttribute() =>
        Conv([1, 2, 5, 5], [2, 2, 3, 3], false, Attributes.Ints("kernel_shape", [3, 3]));

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void ConvDynamicBatch(long group)
    {
        var inputs = Inputs([2, 4, 6, 5], [4, 4 / group, 3, 3], 4);
        var model = TestModels.SingleOp("Conv", 17, ["x", "w", "b"], inputs, null, 1,
            Attributes.Int("group", group), Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 0, 1, 1]));
        model.Graph.Input[0].Type.TensorType.Shape.Dim[0].ClearDimValue();
        RuleCheck.Log(log, "Conv", 17, GradCheck.Check(model, inputs, ["x", "w", "b"], Linear));
    }

    /// <summary>
    /// A grouped Conv whose weight is itself a run-time tensor with a dynamic dimension 1 (in the
    /// JVP graph's second pass: the weight-gradient Conv of the first pass, whose "weight" is dY
    /// with batch and channels swapped): the weight gradient reads that dimension at run time.
    /// </summary>
    [Fact]
    public void GroupedConvWithDynamicWeightDims()
    {
        var inputs = Inputs([2, 4, 6, 5], [6, 2, 3, 3]);
        var attrs = new[] { Attributes.Int("group", 2), Attributes.Ints("kernel_shape", [3, 3]), Attributes.Ints("pads", [1, 0, 1, 1]) };
        var model = TestModels.SingleOp("Conv", 17, ["x", "w"], inputs, null, 1, attrs);
        model.Graph.Input[1].Type.TensorType.Shape.Dim[1].DimParam = "p";
        model.Graph.Input[0].Type.TensorType.Shape.Dim[1].DimParam = "c";
        RuleCheck.Log(log, "Conv", 17, GradCheck.Check(model, inputs, ["x", "w"], Linear));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void ConvDynamicSpatialSizes(long group)
    {
        // Only the channel count is static: output_padding and the weight crop are decided at run time.
        var inputs = Inputs([2, 4, 8, 7], [4, 4 / group, 3, 2], 4);
        var model = TestModels.SingleOp("Conv", 17, ["x", "w", "b"], inputs, null, 1,
            Attributes.Int("group", group), Attributes.Ints("strides", [3, 2]), Attributes.Ints("dilations", [1, 2]), Attributes.Ints("pads", [1, 0, 2, 1]));
        foreach (int k in new[] { 0, 2, 3 }) model.Graph.Input[0].Type.TensorType.Shape.Dim[k].ClearDimValue();
        model.Graph.Output[0].Type = null;
        RuleCheck.Log(log, "Conv", 17, GradCheck.Check(model, inputs, ["x", "w", "b"], Linear));
    }

    [Fact]
    public void Conv2dGroupsDilationStrideAsymmetricPads() =>
        Conv([2, 6, 9, 8], [4, 3, 3, 2], true, Attributes.Int("group", 2), Attributes.Ints("dilations", [2, 3]),
            Attributes.Ints("strides", [2, 1]), Attributes.Ints("pads", [2, 0, 1, 3]));

    [Fact]
    public void Conv1dGroupsDilationAsymmetricPads() =>
        Conv([2, 4, 13], [6, 2, 3], true, Attributes.Int("group", 2), Attributes.Ints("dilations", [2]),
            Attributes.Ints("strides", [2]), Attributes.Ints("pads", [0, 3]));

    [Fact]
    public void Conv1dDepthwise() =>
        Conv([2, 3, 10], [3, 1, 4], false, Attributes.Int("group", 3), Attributes.Ints("pads", [2, 1]));

    // Narrow unit-stride layers with many output positions: im2col patches and a batched MatMul.

    [Fact]
    public void Conv2dPatchesPadded() =>
        Conv([2, 3, 8, 9], [4, 3, 3, 3], true, Attributes.Ints("pads", [1, 0, 1, 2]));

    [Fact]
    public void Conv2dPatchesDilated() =>
        Conv([2, 2, 12, 10], [3, 2, 3, 2], false, Attributes.Ints("dilations", [2, 3]), Attributes.Ints("pads", [2, 1, 2, 1]));

    [Fact]
    public void Conv1dPatches() =>
        Conv([2, 3, 70], [2, 3, 5], true, Attributes.Ints("pads", [2, 2]));

    // Pointwise windows: the weight gradient is a batched MatMul of dY and X.

    [Fact]
    public void Conv2dPointwise() =>
        Conv([2, 3, 4, 5], [4, 3, 1, 1], true);

    [Fact]
    public void Conv2dPointwiseGroups() =>
        Conv([2, 6, 3, 4], [4, 3, 1, 1], true, Attributes.Int("group", 2), Attributes.Ints("dilations", [2, 2]));

    [Fact]
    public void Conv2dPointwiseDepthwise() =>
        Conv([2, 3, 4, 3], [6, 1, 1, 1], false, Attributes.Int("group", 3));

    [Fact]
    public void Conv1dPointwise() =>
        Conv([2, 3, 7], [2, 3, 1], true);

    [Fact]
    public void Conv3dPointwise() =>
        Conv([2, 2, 3, 2, 3], [3, 2, 1, 1, 1], true);

    [Fact]
    public void Conv2dPointwiseStride2() =>
        Conv([2, 3, 5, 4], [4, 3, 1, 1], false, Attributes.Ints("strides", [2, 2]));

    [Fact]
    public void Conv2dPointwisePadded() =>
        Conv([2, 3, 4, 4], [2, 3, 1, 1], false, Attributes.Ints("pads", [1, 0, 0, 1]));

    [Theory]
    [InlineData(new long[] { 2, 3, 4, 5 }, new long[] { 4, 3, 1, 1 }, 1, 0, true)]
    [InlineData(new long[] { 2, 4, 7 }, new long[] { 4, 2, 1 }, 1, 0, true)]
    [InlineData(new long[] { 2, 3, 4, 5 }, new long[] { 4, 3, 1, 1 }, 2, 0, false)]
    [InlineData(new long[] { 2, 3, 4, 5 }, new long[] { 4, 3, 1, 1 }, 1, 1, false)]
    [InlineData(new long[] { 2, 3, 6, 5 }, new long[] { 4, 3, 3, 3 }, 1, 1, false)]
    // A narrow unit-stride layer with ≥ 64 output positions takes im2col patches and the MatMul ...
    [InlineData(new long[] { 2, 3, 8, 8 }, new long[] { 4, 3, 3, 3 }, 1, 1, true)]
    // ... but not strided, nor with more than 16 output channels, nor with patches over 2¹⁶ values per example.
    [InlineData(new long[] { 2, 3, 16, 16 }, new long[] { 4, 3, 3, 3 }, 2, 1, false)]
    [InlineData(new long[] { 2, 3, 8, 8 }, new long[] { 17, 3, 3, 3 }, 1, 1, false)]
    [InlineData(new long[] { 2, 32, 16, 16 }, new long[] { 4, 32, 3, 3 }, 1, 1, false)]
    public void WeightGradientIsAMatMulForPointwiseAndNarrowWindowsOnly(long[] x, long[] w, long stride, long pad, bool matMul)
    {
        int sp = x.Length - 2;
        var model = TestModels.SingleOp("Conv", 17, ["x", "w"], Inputs(x, w), null, 1, Attributes.Int("group", x[1] / w[1]),
            Attributes.Ints("strides", [.. Enumerable.Repeat(stride, sp)]), Attributes.Ints("pads", [.. Enumerable.Repeat(pad, 2 * sp)]));
        var ops = GradientGraph.Build(model, [model.Graph.Output[0].Name], ["w"]).Graph.Node.Select(n => n.OpType).ToList();
        Assert.Equal(matMul, ops.Contains("MatMul"));
        // The forward Conv, plus the weight gradient's Conv or, for a window wider than 1×1, the patches' depthwise Conv.
        Assert.Equal(matMul && w.Skip(2).All(k => k == 1) ? 1 : 2, ops.Count(o => o == "Conv"));
    }

    [Fact]
    public void ConvPointwiseUnknownWeightShapeKeepsTheConv()
    {
        var inputs = Inputs([2, 3, 4, 5], [4, 3, 1, 1], 4);
        var model = TestModels.SingleOp("Conv", 17, ["x", "w", "b"], inputs, null, 1, Attributes.Ints("kernel_shape", [1, 1]));
        model.Graph.Input[1].Type.TensorType.Shape.Dim[0].ClearDimValue();
        Assert.DoesNotContain(GradientGraph.Build(model, [model.Graph.Output[0].Name], ["w"]).Graph.Node, n => n.OpType == "MatMul");
        RuleCheck.Log(log, "Conv", 17, GradCheck.Check(model, inputs, ["x", "w", "b"], Linear));
    }

    private void ConvTranspose(long[] x, long[] w, long group, bool bias, params AttributeProto[] attributes)
    {
        var inputs = Inputs(x, w, bias ? w[1] * group : null);
        RuleCheck.Op(log, "ConvTranspose", bias ? ["x", "w", "b"] : ["x", "w"], inputs, options: Linear,
            attributes: [.. attributes, Attributes.Int("group", group)]);
    }

    [Fact]
    public void ConvTranspose2dStride2Pad1OutputPadding() =>
        ConvTranspose([2, 3, 3, 4], [3, 2, 3, 3], 1, true, Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 1, 1, 1]), Attributes.Ints("output_padding", [1, 0]));

    [Fact]
    public void ConvTranspose2dGroupsAndDilation() =>
        ConvTranspose([2, 4, 3, 3], [4, 3, 2, 3], 2, true, Attributes.Ints("dilations", [2, 2]), Attributes.Ints("strides", [2, 1]), Attributes.Ints("pads", [0, 1, 1, 0]));

    [Fact]
    public void ConvTranspose2dDepthwise() =>
        ConvTranspose([2, 3, 4, 3], [3, 1, 3, 3], 3, false, Attributes.Ints("strides", [2, 2]), Attributes.Ints("output_padding", [1, 1]));

    [Fact]
    public void ConvTransposeOutputPaddingNotBelowDilation() =>
        // output_padding 2 ≥ dilation 2 and < stride 3: the weight gradient is cropped.
        ConvTranspose([1, 2, 3], [2, 2, 2], 1, true, Attributes.Ints("strides", [3]), Attributes.Ints("dilations", [2]), Attributes.Ints("output_padding", [2]), Attributes.Ints("pads", [1, 0]));

    [Theory]
    [InlineData("NOTSET")]
    [InlineData("SAME_UPPER")]
    [InlineData("SAME_LOWER")]
    public void ConvTransposeOutputShape(string autoPad) =>
        // Output 7×6 of a full 9×8: total padding 2 and 3, split by the runtime's rule.
        ConvTranspose([2, 2, 4, 3], [2, 3, 3, 4], 1, true, Attributes.Ints("strides", [2, 2]), Attributes.Ints("output_shape", [7, 6]), Attributes.String("auto_pad", autoPad));

    [Theory]
    [InlineData("SAME_UPPER")]
    [InlineData("SAME_LOWER")]
    [InlineData("VALID")]
    public void ConvTransposeAutoPad(string autoPad) =>
        ConvTranspose([2, 2, 3, 4], [2, 2, 3, 2], 1, true, Attributes.Ints("strides", [2, 3]), Attributes.String("auto_pad", autoPad));

    [Fact]
    public void ConvTranspose1d() =>
        ConvTranspose([2, 3, 5], [3, 2, 4], 1, true, Attributes.Ints("strides", [3]), Attributes.Ints("pads", [2, 1]), Attributes.Ints("output_padding", [1]));

    [Fact]
    public void ConvTranspose3d() =>
        ConvTranspose([1, 2, 2, 3, 2], [2, 2, 2, 2, 3], 1, true, Attributes.Ints("strides", [2, 1, 2]), Attributes.Ints("pads", [0, 1, 1, 1, 0, 0]));

    [Fact]
    public void ConvTransposeDynamicBatch()
    {
        var inputs = Inputs([2, 4, 3, 3], [4, 2, 3, 3], 4);
        var model = TestModels.SingleOp("ConvTranspose", 17, ["x", "w", "b"], inputs, null, 1,
            Attributes.Int("group", 2), Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 0, 0, 1]), Attributes.Ints("output_padding", [1, 1]));
        model.Graph.Input[0].Type.TensorType.Shape.Dim[0].ClearDimValue();
        RuleCheck.Log(log, "ConvTranspose", 17, GradCheck.Check(model, inputs, ["x", "w", "b"], Linear));
    }

    [Fact]
    public void ConvTransposeDynamicSpatialSizes()
    {
        var inputs = Inputs([2, 2, 3, 4], [2, 3, 3, 2], 3);
        var model = TestModels.SingleOp("ConvTranspose", 17, ["x", "w", "b"], inputs, null, 1,
            Attributes.Ints("strides", [2, 2]), Attributes.Ints("pads", [1, 0, 0, 1]), Attributes.Ints("output_padding", [1, 1]));
        foreach (int k in new[] { 0, 2, 3 }) model.Graph.Input[0].Type.TensorType.Shape.Dim[k].ClearDimValue();
        model.Graph.Output[0].Type = null;
        RuleCheck.Log(log, "ConvTranspose", 17, GradCheck.Check(model, inputs, ["x", "w", "b"], Linear));
    }
}

/// <summary>
/// <see cref="GradCheck.Op"/> that also writes the worst finite-difference error of each
/// opset to the test output (the numbers quoted for these rules).
/// </summary>
internal static class RuleCheck
{
    public static double Op(ITestOutputHelper log, string opType, IReadOnlyList<string> inputOrder, IReadOnlyDictionary<string, TestTensor> inputs,
        IReadOnlyDictionary<string, TestTensor>? constants = null, int[]? opsets = null, int outputs = 1,
        IReadOnlyList<string>? wrt = null, GradCheck.Options? options = null, params AttributeProto[] attributes)
    {
        double worst = 0;
        foreach (int opset in opsets ?? [13, 17, 20])
        {
            var model = TestModels.SingleOp(opType, opset, inputOrder, inputs, constants, outputs, attributes);
            var names = wrt ?? inputs.Where(kv => kv.Value.ElemType is (int)TensorProto.Types.DataType.Float or (int)TensorProto.Types.DataType.Double).Select(kv => kv.Key).ToArray();
            worst = Math.Max(worst, Log(log, opType, opset, GradCheck.Check(model, inputs, names, options)));
        }
        return worst;
    }

    public static double Log(ITestOutputHelper log, string opType, int opset, double worst)
    {
        log.WriteLine(FormattableString.Invariant($"FD {opType} opset {opset}: worst relative error {worst:G3}"));
        return worst;
    }
}
