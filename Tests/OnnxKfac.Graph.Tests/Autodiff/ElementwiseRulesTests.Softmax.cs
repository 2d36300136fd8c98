using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Tests.Support;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

public partial class ElementwiseRulesTests
{
    [Theory]
    [InlineData("Softmax", 0)]
    [InlineData("Softmax", 1)]
    [InlineData("Softmax", -1)]
    [InlineData("Softmax", null)]
    [InlineData("LogSoftmax", 0)]
    [InlineData("LogSoftmax", 1)]
    [InlineData("LogSoftmax", -1)]
    [InlineData("LogSoftmax", null)]
    public void SoftmaxFamilyOnEachAxis(string op, int? axis)
    {
        var attrs = axis is { } a ? new[] { Attributes.Int("axis", a) } : [];
        Op(op, ["x"], In(("x", Random(D, [2, 3, 4], 1, -2, 2))), attributes: attrs);
        Op(op, ["x"], In(("x", Random(F, [2, 3, 4], 1, -2, 2))), opsets: [17], attributes: attrs);
    }

    [Theory]
    [InlineData("Softmax")]
    [InlineData("LogSoftmax")]
    public void SoftmaxFamilyWithLargeLogits(string op)
    {
        // Logits of ±50 (and ±100 in float32, where exp overflows): finite gradients that still match.
        var x = Random(D, [2, 3, 4], 1, -50, 50);
        x.Data[0] = 50;
        x.Data[1] = -50;
        Op(op, ["x"], In(("x", x)), opsets: [17], attributes: Attributes.Int("axis", 1));
        var big = Random(F, [2, 3, 4], 2, -100, 100);
        big.Data[0] = 100;
        big.Data[5] = -100;
        foreach (int axis in new[] { 0, 1, -1 })
        {
            var inputs = In(("x", big));
            var model = TestModels.SingleOp(op, 13, ["x"], inputs, attributes: Attributes.Int("axis", axis));
            var g = Vjp(model, inputs, ["x"], Random(F, [2, 3, 4], 3))["x"];
            Assert.All(g, v => Assert.True(double.IsFinite(v), $"{op} axis {axis}: non-finite gradient {v}"));
            // Logits this far apart leave Softmax a gradient of ~1e-4, below the rounding noise of a
            // float32 difference over h = 1e-2; a step of 0.25 keeps it measurable (and is exact enough).
            // Along axis 0 (pairs of logits far apart) Softmax saturates: its gradient (~1e-6) is zero to
            // float32 rounding, which the check asserts instead; the float64 case above checks the values.
            var zero = op == "Softmax" && axis == 0 ? new[] { "x" } : [];
            GradCheck.Check(model, inputs, ["x"], new GradCheck.Options { Tolerance = 2e-2, Step = 0.25, ZeroGradient = zero });
        }
    }
}
