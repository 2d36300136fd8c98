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

    [Theory]
    [InlineData(new long[] { 256 })]
    [InlineData(new long[] { 1, 256 })]
    [InlineData(new long[] { 3, 1 })]
    [InlineData(new long[] { 3, 256 })]
    [InlineData(new long[] { 1 })]
    [InlineData(new long[0])]
    public void GemmLargeTransposedWeightWithEveryBiasShape(long[] c)
    {
        // transB = 1 (PyTorch's Linear) and a 256×256 weight, at the explicit-Transpose bound: a bias per
        // column ([256], [1, 256]) takes the transposed-dY form, the others the broadcast one.
        GradCheck.Op("Gemm", ["a", "b", "c"], new Dictionary<string, TestTensor>
        {
            ["a"] = Random(D, [3, 256], 1), ["b"] = Random(D, [256, 256], 2), ["c"] = Random(D, c, 3),
        }, attributes: [Attributes.Int("transB", 1), Attributes.Float("beta", 0.5f), Attributes.Float("alpha", 1.5f)]);
    }

    [Theory]
    [InlineData(1, 256, new long[] { 256 }, true)]
    [InlineData(1, 256, new long[] { 1, 256 }, true)]
    [InlineData(1, 255, new long[] { 256 }, false)]       // weight below CoreRules.TransposedDyMinWeight
    [InlineData(1, 256, new long[] { 3, 256 }, false)]
    [InlineData(1, 256, new long[] { 1 }, false)]
    [InlineData(1, 256, null, false)]
    [InlineData(0, 256, new long[] { 256 }, false)]
    public void GemmWeightGradientReadsAnExplicitTransposeOfDyForALargeWeightWithAColumnBias(int transB, long inputs, long[]? c, bool explicitTranspose)
    {
        // MLAS runs Gemm(dY, A, transA = 1) ~15-25% below its rate at a batch of 256; the rule transposes
        // dY itself when the bias gradient can read the transposed dY too (which keeps ONNX Runtime
        // from folding it back) and the weight is large enough to repay the Transpose.
        Assert.Equal(256L * 256, OnnxKfac.Graph.Autodiff.Rules.CoreRules.TransposedDyMinWeight);
        var values = new Dictionary<string, TestTensor>
        {
            ["a"] = Random(D, [3, inputs], 1), ["b"] = Random(D, transB == 1 ? [256, inputs] : [inputs, 256], 2),
        };
        if (c is not null) values["c"] = Random(D, c, 3);
        string[] names = c is null ? ["a", "b"] : ["a", "b", "c"];
        var model = TestModels.SingleOp("Gemm", 13, names, values, null, 1, Attributes.Int("transB", transB));
        var nodes = OnnxKfac.Graph.Autodiff.GradientGraph.Build(model, [model.Graph.Output[0].Name], names[1..]).Graph.Node;
        var weightGradient = nodes.Where(n => n.OpType == "Gemm").Skip(1).Single();   // after the forward Gemm
        Assert.Equal(explicitTranspose, nodes.Any(n => n.OpType == "Transpose"));
        Assert.Equal(explicitTranspose ? 0 : 1, weightGradient.GetInt("transA", 0));
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
