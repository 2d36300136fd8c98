using OnnxKfac.Graph.Tests.Support;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

/// <summary>Pow with a constant exponent (initializer) folds the exponent at build time.</summary>
public class PowConstantExponentTests
{
    [Theory]
    [InlineData(2.0)]
    [InlineData(1.0)]
    [InlineData(3.0)]
    [InlineData(0.5)]
    [InlineData(-1.5)]
    public void ConstantExponent(double p)
    {
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(11, [3, 4], 1, 0.5, 2.0) };
        var constants = new Dictionary<string, TestTensor> { ["p"] = Double([], [p]) };
        GradCheck.Op("Pow", ["x", "p"], inputs, constants);
        var model = TestModels.SingleOp("Pow", 17, ["x", "p"], inputs, constants);
        var g = OnnxKfac.Graph.Autodiff.GradientGraph.Build(model, ["y0"], ["x"]);
        int pows = g.Graph.Node.Count(n => n.OpType == "Pow");
        Assert.Equal(p is 1.0 or 2.0 ? 1 : 2, pows); // the forward Pow, plus one only when it cannot be avoided
    }
}
