using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Tests.Support;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

public class CoreRulesTests
{
    private const int D = 11; // double

    [Theory]
    [InlineData("Add")]
    [InlineData("Sub")]
    [InlineData("Mul")]
    [InlineData("Div")]
    public void BinaryOpsWithBroadcasting(string op)
    {
        // b broadcasts over the leading axis and a size-1 axis.
        var a = Random(D, [2, 3, 4], 1);
        var b = Random(D, [3, 1], 2, 0.5, 1.5);
        GradCheck.Op(op, ["a", "b"], new Dictionary<string, TestTensor> { ["a"] = a, ["b"] = b });
        GradCheck.Op(op, ["b", "a"], new Dictionary<string, TestTensor> { ["a"] = Random(D, [2, 3, 4], 3, 0.5, 1.5), ["b"] = b });
    }

    [Fact]
    public void AddWithDynamicBatchUsesRuntimeShapes()
    {
        // Shapes unknown statically: the dynamic unbroadcast path must still be right.
        var nodes = new[] { new Proto.NodeProto { OpType = "Add", Name = "add", Input = { "a", "b" }, Output = { "y0" } } };
        var a = Random(D, [2, 3], 1);
        var b = Random(D, [1, 3], 2);
        var model = TestModels.Graph(17, nodes, new Dictionary<string, TestTensor> { ["a"] = a, ["b"] = b }, null, ["y0"]);
        foreach (var vi in model.Graph.Input) vi.Type.TensorType.Shape.Dim[0].ClearDimValue();
        GradCheck.Check(model, new Dictionary<string, TestTensor> { ["a"] = a, ["b"] = b }, ["a", "b"]);
    }

    [Fact]
    public void SharedNamedBatchDimensionNeedsNoRuntimeUnbroadcast()
    {
        // Both operands are [batch, 3] with the same dim_param: their shapes are equal, so the
        // gradient is passed through; a free dimension on one side would need the runtime path.
        var nodes = new[] { new Proto.NodeProto { OpType = "Add", Name = "add", Input = { "a", "b" }, Output = { "y0" } } };
        var a = Random(D, [2, 3], 1);
        var b = Random(D, [2, 3], 2);
        var inputs = new Dictionary<string, TestTensor> { ["a"] = a, ["b"] = b };
        var model = TestModels.Graph(17, nodes, inputs, null, ["y0"]);
        foreach (var vi in model.Graph.Input.Concat(model.Graph.Output)) vi.Type.TensorType.Shape.Dim[0].DimParam = "batch";
        var named = OnnxKfac.Graph.Autodiff.GradientGraph.Build(model, ["y0"], ["a", "b"]);
        Assert.DoesNotContain(named.Graph.Node, n => n.OpType is "NonZero" or "ReduceSum");
        GradCheck.Check(model, inputs, ["a", "b"]);

        model.Graph.Input[1].Type.TensorType.Shape.Dim[0].DimParam = "other";
        var unnamed = OnnxKfac.Graph.Autodiff.GradientGraph.Build(model, ["y0"], ["a", "b"]);
        Assert.Contains(unnamed.Graph.Node, n => n.OpType == "NonZero");
        GradCheck.Check(model, inputs, ["a", "b"]);
    }

    [Fact]
    public void NegSumIdentity()
    {
        GradCheck.Op("Neg", ["x"], new Dictionary<string, TestTensor> { ["x"] = Random(D, [3, 2], 1) });
        GradCheck.Op("Identity", ["x"], new Dictionary<string, TestTensor> { ["x"] = Random(D, [3, 2], 1) });
        GradCheck.Op("Sum", ["a", "b", "c"], new Dictionary<string, TestTensor>
        {
            ["a"] = Random(D, [3, 2], 1), ["b"] = Random(D, [2], 2), ["c"] = Random(D, [1, 1], 3),
        });
    }

    [Theory]
    [InlineData(new long[] { 3, 4 }, new long[] { 4, 5 })]
    [InlineData(new long[] { 2, 3, 4 }, new long[] { 4, 5 })]
    [InlineData(new long[] { 2, 3, 4 }, new long[] { 2, 4, 5 })]
    [InlineData(new long[] { 2, 1, 3, 4 }, new long[] { 3, 4, 2 })]
    [InlineData(new long[] { 4 }, new long[] { 4, 5 })]
    [InlineData(new long[] { 3, 4 }, new long[] { 4 })]
    [InlineData(new long[] { 4 }, new long[] { 4 })]
    [InlineData(new long[] { 2, 3, 4 }, new long[] { 4 })]
    public void MatMulShapes(long[] a, long[] b)
    {
        GradCheck.Op("MatMul", ["a", "b"], new Dictionary<string, TestTensor> { ["a"] = Random(D, a, 1), ["b"] = Random(D, b, 2) });
    }

    [Theory]
    [InlineData(0, 0, 1.0f, 1.0f)]
    [InlineData(1, 0, 0.5f, 2.0f)]
    [InlineData(0, 1, 1.5f, 0.0f)]
    [InlineData(1, 1, -2.0f, 0.3f)]
    public void GemmTransposesAndScales(int transA, int transB, float alpha, float beta)
    {
        long[] a = transA == 1 ? [4, 3] : [3, 4];
        long[] b = transB == 1 ? [5, 4] : [4, 5];
        var inputs = new Dictionary<string, TestTensor> { ["a"] = Random(D, a, 1), ["b"] = Random(D, b, 2), ["c"] = Random(D, [5], 3) };
        // beta = 0 drops C from the result: its gradient is zero.
        GradCheck.Op("Gemm", ["a", "b", "c"], inputs, options: new GradCheck.Options { ZeroGradient = beta == 0 ? ["c"] : [] }, attributes:
            [Attributes.Int("transA", transA), Attributes.Int("transB", transB), Attributes.Float("alpha", alpha), Attributes.Float("beta", beta)]);
    }

    [Fact]
    public void GemmWithoutBiasAndWithMatrixBias()
    {
        GradCheck.Op("Gemm", ["a", "b"], new Dictionary<string, TestTensor> { ["a"] = Random(D, [3, 4], 1), ["b"] = Random(D, [4, 2], 2) });
        GradCheck.Op("Gemm", ["a", "b", "c"], new Dictionary<string, TestTensor>
        {
            ["a"] = Random(D, [3, 4], 1), ["b"] = Random(D, [4, 2], 2), ["c"] = Random(D, [3, 1], 3),
        });
    }

    [Fact]
    public void OpWithoutRuleNamesNodeOpAndOpset()
    {
        var model = TestModels.SingleOp("Hardmax", 13, ["x"], new Dictionary<string, TestTensor> { ["x"] = Random(D, [2, 3], 1) });
        var e = Assert.Throws<UnsupportedOpException>(() => OnnxKfac.Graph.Autodiff.GradientGraph.Build(model, ["y0"], ["x"]));
        Assert.Contains("hardmax0", e.Message);
        Assert.Contains("'Hardmax'", e.Message);
        Assert.Contains("opset 13", e.Message);
        Assert.Contains("MatMul", e.Message); // lists the supported ops
    }
}
