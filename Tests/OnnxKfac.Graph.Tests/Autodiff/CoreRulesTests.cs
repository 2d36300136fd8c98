using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Proto;
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
        var named = GradientGraph.Build(model, ["y0"], ["a", "b"]);
        Assert.DoesNotContain(named.Graph.Node, n => n.OpType is "NonZero" or "ReduceSum");
        GradCheck.Check(model, inputs, ["a", "b"]);

        model.Graph.Input[1].Type.TensorType.Shape.Dim[0].DimParam = "other";
        var unnamed = GradientGraph.Build(model, ["y0"], ["a", "b"]);
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
        // transB = 1 (PyTorch's Linear) and a 256×256 weight, at the kept-transpose bound, with every shape
        // of bias the Gemm broadcasts.
        GradCheck.Op("Gemm", ["a", "b", "c"], new Dictionary<string, TestTensor>
        {
            ["a"] = Random(D, [3, 256], 1), ["b"] = Random(D, [256, 256], 2), ["c"] = Random(D, c, 3),
        }, attributes: [Attributes.Int("transB", 1), Attributes.Float("beta", 0.5f), Attributes.Float("alpha", 1.5f)]);
    }

    [Theory]
    [InlineData(1, 0, 256, new long[] { 256 }, true)]
    [InlineData(1, 0, 256, new long[] { 1, 256 }, true)]
    [InlineData(1, 0, 256, new long[] { 3, 256 }, true)]
    [InlineData(1, 0, 256, null, true)]
    [InlineData(0, 0, 256, new long[] { 256 }, true)]
    [InlineData(1, 0, 255, new long[] { 256 }, false)]      // weight below CoreRules.KeptTransposeMinWeight
    [InlineData(0, 1, 256, new long[] { 256 }, false)]      // A used transposed: dB = A·dY has no transposed operand
    public void GemmWeightGradientTakesItsTransposedOperandAsAKeptTransposeForALargeWeight(int transB, int transA, long inputs, long[]? c, bool kept)
    {
        Assert.Equal(256L * 256, OnnxKfac.Graph.Autodiff.Rules.CoreRules.KeptTransposeMinWeight);
        var values = new Dictionary<string, TestTensor>
        {
            ["a"] = Random(D, transA == 1 ? [inputs, 3] : [3, inputs], 1), ["b"] = Random(D, transB == 1 ? [256, inputs] : [inputs, 256], 2),
        };
        if (c is not null) values["c"] = Random(D, c, 3);
        string[] names = c is null ? ["a", "b"] : ["a", "b", "c"];
        var model = TestModels.SingleOp("Gemm", 13, names, values, null, 1, Attributes.Int("transA", transA), Attributes.Int("transB", transB));
        var nodes = GradientGraph.Build(model, [model.Graph.Output[0].Name], names[1..]).Graph.Node;
        var weightGradient = nodes.Where(n => n.OpType == "Gemm").Skip(1).Single();   // after the forward Gemm
        AssertKeptTranspose(nodes, kept);
        Assert.Equal(kept || transA == 1 ? 0 : 1, weightGradient.GetInt("transA", 0));
    }

    [Theory]
    [InlineData(new long[] { 3, 256 }, 256, true)]
    [InlineData(new long[] { 2, 3, 256 }, 256, false)]   // a sequence: K = batch × length keeps FusedMatMul's transA
    [InlineData(new long[] { 3, 255 }, 256, false)]
    [InlineData(new long[] { 2, 3, 255 }, 256, false)]
    public void MatMulWeightGradientTakesAKeptTransposeOfItsInputForALargeWeight(long[] a, long outputs, bool kept)
    {
        var values = new Dictionary<string, TestTensor> { ["a"] = Random(D, a, 1), ["b"] = Random(D, [a[^1], outputs], 2) };
        var model = TestModels.SingleOp("MatMul", 13, ["a", "b"], values);
        AssertKeptTranspose(GradientGraph.Build(model, [model.Graph.Output[0].Name], ["b"]).Graph.Node, kept);
        GradCheck.Op("MatMul", ["a", "b"], values);
    }

    /// <summary>
    /// What the kept transpose relies on, in ONNX Runtime 1.31.1 at the toolkit's optimization level
    /// (ORT_ENABLE_ALL): the weight gradient's Gemm of a large Linear runs without transA after
    /// optimization, with the Transpose left in the graph; a small one's keeps transA.
    /// </summary>
    [Theory]
    [InlineData(256, true)]
    [InlineData(16, false)]
    public void OnnxRuntimeKeepsTheKeptTransposeOutOfTheGemm(long width, bool kept)
    {
        var values = new Dictionary<string, TestTensor>
        {
            ["a"] = Random(1, [8, width], 1), ["b"] = Random(1, [width, width], 2), ["c"] = Random(1, [width], 3),
        };
        var model = TestModels.SingleOp("Gemm", 13, ["a", "b", "c"], values, null, 1, Attributes.Int("transB", 1));
        var training = GradientGraph.Build(model, [model.Graph.Output[0].Name], ["b", "c"]);
        string path = Path.Combine(Path.GetTempPath(), $"kept-transpose-{Environment.ProcessId}-{width}.onnx");
        try
        {
            using (var options = new Microsoft.ML.OnnxRuntime.SessionOptions
                   {
                       GraphOptimizationLevel = Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = path,
                   })
            using (new Microsoft.ML.OnnxRuntime.InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(training), options)) { }
            var optimized = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)).Graph.Node;
            var backward = optimized.Where(n => n.OpType == "Gemm" && n.Input[1] == "a").ToList();
            var weightGradient = Assert.Single(backward);
            Assert.Equal(kept ? 0 : 1, weightGradient.GetInt("transA", 0));
            Assert.Equal(kept, optimized.Any(n => n.OpType == "Transpose"));
        }
        finally { File.Delete(path); }
    }

    private static void AssertKeptTranspose(IEnumerable<NodeProto> nodes, bool kept) =>
        Assert.Equal(kept, nodes.Any(n => n.OpType == "Transpose" && n.GetInts("perm") is [0, 2, 1]));

    [Fact]
    public void OpWithoutRuleNamesNodeOpAndOpset()
    {
        var model = TestModels.SingleOp("Hardmax", 13, ["x"], new Dictionary<string, TestTensor> { ["x"] = Random(D, [2, 3], 1) });
        var e = Assert.Throws<UnsupportedOpException>(() => GradientGraph.Build(model, ["y0"], ["x"]));
        Assert.Contains("hardmax0", e.Message);
        Assert.Contains("'Hardmax'", e.Message);
        Assert.Contains("opset 13", e.Message);
        Assert.Contains("MatMul", e.Message); // lists the supported ops
    }
}
