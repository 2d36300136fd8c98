using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Tests.Support;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

public partial class ElementwiseRulesTests
{
    [Theory]
    [InlineData("Relu", D)]
    [InlineData("Sigmoid", D)]
    [InlineData("Tanh", D)]
    [InlineData("Relu", F)]
    [InlineData("Sigmoid", F)]
    [InlineData("Tanh", F)]
    // No double kernels in ORT 1.31 for these (LeakyRelu and PRelu have one at opsets 16-18 only).
    [InlineData("LeakyRelu", F)]
    [InlineData("Elu", F)]
    [InlineData("Selu", F)]
    [InlineData("ThresholdedRelu", F)]
    [InlineData("HardSigmoid", F)]
    [InlineData("Softplus", F)]
    [InlineData("Softsign", F)]
    public void ActivationsWithDefaultAttributes(string op, int elemType)
    {
        // Kinks (0, ThresholdedRelu's 1, HardSigmoid's ±2.5) kept out of the difference stencils.
        var x = Away(Random(elemType, [2, 3, 4], 1, -3, 3), 0.05, 0, 1, -2.5, 2.5);
        Op(op, ["x"], In(("x", x)), options: elemType == F ? Float32 : null);
    }

    [Fact]
    public void ActivationsWithAttributes()
    {
        var x = In(("x", Away(Random(F, [2, 3, 4], 1, -3, 3), 0.05, 0, 0.7, -1.25, 1.25)));
        Op("LeakyRelu", ["x"], x, options: Float32, attributes: Attributes.Float("alpha", 0.3f));
        Op("Elu", ["x"], x, options: Float32, attributes: Attributes.Float("alpha", 0.7f));
        Op("Selu", ["x"], x, options: Float32, attributes: [Attributes.Float("alpha", 1.5f), Attributes.Float("gamma", 0.8f)]);
        Op("ThresholdedRelu", ["x"], x, options: Float32, attributes: Attributes.Float("alpha", 0.7f));
        Op("HardSigmoid", ["x"], x, options: Float32, attributes: [Attributes.Float("alpha", 0.4f), Attributes.Float("beta", 0.5f)]);
        // LeakyRelu has a double kernel at opset 17.
        Op("LeakyRelu", ["x"], In(("x", Away(Random(D, [2, 3, 4], 1, -3, 3), 0.05, 0))), opsets: [17], attributes: Attributes.Float("alpha", 0.3f));
    }

    [Fact]
    public void CeluHardSwishMish()
    {
        var x = Away(Random(F, [2, 3, 4], 1, -4, 4), 0.1, 0, -3, 3);
        // Float32 only: Celu is float-only by its schema; ORT has no double HardSwish or Mish kernel.
        Op("Celu", ["x"], In(("x", x)), options: Float32);
        Op("Celu", ["x"], In(("x", x)), options: Float32, attributes: Attributes.Float("alpha", 2f));
        Op("HardSwish", ["x"], In(("x", x)), opsets: [14, 17, 20], options: Float32);
        Op("Mish", ["x"], In(("x", x)), opsets: [18, 20], options: Float32);
    }

    [Fact]
    public void PReluWithBroadcastSlope()
    {
        // Float32: PRelu has a double kernel at opsets 16-18 only (also checked, at 17).
        var x = Away(Random(F, [2, 3, 4], 1), 0.05, 0);
        Op("PRelu", ["x", "s"], In(("x", x), ("s", Random(F, [3, 1], 2))), options: Float32);
        Op("PRelu", ["x", "s"], In(("x", x), ("s", Random(F, [4], 3))), options: Float32);
        Op("PRelu", ["x", "s"], In(("x", x), ("s", Random(F, [2, 3, 4], 4))), options: Float32);
        Op("PRelu", ["x", "s"], In(("x", x)), In(("s", Float([1], [0.25]))), options: Float32);
        Op("PRelu", ["x", "s"], In(("x", Away(Random(D, [2, 3, 4], 1), 0.05, 0)), ("s", Random(D, [3, 1], 2))), opsets: [17]);
    }

    [Theory]
    [InlineData("none")]
    [InlineData("tanh")]
    public void Gelu(string approximate)
    {
        // ORT has no Gelu kernel for double and expands the op's function body instead: the tanh
        // form runs in double, the erf form does not (no double Erf kernel).
        var attr = Attributes.String("approximate", approximate);
        if (approximate == "tanh") Op("Gelu", ["x"], In(("x", Random(D, [2, 3, 4], 1, -4, 4))), opsets: [20], attributes: attr);
        Op("Gelu", ["x"], In(("x", Random(F, [2, 3, 4], 1, -4, 4))), opsets: [20], options: Float32, attributes: attr);
    }

    [Fact]
    public void GradientsAtKinksFollowPyTorch()
    {
        double[] x = [-1, 0, 1];
        Assert.Equal([0.0, 0, 1], GradAt("Relu", x));                                                   // relu'(0) = 0
        Assert.Equal([0.25, 0.25, 1], GradAt("LeakyRelu", x, elemType: F, attributes: Attributes.Float("alpha", 0.25f))); // x > 0 ? 1 : slope
        Assert.Equal([0.5, 0.5, 1], GradAt("PRelu", x, ["x", "s"], In(("s", Float([1], [0.5]))), elemType: F));
        Assert.Equal([0.0, 0, 1], GradAt("ThresholdedRelu", [0.5, 1, 1.5], elemType: F));               // x > alpha
        Close([0.5 * Math.Exp(-1), 0.5, 1], GradAt("Elu", x, elemType: F, attributes: Attributes.Float("alpha", 0.5f))); // x <= 0: alpha·exp(x)
        Close([1.05070102214813232421875 * 1.67326319217681884765625], GradAt("Selu", [0.0], elemType: F));
        Assert.Equal([1.0], GradAt("Celu", [0.0], elemType: F));
        // HardSigmoid: zero at both corners (strict); HardSwish: x/3 + 1/2 on [−3, 3], bounds included.
        Close([0.0, 0.2, 0], GradAt("HardSigmoid", [-2.5, 0, 2.5], elemType: F));
        Assert.Equal([0.0, -0.5, 0.5, 1.5, 1], GradAt("HardSwish", [-3.5, -3, 0, 3, 3.5], elemType: F, opset: 14));
    }
}
