using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Autodiff.Rules;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using Xunit.Abstractions;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

/// <summary>
/// LSTM, GRU and RNN are unrolled into standard ops before differentiation. Checked against
/// ONNX Runtime's own kernels: the unrolled forward equals the op's outputs, and the gradients
/// of the unrolled graph equal finite differences of the op (float32: ONNX Runtime has no
/// float64 LSTM). Every form the unrolling handles is covered: directions, layout, initial
/// states given or absent, bias absent, peepholes, sequence_lens, GRU's linear_before_reset,
/// non-default activations.
/// </summary>
public class RecurrentRulesTests(ITestOutputHelper log)
{
    private const int F = 1, T = 4, N = 3, I = 5, H = 4;
    private const string Lens = "lens";
    // The recurrent op's own rule is never called (the node is unrolled); zeroing the unrolled MatMuls must fail the check.
    private static readonly GradCheck.Options Float = new() { Step = 3e-3, Tolerance = 2e-3, Mutate = ["MatMul"] };

    private static Dictionary<string, TestTensor> Inputs(int gates, int dirs, bool bias = true, bool states = false, bool cell = false,
        bool peepholes = false, bool batchFirst = false)
    {
        var x = new Dictionary<string, TestTensor>
        {
            ["x"] = Random(F, batchFirst ? [N, T, I] : [T, N, I], 1),
            ["w"] = Random(F, [dirs, gates * H, I], 2, -0.6, 0.6),
            ["r"] = Random(F, [dirs, gates * H, H], 3, -0.6, 0.6),
        };
        if (bias) x["b"] = Random(F, [dirs, 2 * gates * H], 4, -0.5, 0.5);
        if (states) x["h0"] = Random(F, batchFirst ? [N, dirs, H] : [dirs, N, H], 5);
        if (cell) x["c0"] = Random(F, batchFirst ? [N, dirs, H] : [dirs, N, H], 6);
        if (peepholes) x["p"] = Random(F, [dirs, 3 * H], 7, -0.5, 0.5);
        return x;
    }

    private static string Opt(Dictionary<string, TestTensor> inputs, string name) => inputs.ContainsKey(name) ? name : "";

    /// <summary>Forward equals ONNX Runtime's op; gradients of every float input equal finite differences.</summary>
    private void Check(string op, int opset, Dictionary<string, TestTensor> inputs, int[]? lengths, int outputs, params AttributeProto[] attributes)
    {
        var order = new List<string> { "x", "w", "r", Opt(inputs, "b"), lengths is null ? "" : Lens, Opt(inputs, "h0") };
        if (op == "LSTM") order.AddRange([Opt(inputs, "c0"), Opt(inputs, "p")]);
        while (order[^1].Length == 0) order.RemoveAt(order.Count - 1);
        var all = new Dictionary<string, TestTensor>(inputs);
        if (lengths is not null) all[Lens] = new TestTensor((int)TensorProto.Types.DataType.Int32, [N], lengths.Select(l => (double)l).ToArray());
        var model = TestModels.SingleOp(op, opset, order, all, null, outputs, [Attributes.Int("hidden_size", H), .. attributes]);
        var ys = Enumerable.Range(0, outputs).Select(k => $"y{k}").ToArray();

        var unrolled = GradientGraph.Build(model, ys, inputs.Keys.ToArray());
        Assert.DoesNotContain(unrolled.Graph.Node, n => n.OpType is "LSTM" or "GRU" or "RNN" or "Loop" or "Scan");
        using var native = new Ort(model);
        using var mine = new Ort(unrolled);
        var feed = new Dictionary<string, TestTensor>(all);
        foreach (var y in ys) feed[y + "_seed"] = Random(F, native.Run(all, [y])[y].Shape, 9);
        var want = native.Run(all, ys);
        var got = mine.Run(feed, ys);
        foreach (var y in ys)
        {
            Assert.Equal(want[y].Shape, got[y].Shape);
            double err = want[y].Data.Zip(got[y].Data, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(err < 1e-5, $"{op} output {y}: unrolled forward differs from ONNX Runtime by {err:G3}");
        }
        RuleCheck.Log(log, op, opset, GradCheck.Check(model, all, inputs.Keys.ToArray(), Float));
    }

    [Theory]
    [InlineData(13)]
    [InlineData(17)]
    public void LstmForwardWithStatesAndBias(int opset) =>
        Check("LSTM", opset, Inputs(4, 1, states: true, cell: true), null, 3);

    [Fact]
    public void LstmBidirectionalWithSequenceLengthsAndPeepholes() =>
        Check("LSTM", 17, Inputs(4, 2, bias: false, peepholes: true), [4, 2, 3], 3, Attributes.String("direction", "bidirectional"));

    /// <summary>
    /// layout=1 (batch first): ONNX Runtime has no kernel for it, so the unrolled forward is
    /// compared with the layout-0 op on transposed tensors, and the unrolled graph's gradients
    /// with finite differences of the unrolled forward itself.
    /// </summary>
    [Theory]
    [InlineData("LSTM", 4, 3)]
    [InlineData("GRU", 3, 2)]
    public void BatchFirstLayoutReverse(string op, int gates, int outputs)
    {
        var inputs = Inputs(gates, 2, states: true, cell: op == "LSTM", batchFirst: true);
        var all = new Dictionary<string, TestTensor>(inputs) { [Lens] = new TestTensor((int)TensorProto.Types.DataType.Int32, [N], [3, 4, 1]) };
        string[] order = op == "LSTM" ? ["x", "w", "r", "b", Lens, "h0", "c0"] : ["x", "w", "r", "b", Lens, "h0"];
        AttributeProto[] attrs = op == "GRU"
            ? [Attributes.Int("hidden_size", H), Attributes.String("direction", "bidirectional"), Attributes.Int("linear_before_reset", 1)]
            : [Attributes.Int("hidden_size", H), Attributes.String("direction", "bidirectional")];
        var model = TestModels.SingleOp(op, 17, order, all, null, outputs, [.. attrs, Attributes.Int("layout", 1)]);
        var unrolled = model.Clone();
        OpsetUpgrade.Apply(unrolled);
        RecurrentRules.Unroll(unrolled);
        Assert.DoesNotContain(unrolled.Graph.Node, n => n.OpType == op);

        // The same op at layout 0: X [T, N, I], states [D, N, H], Y [T, D, N, H].
        var seqFirst = new Dictionary<string, TestTensor>(all) { ["x"] = Permute(all["x"], [1, 0, 2]), ["h0"] = Permute(all["h0"], [1, 0, 2]) };
        if (op == "LSTM") seqFirst["c0"] = Permute(all["c0"], [1, 0, 2]);
        var reference = TestModels.SingleOp(op, 17, order, seqFirst, null, outputs, attrs);
        using var native = new Ort(reference);
        using var mine = new Ort(unrolled);
        var ys = Enumerable.Range(0, outputs).Select(k => $"y{k}").ToArray();
        var want = native.Run(seqFirst, ys);
        var got = mine.Run(all, ys);
        for (int k = 0; k < outputs; k++)
        {
            var expected = k == 0 ? Permute(want[ys[k]], [2, 0, 1, 3]) : Permute(want[ys[k]], [1, 0, 2]);
            Assert.Equal(expected.Shape, got[ys[k]].Shape);
            double err = expected.Data.Zip(got[ys[k]].Data, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(err < 1e-5, $"{op} layout 1 output {ys[k]}: differs from the layout-0 op by {err:G3}");
        }
        RuleCheck.Log(log, op + " layout 1", 17, GradCheck.Check(unrolled, all, inputs.Keys.ToArray(), Float));
    }

    /// <summary>A copy of <paramref name="t"/> with its axes permuted.</summary>
    private static TestTensor Permute(TestTensor t, int[] perm)
    {
        var shape = perm.Select(p => t.Shape[p]).ToArray();
        var data = new double[t.Data.Length];
        var strides = new long[t.Shape.Length];
        for (int k = t.Shape.Length - 1, s = 1; k >= 0; s *= (int)t.Shape[k], k--) strides[k] = s;
        var index = new long[shape.Length];
        for (int o = 0; o < data.Length; o++)
        {
            long src = 0;
            for (int k = 0; k < shape.Length; k++) src += index[k] * strides[perm[k]];
            data[o] = t.Data[src];
            for (int k = shape.Length - 1; k >= 0 && ++index[k] == shape[k]; k--) index[k] = 0;
        }
        return t with { Shape = shape, Data = data };
    }

    [Fact]
    public void LstmOnlyYhUsed() =>
        Check("LSTM", 13, Inputs(4, 1), null, 2);

    [Theory]
    [InlineData(13)]
    [InlineData(17)]
    public void GruBidirectionalLinearBeforeReset(int opset) =>
        Check("GRU", opset, Inputs(3, 2, states: true), [2, 4, 3], 2,
            Attributes.String("direction", "bidirectional"), Attributes.Int("linear_before_reset", 1));

    [Fact]
    public void GruResetBeforeLinear() =>
        Check("GRU", 17, Inputs(3, 1, states: true), null, 2);

    [Fact]
    public void GruWithoutBiasOrState() =>
        Check("GRU", 17, Inputs(3, 1, bias: false), null, 2, Attributes.Int("linear_before_reset", 1));

    [Theory]
    [InlineData(13)]
    [InlineData(17)]
    public void RnnTanh(int opset) =>
        Check("RNN", opset, Inputs(1, 1, states: true), null, 2);

    [Fact]
    public void RnnBidirectionalReluAndSigmoidWithSequenceLengths() =>
        Check("RNN", 17, Inputs(1, 2), [4, 1, 2], 2,
            Attributes.String("direction", "bidirectional"), Strings("activations", "Relu", "Sigmoid"));

    private static AttributeProto Strings(string name, params string[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Strings };
        a.Strings.Add(values.Select(Google.Protobuf.ByteString.CopyFromUtf8));
        return a;
    }

    [Theory]
    [InlineData("clip", "the clip attribute is not supported")]
    [InlineData("activations", "activations [HardSigmoid, Tanh, Tanh] are not supported")]
    [InlineData("input_forget", "input_forget=1 is not supported")]
    [InlineData("dynamic", "export the model with a fixed sequence length")]
    public void UnsupportedFormsAreRefusedNamingTheNode(string form, string message)
    {
        var inputs = Inputs(4, 1);
        AttributeProto[] extra = form switch
        {
            "clip" => [Attributes.Float("clip", 3)],
            "activations" => [Strings("activations", "HardSigmoid", "Tanh", "Tanh")],
            "input_forget" => [Attributes.Int("input_forget", 1)],
            _ => [],
        };
        var model = TestModels.SingleOp("LSTM", 17, ["x", "w", "r", "b"], inputs, null, 1, [Attributes.Int("hidden_size", H), .. extra]);
        if (form == "dynamic") model.Graph.Input[0].Type.TensorType.Shape.Dim[0].ClearDimValue();
        var e = Assert.Throws<UnsupportedOpException>(() => GradientGraph.Build(model, ["y0"], ["w"]));
        Assert.Contains("node 'lstm0' (LSTM)", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void DynamicBatchIsUnrolled()
    {
        var inputs = Inputs(4, 1, states: true, cell: true);
        var model = TestModels.SingleOp("LSTM", 17, ["x", "w", "r", "b", "", "h0", "c0"], inputs, null, 1, Attributes.Int("hidden_size", H));
        model.Graph.Input[0].Type.TensorType.Shape.Dim[1].DimParam = "batch";
        model.Graph.Input.Single(i => i.Name == "h0").Type.TensorType.Shape.Dim[1].DimParam = "batch";
        var grad = GradientGraph.Build(model, ["y0"], ["w"]);
        Assert.DoesNotContain(grad.Graph.Node, n => n.OpType == "LSTM");
        using var ort = new Ort(grad);
        var feed = new Dictionary<string, TestTensor>(inputs) { ["y0_seed"] = Random(F, [T, 1, N, H], 9) };
        Assert.Equal([1L, 4 * H, I], ort.Run(feed, ["w_grad"])["w_grad"].Shape);
    }
}
