using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Tests.Optim;

public class OptionsTests
{
    [Fact]
    public void DefaultsMatchTorch()
    {
        var sgd = new SgdOptions();
        Assert.Equal(1e-3, sgd.LearningRate);
        Assert.Equal(0, sgd.Momentum);
        Assert.Equal(0, sgd.Dampening);
        Assert.Equal(0, sgd.WeightDecay);
        Assert.False(sgd.Nesterov);
        Assert.Same(ConstantSchedule.Instance, sgd.Schedule);
        Assert.Empty(sgd.Groups);

        var adam = new AdamWOptions();
        Assert.Equal(1e-3, adam.LearningRate);
        Assert.Equal(0.9, adam.Beta1);
        Assert.Equal(0.999, adam.Beta2);
        Assert.Equal(1e-8, adam.Epsilon);
        Assert.Equal(1e-2, adam.WeightDecay);
        Assert.False(adam.AmsGrad);
    }

    public static TheoryData<string, Func<object>> InvalidOptions => new()
    {
        { "LearningRate", () => new SgdOptions { LearningRate = -0.1 } },
        { "LearningRate", () => new AdamWOptions { LearningRate = double.NaN } },
        { "Momentum", () => new SgdOptions { Momentum = -0.9 } },
        { "Dampening", () => new SgdOptions { Dampening = 1.5 } },
        { "WeightDecay", () => new SgdOptions { WeightDecay = -1 } },
        { "WeightDecay", () => new AdamWOptions { WeightDecay = double.PositiveInfinity } },
        { "Beta1", () => new AdamWOptions { Beta1 = 1.0 } },
        { "Beta1", () => new AdamWOptions { Beta1 = -0.1 } },
        { "Beta2", () => new AdamWOptions { Beta2 = 1.2 } },
        { "Epsilon", () => new AdamWOptions { Epsilon = -1e-8 } },
        { "LearningRate", () => new ParameterGroup("x") { LearningRate = -1 } },
        { "Momentum", () => new ParameterGroup("x") { Momentum = -1 } },
        { "Schedule", () => new SgdOptions { Schedule = null! } },
        { "Nesterov", () => new Sgd([Parameter.Create("w", [2])], new SgdOptions { Nesterov = true }) },
        { "Nesterov", () => new Sgd([Parameter.Create("w", [2])], new SgdOptions { Nesterov = true, Momentum = 0.9, Dampening = 0.1 }) },
        { "Nesterov", () => new Sgd([Parameter.Create("w", [2])], new SgdOptions
            { Nesterov = true, Momentum = 0.9, Groups = [new ParameterGroup("w") { Momentum = 0 }] }) },
        { "Momentum", () => new AdamW([Parameter.Create("w", [2])], new AdamWOptions { Groups = [new ParameterGroup("w") { Momentum = 1 }] }) },
        { "Groups", () => new Sgd([Parameter.Create("w", [2])], new SgdOptions { Groups = [new ParameterGroup("backbone.*")] }) },
    };

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public void InvalidValuesThrowNamingTheOption(string option, Func<object> make)
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => make());
        Assert.Equal(option, e.ParamName);
        Assert.Contains(option, e.Message);
    }

    [Fact]
    public void RecordsAreImmutableValues()
    {
        var a = new AdamWOptions { LearningRate = 0.01 };
        var b = a with { AmsGrad = true };
        Assert.False(a.AmsGrad);
        Assert.True(b.AmsGrad);
        Assert.Equal(0.01, b.LearningRate);
        Assert.Throws<ArgumentException>(() => a with { Beta2 = 1 });
    }

    [Fact]
    public void GroupListIsCopied()
    {
        var groups = new List<ParameterGroup> { new("a") };
        var options = new SgdOptions { Groups = groups };
        groups.Add(new ParameterGroup("b"));
        Assert.Single(options.Groups);
    }
}
