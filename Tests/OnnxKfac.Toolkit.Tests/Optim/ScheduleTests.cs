using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Tests.Optim;

/// <summary>Schedules against torch.optim.lr_scheduler (rates of updates 1, 2, ... with base lr 1).</summary>
public class ScheduleTests
{
    private static void AssertRates(double[] expected, ILearningRateSchedule schedule)
    {
        for (int u = 1; u <= expected.Length; u++)
            Assert.True(Math.Abs(expected[u - 1] - schedule.Factor(u)) <= 1e-12,
                $"update {u}: torch {expected[u - 1]:R}, ours {schedule.Factor(u):R}");
    }

    [Fact]
    public void StepMatchesStepLR() => AssertRates(TorchReference.StepLrRates, new StepSchedule(3, 0.1));

    [Fact]
    public void CosineMatchesCosineAnnealingLR() =>
        AssertRates(TorchReference.CosineRates, new CosineSchedule(10, minFactor: 0.05));

    [Fact]
    public void WarmupCosineMatchesSequentialLR() =>
        AssertRates(TorchReference.WarmupCosineRates, new WarmupSchedule(4, new CosineSchedule(8), startFactor: 0.1));

    [Fact]
    public void WarmupStepMatchesSequentialLR() =>
        AssertRates(TorchReference.WarmupStepRates, new WarmupSchedule(3, new StepSchedule(2, 0.5), startFactor: 0.5));

    [Fact]
    public void FirstUpdateUsesTheStartingRate()
    {
        Assert.Equal(1.0, ConstantSchedule.Instance.Factor(1));
        Assert.Equal(1.0, new StepSchedule(1, 0.5).Factor(1));
        Assert.Equal(0.5, new StepSchedule(1, 0.5).Factor(2));
        Assert.Equal(1.0, new CosineSchedule(5).Factor(1));
        Assert.Equal(1.0 / 3, new WarmupSchedule(5).Factor(1));
        Assert.Equal(1.0, new WarmupSchedule(5).Factor(6));
    }

    [Fact]
    public void CosineHoldsItsMinimumAfterTotalSteps()
    {
        var s = new CosineSchedule(4, minFactor: 0.2);
        Assert.Equal(0.2, s.Factor(5), 15);
        Assert.Equal(0.2, s.Factor(6), 15);
        Assert.Equal(0.2, s.Factor(1000), 15);
    }

    [Fact]
    public void ScheduleScalesTheOptimizersRate()
    {
        // SGD without momentum: the update is exactly lr·factor·g.
        var p = Parameter.Create("w", [1]);
        var sgd = new Sgd([p], new SgdOptions { LearningRate = 1, Schedule = new StepSchedule(1, 0.5) });
        var ctx = new StepContext([p]);
        for (int u = 1; u <= 3; u++)
        {
            ctx.UpdateCount = u;
            p.Value[0] = 0;
            p.Grad[0] = 1;
            sgd.Step(ctx);
            Assert.Equal(-Math.Pow(0.5, u - 1), p.Value[0]);
        }
    }

    [Theory]
    [InlineData("StepSize")]
    [InlineData("Gamma")]
    [InlineData("TotalSteps")]
    [InlineData("MinFactor")]
    [InlineData("WarmupSteps")]
    [InlineData("StartFactor")]
    public void InvalidArgumentsNameTheirOption(string option)
    {
        Action make = option switch
        {
            "StepSize" => () => _ = new StepSchedule(0),
            "Gamma" => () => _ = new StepSchedule(1, -0.5),
            "TotalSteps" => () => _ = new CosineSchedule(0),
            "MinFactor" => () => _ = new CosineSchedule(10, 1.5),
            "WarmupSteps" => () => _ = new WarmupSchedule(0),
            _ => () => _ = new WarmupSchedule(3, startFactor: 0),
        };
        var e = Assert.Throws<ArgumentException>(make);
        Assert.Equal(option, e.ParamName);
        Assert.Contains(option, e.Message);
    }

    [Fact]
    public void UpdatesCountFromOne() =>
        Assert.ThrowsAny<ArgumentException>(() => new CosineSchedule(3).Factor(0));
}
