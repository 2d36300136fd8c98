using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Tests.Optim;

public class BehaviourTests
{
    private static Parameter Filled(string name, int n, float value, float grad, bool trainable = true)
    {
        var p = Parameter.Create(name, [n], trainable);
        Array.Fill(p.Value, value);
        Array.Fill(p.Grad, grad);
        return p;
    }

    [Fact]
    public void FirstMatchingGroupWinsAndTheRestUseTheDefaults()
    {
        Parameter a = Filled("backbone.layer1.weight", 3, 1, 1), b = Filled("backbone.head.bias", 3, 1, 1), c = Filled("head.weight", 3, 1, 1);
        var sgd = new Sgd([a, b, c], new SgdOptions
        {
            LearningRate = 0.5,
            Groups = [new ParameterGroup("*.bias") { LearningRate = 0.25 }, new ParameterGroup("backbone.*") { LearningRate = 0.125 }],
        });
        sgd.Step(new StepContext([a, b, c]));
        Assert.Equal(1 - 0.125f, a.Value[0]);
        Assert.Equal(1 - 0.25f, b.Value[0]);
        Assert.Equal(1 - 0.5f, c.Value[0]);
    }

    [Fact]
    public void FrozenAndNonTrainableParametersAreNeverUpdated()
    {
        Parameter w = Filled("w", 5, 1, 1), f = Filled("frozen.w", 5, 1, 1), n = Filled("buffer", 5, 1, 1, trainable: false);
        Parameter[] ps = [w, f, n];
        var adam = new AdamW(ps, new AdamWOptions { Groups = [new ParameterGroup("frozen.*") { Frozen = true }] });
        var ctx = new StepContext(ps);
        for (int t = 1; t <= 3; t++) { ctx.UpdateCount = t; adam.Step(ctx); }
        Assert.NotEqual(1f, w.Value[0]);
        Assert.All(f.Value, x => Assert.Equal(1f, x));
        Assert.All(n.Value, x => Assert.Equal(1f, x));
        var state = adam.SaveState();
        Assert.DoesNotContain(state.Tensors.Keys, k => k.EndsWith(":frozen.w") || k.EndsWith(":buffer"));
        Assert.True(state.ParameterShapes.ContainsKey("frozen.w"));
        Assert.False(state.ParameterShapes.ContainsKey("buffer"));
    }

    [Fact]
    public void AGroupMatchingOnlyNonTrainableParametersIsAnError()
    {
        var e = Assert.Throws<ArgumentException>(() => new Sgd([Filled("w", 1, 0, 0), Filled("bn.mean", 1, 0, 0, trainable: false)],
            new SgdOptions { Groups = [new ParameterGroup("bn.*") { Frozen = true }] }));
        Assert.Contains("bn.*", e.Message);
    }

    [Fact]
    public void StepRejectsAnotherParameterList()
    {
        Parameter[] ps = [Filled("w", 2, 0, 0)];
        var sgd = new Sgd(ps);
        sgd.Step(new StepContext([.. ps])); // a copy of the same list is fine
        Assert.Throws<ArgumentException>(() => sgd.Step(new StepContext([Filled("w", 2, 0, 0)])));
        Assert.Throws<ArgumentException>(() => new Sgd([ps[0], ps[0]]));
    }

    [Fact]
    public void SgdMomentumBufferStartsAtTheGradient()
    {
        // torch: buf = d_p on the first step (no dampening applied), then μ·buf + (1 - τ)·d_p.
        var p = Filled("w", 1, 0, 1);
        var sgd = new Sgd([p], new SgdOptions { LearningRate = 1, Momentum = 0.5, Dampening = 0.5 });
        var ctx = new StepContext([p]);
        sgd.Step(ctx);
        Assert.Equal(-1f, p.Value[0]);
        ctx.UpdateCount = 2;
        sgd.Step(ctx);
        Assert.Equal(-1f - (0.5f + 0.5f), p.Value[0]);
    }

    [Fact]
    public void AdamWFirstStepMovesByTheLearningRate()
    {
        // m̂ = g, v̂ = g² on step 1, so the step is lr·sign(g) (up to eps), after decoupled decay.
        var p = Filled("w", 3, 2, -4);
        var adam = new AdamW([p], new AdamWOptions { LearningRate = 0.1, WeightDecay = 0.5, Epsilon = 0 });
        adam.Step(new StepContext([p]));
        Assert.Equal(2 * (1 - 0.05f) + 0.1f, p.Value[0], 6);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void VectorAndScalarPathsAgreeBitForBit(bool adam)
    {
        // One parameter of 103 elements takes the Vector<float> path; 103 one-element
        // parameters take the scalar tail. Both must give the same bits.
        const int n = 103;
        var big = Parameter.Create("big", [n]);
        var small = Enumerable.Range(0, n).Select(i => Parameter.Create($"s{i}", [1])).ToArray();
        for (int i = 0; i < n; i++) big.Value[i] = small[i].Value[0] = MathF.Sin(i) * 2;
        IOptimizer Make(Parameter[] ps) => adam
            ? new AdamW(ps, new AdamWOptions { LearningRate = 0.01, AmsGrad = true, WeightDecay = 0.1 })
            : new Sgd(ps, new SgdOptions { LearningRate = 0.05, Momentum = 0.9, Nesterov = true, WeightDecay = 0.01 });
        var ob = Make([big]);
        var os = Make(small);
        var cb = new StepContext([big]);
        var cs = new StepContext(small);
        for (int t = 1; t <= 5; t++)
        {
            for (int i = 0; i < n; i++) big.Grad[i] = small[i].Grad[0] = MathF.Cos(i * t) * (t % 2 == 0 ? 3 : 0.2f);
            cb.UpdateCount = cs.UpdateCount = t;
            ob.Step(cb);
            os.Step(cs);
        }
        for (int i = 0; i < n; i++) Assert.Equal(big.Value[i], small[i].Value[0]);
    }

    [Fact]
    public void ClippingBelowTheThresholdChangesNothing()
    {
        Parameter a = Filled("a", 4, 0, 0.5f), frozen = Filled("n", 4, 0, 100, trainable: false);
        double norm = GradientClipping.ClipByGlobalNorm([a, frozen], 1.5);
        Assert.Equal(1.0, norm, 12);
        Assert.All(a.Grad, g => Assert.Equal(0.5f, g));
        Assert.All(frozen.Grad, g => Assert.Equal(100f, g));

        norm = GradientClipping.ClipByGlobalNorm([a, frozen], 0.5);
        Assert.Equal(1.0, norm, 12);
        Assert.All(a.Grad, g => Assert.Equal(0.25f, g, 6));
        Assert.All(frozen.Grad, g => Assert.Equal(100f, g));
        Assert.Equal("maxNorm", Assert.Throws<ArgumentException>(() => GradientClipping.ClipByGlobalNorm([a], 0)).ParamName);
    }

    [Fact]
    public void ParameterChecksItsBuffers()
    {
        Assert.Throws<ArgumentException>(() => new Parameter("w", [2, 3], new float[6], new float[5]));
        Assert.Throws<ArgumentException>(() => new Parameter("w", [2, 3], new float[5], new float[5]));
        Assert.Throws<ArgumentException>(() => new Parameter("w", [-1], new float[0], new float[0]));
        var shared = new float[2];
        Assert.Throws<ArgumentException>(() => new Parameter("w", [2], shared, shared));
        var p = Parameter.Create("w", [2, 3]);
        Assert.Equal(6, p.Value.Length);
        Assert.Equal(6, p.Grad.Length);
        Assert.Equal("w [2, 3]", p.ToString());
    }

    [Fact]
    public void StepContextCountsFromOne()
    {
        var ctx = new StepContext([]);
        Assert.Equal(1, ctx.UpdateCount);
        Assert.Null(ctx.Pass);
        ctx.Advance(0.25);
        Assert.Equal(2, ctx.UpdateCount);
        Assert.Equal(0.25, ctx.Loss);
        Assert.Throws<ArgumentOutOfRangeException>(() => ctx.UpdateCount = 0);
    }
}
