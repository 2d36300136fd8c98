using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Tests.Optim;

public class AccumulationTests
{
    [Fact]
    public void EqualMicroBatchesAverage()
    {
        var p = Parameter.Create("w", [11]);
        var frozen = Parameter.Create("n", [3], trainable: false);
        var acc = new GradientAccumulator([p, frozen], 3);
        float[][] grads = [.. Enumerable.Range(0, 3).Select(k => Enumerable.Range(0, 11).Select(i => (float)(i * (k + 1) - k)).ToArray())];
        for (int k = 0; k < 3; k++)
        {
            grads[k].CopyTo(p.Grad, 0);
            Array.Fill(frozen.Grad, k + 10f);
            Assert.Equal(k == 2, acc.Add(8));
            Assert.Equal(k == 2 ? 0 : k + 1, acc.Pending);
        }
        for (int i = 0; i < 11; i++)
            Assert.Equal((grads[0][i] + grads[1][i] + grads[2][i]) / 3, p.Grad[i], 5);
        Assert.All(frozen.Grad, g => Assert.Equal(12f, g)); // untouched
    }

    [Fact]
    public void UnequalMicroBatchesWeighByExamples()
    {
        // Mean losses over 3 and 1 examples: the batch mean's gradient is (3 g1 + 1 g2) / 4.
        var p = Parameter.Create("w", [2]);
        var acc = new GradientAccumulator([p], 2);
        p.Grad[0] = 1; p.Grad[1] = 2;
        Assert.False(acc.Add(3));
        p.Grad[0] = 5; p.Grad[1] = -2;
        Assert.True(acc.Add(1));
        Assert.Equal(2f, p.Grad[0]);
        Assert.Equal(1f, p.Grad[1]);
    }

    [Fact]
    public void FlushCompletesAPartialAccumulation()
    {
        var p = Parameter.Create("w", [1]);
        var acc = new GradientAccumulator([p], 4);
        Assert.False(acc.Flush());
        p.Grad[0] = 2; acc.Add();
        p.Grad[0] = 4; acc.Add();
        p.Grad[0] = 99; // a later micro-batch that was never added
        Assert.True(acc.Flush());
        Assert.Equal(3f, p.Grad[0]);
        Assert.Equal(0, acc.Pending);
        Assert.False(acc.Flush());
    }

    [Fact]
    public void OneMicroBatchPassesThrough()
    {
        var p = Parameter.Create("w", [1]);
        p.Grad[0] = 7;
        var acc = new GradientAccumulator([p], 1);
        Assert.True(acc.Add(32));
        Assert.Equal(7f, p.Grad[0]);
        Assert.Equal("microBatches", Assert.Throws<ArgumentException>(() => new GradientAccumulator([p], 0)).ParamName);
        Assert.Equal("examples", Assert.Throws<ArgumentException>(() => acc.Add(0)).ParamName);
    }

    [Fact]
    public void AccumulatedStepEqualsTheFullBatchStep()
    {
        // The full batch's gradient is the mean of the per-step fixture gradients 1..4;
        // four micro-batches of equal size must produce the same AdamW update.
        var full = Fixture.MakeParameters();
        var micro = Fixture.MakeParameters();
        var mean = full.Select(p => new float[p.Grad.Length]).ToArray();
        for (int t = 1; t <= 4; t++)
        {
            Fixture.SetGrads(full, t);
            for (int j = 0; j < full.Length; j++)
                for (int i = 0; i < mean[j].Length; i++) mean[j][i] += full[j].Grad[i] / 4;
        }
        for (int j = 0; j < full.Length; j++) mean[j].CopyTo(full[j].Grad, 0);
        new AdamW(full).Step(new StepContext(full));

        var acc = new GradientAccumulator(micro, 4);
        for (int t = 1; t <= 4; t++)
        {
            Fixture.SetGrads(micro, t);
            Assert.Equal(t == 4, acc.Add(16));
        }
        new AdamW(micro).Step(new StepContext(micro));
        Fixture.AssertClose(Fixture.Flatten(full), Fixture.Flatten(micro), "accumulated vs full batch");
    }
}
