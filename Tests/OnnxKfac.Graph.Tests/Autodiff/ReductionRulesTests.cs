using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

public class ReductionRulesTests
{
    private const int D = 11; // double
    private static readonly int[] Opsets = [13, 17, 18, 20];

    /// <summary>
    /// One reduction node in the form of its opset: axes as an attribute before the op took
    /// them as an input (ReduceSum at 13, the others at 18), as a constant input after.
    /// <paramref name="axes"/> null leaves them out; noop_with_empty_axes is set only where it exists.
    /// </summary>
    private static ModelProto Reduce(string op, int opset, TestTensor x, long[]? axes, int keepdims, int? noop = null)
    {
        int since = op == "ReduceSum" ? 13 : 18;
        var attrs = new List<AttributeProto> { Attributes.Int("keepdims", keepdims) };
        var order = new List<string> { "x" };
        var constants = new Dictionary<string, TestTensor>();
        if (axes is not null && opset < since) attrs.Add(Attributes.Ints("axes", axes));
        else if (axes is not null) { order.Add("axes"); constants["axes"] = Int64([axes.Length], axes); }
        if (noop is { } n) attrs.Add(Attributes.Int("noop_with_empty_axes", n));
        return TestModels.SingleOp(op, opset, order, new Dictionary<string, TestTensor> { ["x"] = x }, constants, 1, attrs.ToArray());
    }

    private static void CheckAll(string op, TestTensor x, long[]? axes, int keepdims, int[]? opsets = null, int? noop = null)
    {
        foreach (int opset in opsets ?? Opsets)
            GradCheck.Check(Reduce(op, opset, x, axes, keepdims, noop), new Dictionary<string, TestTensor> { ["x"] = x }, ["x"]);
    }

    public static TheoryData<string> Ops => new()
    {
        "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    };

    private static TestTensor Input(string op, long[] shape) =>
        op == "ReduceLogSum" ? Random(D, shape, 1, 0.5, 2) : Random(D, shape, 1);

    [Theory]
    [MemberData(nameof(Ops))]
    public void AxesAndKeepDims(string op)
    {
        var x = Input(op, [2, 3, 4]);
        foreach (int keep in new[] { 0, 1 })
        {
            CheckAll(op, x, [1], keep);
            CheckAll(op, x, [-1, 0], keep);  // negative and unsorted
            CheckAll(op, x, [0, 1, 2], keep);
            CheckAll(op, x, null, keep);     // no axes: every axis
        }
    }

    [Theory]
    [InlineData("ReduceSum")]
    [InlineData("ReduceMean")]
    [InlineData("ReduceMax")]
    public void NoopWithEmptyAxes(string op)
    {
        var x = Input(op, [2, 3]);
        int[] opsets = op == "ReduceSum" ? [13, 17, 20] : [18, 20];
        foreach (int keep in new[] { 0, 1 })
        {
            CheckAll(op, x, null, keep, opsets, noop: 1);            // identity
            CheckAll(op, x, [], keep, opsets, noop: 1);              // empty axes input: identity
            CheckAll(op, x, [], keep, opsets, noop: 0);              // empty axes input: every axis
        }
    }

    [Theory]
    [InlineData("ReduceSum", 0)]
    [InlineData("ReduceSum", 1)]
    [InlineData("ReduceMean", 0)]
    [InlineData("ReduceMax", 0)]
    [InlineData("ReduceL2", 1)]
    public void DynamicBatchAndRuntimeAxes(string op, int keepdims)
    {
        // The count of a mean and the shape to expand to come from the run-time shapes;
        // the axes are fed at run time, so the rule cannot read them statically.
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(D, [3, 2, 4], 1), ["axes"] = Int64([2], -1, 1) };
        var model = TestModels.SingleOp(op, 18, ["x", "axes"], inputs, attributes: Attributes.Int("keepdims", keepdims));
        ShapeRulesTests.Dynamic(model, "x", 0);
        GradCheck.Check(model, inputs, ["x"]);
        var fixedAxes = new Dictionary<string, TestTensor> { ["x"] = inputs["x"] };
        var model2 = TestModels.SingleOp(op, 18, ["x", "axes"], fixedAxes, new Dictionary<string, TestTensor> { ["axes"] = Int64([1], 0) },
            1, Attributes.Int("keepdims", keepdims));
        ShapeRulesTests.Dynamic(model2, "x", 0, 2);
        GradCheck.Check(model2, fixedAxes, ["x"]);
    }

    [Fact]
    public void MaxTiesShareTheGradientEvenly()
    {
        var x = Double([2, 3], [1, 5, 5, 2, 2, 2]);
        var model = Reduce("ReduceMax", 18, x, [1], 0);
        using var ort = new Ort(GradientGraph.Build(model, ["y0"], ["x"]));
        var g = ort.Run(new Dictionary<string, TestTensor> { ["x"] = x, ["y0_seed"] = Double([2], [1, 3]) }, ["x_grad"])["x_grad"];
        Assert.Equal([0, 0.5, 0.5, 1, 1, 1], g.Data);
    }

    [Fact]
    public void L2AtZeroNormGivesZero()
    {
        var x = Double([2, 2], [0, 0, 3, 4]);
        var model = Reduce("ReduceL2", 18, x, [1], 1);
        using var ort = new Ort(GradientGraph.Build(model, ["y0"], ["x"]));
        var g = ort.Run(new Dictionary<string, TestTensor> { ["x"] = x, ["y0_seed"] = Double([2, 1], [1, 1]) }, ["x_grad"])["x_grad"];
        Assert.Equal([0, 0, 0.6, 0.8], g.Data, (a, b) => Math.Abs(a - b) < 1e-12);
    }

    [Fact]
    public void FloatMeanOverLargeAxis()
    {
        var x = Random(1, [4, 64], 3);
        foreach (int opset in new[] { 13, 20 })
            GradCheck.Check(Reduce("ReduceMean", opset, x, [1], 0), new Dictionary<string, TestTensor> { ["x"] = x }, ["x"]);
    }
}
