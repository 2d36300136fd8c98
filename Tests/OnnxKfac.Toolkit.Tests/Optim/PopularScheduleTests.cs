using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Tests.Optim;

/// <summary>
/// Linear-with-warm-up (Hugging Face's default), one-cycle and reduce-on-plateau against the
/// rates torch gives (TorchScheduleReference.cs, written by tools/fixtures/schedule_reference.py).
/// </summary>
public sealed class PopularScheduleTests
{
    private static void AssertRates(double[] expected, ILearningRateSchedule schedule)
    {
        for (int u = 1; u <= expected.Length; u++)
            Assert.True(Math.Abs(expected[u - 1] - schedule.Factor(u)) <= 1e-12,
                $"update {u}: torch {expected[u - 1]:R}, ours {schedule.Factor(u):R}");
    }

    [Fact]
    public void LinearWithWarmupMatchesHuggingFace() => AssertRates(TorchScheduleReference.LinearWarmupRates, new LinearSchedule(20, 5));

    [Fact]
    public void LinearWithoutWarmupDecaysFromTheBaseRate() => AssertRates(TorchScheduleReference.LinearRates, new LinearSchedule(10));

    [Fact]
    public void OneCycleMatchesOneCycleLR() => AssertRates(TorchScheduleReference.OneCycleRates, new OneCycleSchedule(20));

    [Fact]
    public void OneCycleWithItsOptionsMatchesOneCycleLR() =>
        AssertRates(TorchScheduleReference.OneCycleCustomRates, new OneCycleSchedule(15, pctStart: 0.4, divFactor: 10, finalDivFactor: 100));

    [Fact]
    public void OneCycleStaysAtItsFinalRateAfterTheCycle()
    {
        var s = new OneCycleSchedule(20);
        Assert.Equal(1.0 / 25 / 1e4, s.Factor(20), 15);
        Assert.Equal(s.Factor(20), s.Factor(100));
    }

    [Fact]
    public void PlateauMatchesReduceLROnPlateau()
    {
        var s = new PlateauSchedule(reduceBy: 0.5, patience: 2, threshold: 0.01, cooldown: 1, minFactor: 0.1);
        var metrics = TorchScheduleReference.PlateauMetrics;
        for (int v = 0; v < metrics.Length; v++)
        {
            Assert.True(Math.Abs(TorchScheduleReference.PlateauRates[v] - s.Factor(v + 1)) <= 1e-12, $"after {v} validations: torch {TorchScheduleReference.PlateauRates[v]}, ours {s.Current}");
            s.Observe(metrics[v]);
        }
    }

    [Fact]
    public void PlateauDefaultsAreTorchsAndTheFactorNeverGoesBelowTheMinimum()
    {
        var s = new PlateauSchedule();
        for (int v = 0; v < 20; v++)
        {
            Assert.Equal(TorchScheduleReference.PlateauDefaultRates[v], s.Current, 12);
            s.Observe(1.0);
        }
        var floor = new PlateauSchedule(reduceBy: 0.5, patience: 0, minFactor: 0.3);
        for (int v = 0; v < 5; v++) floor.Observe(1.0);
        Assert.Equal(0.3, floor.Current);
    }

    [Fact]
    public void PlateauStateRoundTripsAndContinuesIdentically()
    {
        var a = new PlateauSchedule(reduceBy: 0.5, patience: 2, threshold: 0.01, cooldown: 1, minFactor: 0.1);
        var metrics = TorchScheduleReference.PlateauMetrics;
        for (int v = 0; v < 10; v++) a.Observe(metrics[v]);
        var b = new PlateauSchedule(reduceBy: 0.5, patience: 2, threshold: 0.01, cooldown: 1, minFactor: 0.1);
        b.LoadState(a.SaveState());
        for (int v = 10; v < metrics.Length; v++)
        {
            Assert.Equal(a.Observe(metrics[v]), b.Observe(metrics[v]));
            Assert.Equal(a.SaveState(), b.SaveState());
        }
        Assert.True(b.Current < 1, "the run reduced the rate");
    }

    [Fact]
    public void BadOptionsNameTheProperty()
    {
        Assert.Equal("WarmupSteps", Assert.ThrowsAny<ArgumentException>(() => new LinearSchedule(10, 10)).ParamName);
        Assert.Equal("PctStart", Assert.ThrowsAny<ArgumentException>(() => new OneCycleSchedule(10, pctStart: 1)).ParamName);
        Assert.Equal("ReduceBy", Assert.ThrowsAny<ArgumentException>(() => new PlateauSchedule(reduceBy: 1)).ParamName);
    }
}
