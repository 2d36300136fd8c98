using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using Xunit.Abstractions;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

/// <summary>
/// Finite-difference checks of the elementwise, activation and softmax rules (this file:
/// pointwise math and selection; siblings: activations, softmax), plus exact gradients at
/// kinks and ties compared with PyTorch autograd's conventions.
/// </summary>
public partial class ElementwiseRulesTests(ITestOutputHelper output)
{
    private const int D = 11; // double
    private const int F = 1;  // float
    private const int B = 9;  // bool

    /// <summary>Float32 checks: step 1e-2 (the default) keeps rounding at ~1e-4 of the difference.</summary>
    private static readonly GradCheck.Options Float32 = new() { Tolerance = 1e-3 };

    private static Dictionary<string, TestTensor> In(params (string Name, TestTensor Value)[] inputs) =>
        inputs.ToDictionary(p => p.Name, p => p.Value);

    /// <summary>Moves values closer than <paramref name="margin"/> to any of <paramref name="kinks"/> out to that distance.</summary>
    private static TestTensor Away(TestTensor t, double margin, params double[] kinks) => t with
    {
        Data = t.Data.Select(v =>
        {
            foreach (double k in kinks)
                if (Math.Abs(v - k) < margin) v = k + (v >= k ? margin : -margin);
            return v;
        }).ToArray(),
    };

    /// <summary>
    /// Finite-difference check of one op at each opset (every float input, or <paramref name="wrt"/>);
    /// logs and returns the worst relative error.
    /// </summary>
    private double Op(string opType, IReadOnlyList<string> inputOrder, IReadOnlyDictionary<string, TestTensor> inputs,
        IReadOnlyDictionary<string, TestTensor>? constants = null, int[]? opsets = null, IReadOnlyList<string>? wrt = null,
        GradCheck.Options? options = null, params AttributeProto[] attributes)
    {
        double worst = 0;
        foreach (int opset in opsets ?? [13, 17, 20])
        {
            var model = TestModels.SingleOp(opType, opset, inputOrder, inputs, constants, 1, attributes);
            var names = wrt ?? inputs.Where(kv => kv.Value.ElemType is D or F).Select(kv => kv.Key).ToArray();
            worst = Math.Max(worst, GradCheck.Check(model, inputs, names, options));
        }
        string type = inputs.Values.Any(t => t.ElemType == D) ? "double" : "float32";
        output.WriteLine($"{opType} ({type}): worst FD error {worst:G3}");
        return worst;
    }

    /// <summary>Runs the gradient graph of <paramref name="model"/>'s output y0 with the given seed (ones by default).</summary>
    private static Dictionary<string, double[]> Vjp(ModelProto model, IReadOnlyDictionary<string, TestTensor> inputs,
        IReadOnlyList<string> wrt, TestTensor? seed = null)
    {
        if (seed is null)
        {
            using var forward = new Ort(model);
            var y = forward.Run(inputs, ["y0"])["y0"];
            seed = y with { Data = Enumerable.Repeat(1.0, y.Data.Length).ToArray() };
        }
        using var backward = new Ort(GradientGraph.Build(model, ["y0"], wrt));
        var feed = new Dictionary<string, TestTensor>(inputs) { ["y0_seed"] = seed };
        var grads = backward.Run(feed, wrt.Select(w => w + "_grad").ToArray());
        return wrt.ToDictionary(w => w, w => grads[w + "_grad"].Data);
    }

    private static void Close(double[] expected, double[] actual, double tolerance = 1e-6)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"[{i}]: expected {expected[i]:G9}, got {actual[i]:G9}");
    }

    /// <summary>d(Σ y)/dx for a one-input op at the points <paramref name="x"/> (for kinks).</summary>
    private static double[] GradAt(string opType, double[] x, IReadOnlyList<string>? inputOrder = null,
        IReadOnlyDictionary<string, TestTensor>? constants = null, int elemType = D, int opset = 17, params AttributeProto[] attributes)
    {
        var inputs = In(("x", new TestTensor(elemType, [x.Length], x)));
        var model = TestModels.SingleOp(opType, opset, inputOrder ?? ["x"], inputs, constants, 1, attributes);
        return Vjp(model, inputs, ["x"])["x"];
    }

    // ---- pointwise math ------------------------------------------------------------------

    [Theory]
    [InlineData("Sqrt", 0.3, 2.0)]
    [InlineData("Reciprocal", 0.5, 2.0)]
    [InlineData("Reciprocal", -2.0, -0.5)]
    [InlineData("Exp", -2.0, 2.0)]
    [InlineData("Log", 0.2, 3.0)]
    [InlineData("Sin", -3.0, 3.0)]
    [InlineData("Cos", -3.0, 3.0)]
    public void UnaryMath(string op, double lo, double hi)
    {
        Op(op, ["x"], In(("x", Random(D, [2, 3, 4], 1, lo, hi))));
    }

    [Fact]
    public void UnaryMathInFloat32()
    {
        // ORT has no double Erf kernel: float32 only.
        Op("Erf", ["x"], In(("x", Random(F, [2, 3, 4], 1, -2, 2))), options: Float32);
        foreach (var op in new[] { "Sqrt", "Reciprocal", "Exp", "Log" })
            Op(op, ["x"], In(("x", Random(F, [3, 4], 2, 0.5, 1.5))), opsets: [17], options: Float32);
    }

    [Fact]
    public void AbsAwayFromZeroAndAtZero()
    {
        Op("Abs", ["x"], In(("x", Away(Random(D, [2, 3, 4], 1), 0.05, 0))));
        Assert.Equal([-1.0, 0.0, 1.0], GradAt("Abs", [-2, 0, 3])); // PyTorch: sign(x), so Abs'(0) = 0
    }

    [Fact]
    public void PowWithConstantExponents()
    {
        var x = In(("x", Random(D, [2, 3, 4], 1)));
        // Pow(x, 2.0) as the transformer fixtures use it, in double and float32; odd and integer exponents.
        Op("Pow", ["x", "p"], x, In(("p", Double([], [2.0]))));
        Op("Pow", ["x", "p"], In(("x", Random(F, [2, 3, 4], 1))), In(("p", Float([], [2.0]))));
        Op("Pow", ["x", "p"], x, In(("p", Double([], [3.0]))));
        Op("Pow", ["x", "p"], x, In(("p", Int64([], 3))));
        Op("Pow", ["x", "p"], In(("x", Random(D, [2, 3, 4], 1, 0.2, 2))), In(("p", Double([], [-1.5]))));
    }

    [Fact]
    public void PowBaseAndExponentWithBroadcasting()
    {
        Op("Pow", ["a", "b"], In(("a", Random(D, [2, 3, 4], 1, 0.2, 2)), ("b", Random(D, [4], 2, -2, 2))));
        Op("Pow", ["a", "b"], In(("a", Random(D, [3, 1], 3, 0.2, 2)), ("b", Random(D, [2, 3, 4], 4, -2, 2))));
    }

    [Fact]
    public void PowAtZeroBase()
    {
        // PyTorch: d(0^2)/da = 0, and the exponent gradient is 0 where a = 0 and b >= 0.
        var inputs = In(("a", Double([3], [0, 0, 2])), ("b", Double([3], [2, 0.5, 2])));
        var model = TestModels.SingleOp("Pow", 17, ["a", "b"], inputs);
        var g = Vjp(model, inputs, ["a", "b"]);
        Assert.Equal(0.0, g["a"][0]);
        Assert.Equal(4.0, g["a"][2], 12);
        Assert.Equal([0.0, 0.0], g["b"][..2]);
        Assert.Equal(4 * Math.Log(2), g["b"][2], 12);
    }

    // ---- Max, Min, Mean ------------------------------------------------------------------

    [Theory]
    [InlineData("Max")]
    [InlineData("Min")]
    public void MaxMinVariadicWithBroadcasting(string op)
    {
        Op(op, ["a", "b", "c"], In(("a", Random(D, [2, 3, 4], 1)), ("b", Random(D, [3, 1], 2)), ("c", Random(D, [4], 3))));
        Op(op, ["a", "b"], In(("a", Random(D, [2, 3], 4)), ("b", Random(D, [2, 3], 5))));
        Op(op, ["a"], In(("a", Random(D, [2, 3], 6))));
    }

    [Theory]
    [InlineData("Max")]
    [InlineData("Min")]
    public void MaxMinTiesSplitEvenly(string op)
    {
        // PyTorch's maximum/minimum: a tie sends half the gradient to each side.
        var inputs = In(("a", Double([3], [1, 2, 3])), ("b", Double([3], [1, 0, 5])));
        var g = Vjp(TestModels.SingleOp(op, 17, ["a", "b"], inputs), inputs, ["a", "b"]);
        Assert.Equal(op == "Max" ? [0.5, 1, 0] : [0.5, 0, 1], g["a"]);
        Assert.Equal(op == "Max" ? [0.5, 0, 1] : [0.5, 1, 0], g["b"]);
        // Three-way tie against a broadcast scalar: a third each, the scalar collects its thirds.
        var three = In(("a", Double([2], [1, 4])), ("b", Double([2], [1, 0])), ("c", Double([], [1])));
        var g3 = Vjp(TestModels.SingleOp(op, 17, ["a", "b", "c"], three), three, ["a", "b", "c"]);
        Assert.Equal(1.0 / 3, g3["a"][0], 12);
        Assert.Equal(1.0 / 3, g3["b"][0], 12);
        Assert.Equal(1.0 / 3, g3["c"][0], 12);
        Assert.Equal(op == "Max" ? 1.0 : 0.0, g3["a"][1]);
    }

    [Fact]
    public void MeanVariadicWithBroadcasting()
    {
        // ORT has no double Mean kernel: float32 only.
        Op("Mean", ["a", "b", "c"], In(("a", Random(F, [2, 3, 4], 1)), ("b", Random(F, [3, 1], 2)), ("c", Random(F, [4], 3))), options: Float32);
        Op("Mean", ["a"], In(("a", Random(F, [2, 3], 4))), options: Float32);
    }

    // ---- Where, Clip ---------------------------------------------------------------------

    [Fact]
    public void WhereWithBroadcasting()
    {
        var cond = new TestTensor(B, [2, 1, 4], [1, 0, 0, 1, 0, 1, 1, 0]);
        Op("Where", ["c", "x", "y"], In(("c", cond), ("x", Random(D, [3, 1], 1)), ("y", Random(D, [2, 3, 4], 2))));
        Op("Where", ["c", "x", "y"], In(("c", cond), ("x", Random(D, [2, 3, 4], 3)), ("y", Random(D, [], 4))));
    }

    [Fact]
    public void ClipWithOptionalBounds()
    {
        var x = In(("x", Away(Random(D, [2, 3, 4], 1), 0.05, -0.5, 0.5)));
        var lo = Double([], [-0.5]);
        var hi = Double([], [0.5]);
        Op("Clip", ["x", "lo", "hi"], x, In(("lo", lo), ("hi", hi)));
        Op("Clip", ["x", "lo"], x, In(("lo", lo)));
        Op("Clip", ["x", "", "hi"], x, In(("hi", hi)));
        Op("Clip", ["x"], x);
        Op("Clip", ["x", "lo", "hi"], In(("x", Away(Random(F, [3, 4], 2), 0.05, -0.5, 0.5))), In(("lo", Float([], [-0.5])), ("hi", Float([], [0.5]))));
    }

    [Fact]
    public void ClipAtTheBoundsPassesTheGradient()
    {
        // PyTorch's clamp: gradient where min <= x <= max, bounds included.
        var bounds = In(("lo", Double([], [0])), ("hi", Double([], [1])));
        Assert.Equal([0.0, 1, 1, 1, 0], GradAt("Clip", [-1, 0, 0.5, 1, 2], ["x", "lo", "hi"], bounds));
        Assert.Equal([0.0, 1, 1, 1, 1], GradAt("Clip", [-1, 0, 0.5, 1, 2], ["x", "lo"], In(("lo", Double([], [0])))));
    }

    // ---- Cast, CastLike, Dropout ---------------------------------------------------------

    [Fact]
    public void CastBetweenFloatTypes()
    {
        // Through float32 the loss is rounded: a larger step keeps the rounding out of the difference.
        var loose = new GradCheck.Options { Step = 1e-2, Tolerance = 1e-4 };
        Op("Cast", ["x"], In(("x", Random(D, [2, 3], 1))), options: loose, attributes: Attributes.Int("to", F));
        Op("Cast", ["x"], In(("x", Random(F, [2, 3], 1))), attributes: Attributes.Int("to", D));
        Op("Cast", ["x"], In(("x", Random(D, [2, 3], 1))), attributes: Attributes.Int("to", D));
        Op("CastLike", ["x", "t"], In(("x", Random(D, [2, 3], 1)), ("t", Float([1], [0]))), wrt: ["x"], options: loose, opsets: [17, 20]);
    }

    [Fact]
    public void IntegerCastOnThePathCarriesNoGradient()
    {
        static NodeProto Node(string op, string[] inputs, string output, params AttributeProto[] attributes)
        {
            var n = new NodeProto { OpType = op, Name = output + "/" + op, Output = { output } };
            n.Input.Add(inputs);
            n.Attribute.Add(attributes);
            return n;
        }
        var x = In(("x", Double([4], [1.3, -2.6, 0.4, 7.7])));
        NodeProto[] IntegerPath(string output) =>
        [
            Node("Cast", ["x"], "i", Attributes.Int("to", 7)),
            Node("Mul", ["i", "i"], "i2"),
            Node("Cast", ["i2"], output, Attributes.Int("to", D)),
        ];

        // y = double(int64(x)²) + x: the integer detour is piecewise constant, so dy/dx = 1.
        var model = TestModels.Graph(17, [.. IntegerPath("f"), Node("Add", ["f", "x"], "y0")], x, null, ["y0"]);
        GradCheck.Check(model, x, ["x"]);
        Assert.Equal([1.0, 1, 1, 1], Vjp(model, x, ["x"])["x"]);

        // Only an integer path to the output: the build succeeds and the gradient is zero.
        Assert.Equal([0.0, 0, 0, 0], Vjp(TestModels.Graph(13, IntegerPath("y0"), x, null, ["y0"]), x, ["x"])["x"]);

        // A Cast from bool is a constant factor.
        var withBool = In(("b", new TestTensor(B, [2], [1, 0])), ("x", Double([2], [3, 5])));
        var masked = TestModels.Graph(17, [Node("Cast", ["b"], "f", Attributes.Int("to", D)), Node("Mul", ["f", "x"], "y0")], withBool, null, ["y0"]);
        Assert.Equal([1.0, 0], Vjp(masked, withBool, ["x"])["x"]);
    }

    [Fact]
    public void DropoutInInferenceIsIdentity()
    {
        var x = Random(D, [2, 3, 4], 1);
        Op("Dropout", ["x"], In(("x", x)));
        Op("Dropout", ["x", "r"], In(("x", x)), In(("r", Double([], [0.3]))));
        // An explicit training_mode = false input takes the mask path, which must give the identity too.
        Op("Dropout", ["x", "r", "t"], In(("x", x), ("t", new TestTensor(B, [], [0]))), In(("r", Double([], [0.3]))), wrt: ["x"]);
        Op("Dropout", ["x", "", "t"], In(("x", x), ("t", new TestTensor(B, [], [0]))), wrt: ["x"]);
    }

    [Fact]
    public void DropoutInTrainingModeUsesTheForwardMask()
    {
        // Random mask: check dX·x = dY·y elementwise in one run (y = x·mask/(1 − ratio)).
        var x = Random(D, [4, 8], 1, 0.5, 1.5);
        var inputs = In(("x", x), ("t", new TestTensor(B, [], [1])));
        var model = TestModels.SingleOp("Dropout", 13, ["x", "r", "t"], inputs, In(("r", Double([], [0.25]))));
        var grad = GradientGraph.Build(model, ["y0"], ["x"]);
        using var ort = new Ort(grad);
        var seed = Random(D, [4, 8], 2);
        var result = ort.Run(new Dictionary<string, TestTensor>(inputs) { ["y0_seed"] = seed }, ["y0", "x_grad"]);
        var y = result["y0"].Data;
        var gx = result["x_grad"].Data;
        Assert.Contains(y, v => v == 0);
        Assert.Contains(y, v => v != 0);
        for (int i = 0; i < y.Length; i++)
        {
            Assert.Equal(seed.Data[i] * y[i], gx[i] * x.Data[i], 12);
            Assert.True(y[i] == 0 || Math.Abs(y[i] - x.Data[i] / 0.75) < 1e-12);
        }
    }

    [Fact]
    public void RulesAreRegistered()
    {
        var ops = GradientRegistry.Default.SupportedOps;
        foreach (var op in new[]
                 {
                     "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Erf", "Sin", "Cos", "Abs", "Max", "Min", "Mean", "Where", "Clip", "Cast",
                     "CastLike", "Dropout", "Tanh", "Sigmoid", "HardSigmoid", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu",
                     "ThresholdedRelu", "Gelu", "Softplus", "Softsign", "HardSwish", "Mish", "Softmax", "LogSoftmax",
                 })
            Assert.Contains(op, ops);
        Assert.True(GradientRegistry.Default.Find("Where")!.IsDifferentiable(1));
        Assert.False(GradientRegistry.Default.Find("Where")!.IsDifferentiable(0));
        Assert.False(GradientRegistry.Default.Find("Clip")!.IsDifferentiable(1));
        Assert.False(GradientRegistry.Default.Find("Dropout")!.IsDifferentiable(2));
    }
}
