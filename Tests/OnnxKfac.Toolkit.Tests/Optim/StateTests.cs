using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Tests.Optim;

public class StateTests
{
    private static readonly SgdOptions SgdOpts = new()
    {
        LearningRate = 0.1, Momentum = 0.9, Nesterov = true, WeightDecay = 0.01, Schedule = new StepSchedule(2, 0.5),
    };

    private static readonly AdamWOptions AdamOpts = new()
    {
        LearningRate = 0.02, WeightDecay = 0.01, AmsGrad = true, Schedule = new StepSchedule(3, 0.3),
    };

    private static void Train(IOptimizer optimizer, Parameter[] ps, int from, int to)
    {
        var ctx = new StepContext(ps);
        for (int t = from; t <= to; t++)
        {
            ctx.UpdateCount = t;
            Fixture.SetGrads(ps, t);
            GradientClipping.ClipByGlobalNorm(ps, 1.5);
            optimizer.Step(ctx);
        }
    }

    private static OptimizerState RoundTrip(OptimizerState state)
    {
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true)) state.Write(w);
        stream.Position = 0;
        using var r = new BinaryReader(stream);
        return OptimizerState.Read(r);
    }

    private static byte[] Bytes(OptimizerState state)
    {
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream)) state.Write(w);
        return stream.ToArray();
    }

    public static TheoryData<string> Kinds => new() { "sgd", "adamw" };

    private static IOptimizer Make(string kind, Parameter[] ps) =>
        kind == "sgd" ? new Sgd(ps, SgdOpts) : new AdamW(ps, AdamOpts);

    [Theory]
    [MemberData(nameof(Kinds))]
    public void ResumingFromACheckpointContinuesTheSameTrajectory(string kind)
    {
        var straight = Fixture.MakeParameters();
        Train(Make(kind, straight), straight, 1, 6);

        var first = Fixture.MakeParameters();
        var before = Make(kind, first);
        Train(before, first, 1, 3);
        var saved = RoundTrip(before.SaveState());

        // A fresh optimizer over fresh buffers holding the checkpointed weights.
        var resumed = Fixture.MakeParameters();
        for (int j = 0; j < resumed.Length; j++) first[j].Value.CopyTo(resumed[j].Value, 0);
        var after = Make(kind, resumed);
        after.LoadState(saved);
        Train(after, resumed, 4, 6);

        Assert.Equal(Fixture.Flatten(straight), Fixture.Flatten(resumed));
        Assert.Equal(Bytes(before.SaveState()), Bytes(RoundTrip(before.SaveState())));
    }

    [Fact]
    public void SavedStateHoldsTorchNamedBuffers()
    {
        var ps = Fixture.MakeParameters();
        var adam = new AdamW(ps, AdamOpts);
        Assert.Empty(adam.SaveState().Tensors);
        Train(adam, ps, 1, 2);
        var state = adam.SaveState();
        Assert.Equal("adamw", state.Kind);
        Assert.Equal(2, state.Longs["step:fc.weight"]);
        Assert.Equal(20, state.Tensors["exp_avg:fc.weight"].Length);
        Assert.Equal(4, state.Tensors["max_exp_avg_sq:fc.bias"].Length);
        Assert.Equal([4L, 5L], state.ParameterShapes["fc.weight"]);
        Assert.Equal(3, state.ParameterShapes.Count);

        // A snapshot, not a view.
        float before = state.Tensors["exp_avg:fc.weight"][0];
        Train(adam, ps, 3, 3);
        Assert.Equal(before, state.Tensors["exp_avg:fc.weight"][0]);
    }

    [Fact]
    public void SerializationIsDeterministic()
    {
        var ps = Fixture.MakeParameters();
        var sgd = new Sgd(ps, SgdOpts);
        Train(sgd, ps, 1, 2);
        var state = sgd.SaveState();
        state.Doubles["z"] = 1.5;
        state.Doubles["a"] = -2;
        state.Longs["n"] = 7;
        var copy = RoundTrip(state);
        Assert.Equal(Bytes(state), Bytes(copy));
        Assert.Equal(1.5, copy.Doubles["z"]);
        Assert.Equal(7, copy.Longs["n"]);
    }

    [Fact]
    public void FileRoundTrip()
    {
        var ps = Fixture.MakeParameters();
        var adam = new AdamW(ps, AdamOpts);
        Train(adam, ps, 1, 2);
        string path = Path.Combine(Path.GetTempPath(), $"optim-state-{Environment.ProcessId}.bin");
        try
        {
            adam.SaveState().Save(path);
            Assert.Equal(Bytes(adam.SaveState()), Bytes(OptimizerState.Load(path)));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void MalformedStreamsFailClearly()
    {
        var ps = Fixture.MakeParameters();
        var sgd = new Sgd(ps, SgdOpts);
        Train(sgd, ps, 1, 1);
        byte[] good = Bytes(sgd.SaveState());

        Assert.Throws<InvalidDataException>(() => Read(good[..^3]));
        var bad = (byte[])good.Clone();
        bad[0] ^= 0xFF;
        Assert.Contains("magic", Assert.Throws<InvalidDataException>(() => Read(bad)).Message);

        static OptimizerState Read(byte[] bytes)
        {
            using var r = new BinaryReader(new MemoryStream(bytes));
            return OptimizerState.Read(r);
        }
    }

    private static Parameter[] OtherModel() =>
        [Parameter.Create("conv.weight", [4, 5]), Parameter.Create("fc.bias", [4]), Parameter.Create("emb.weight", [2, 3])];

    private static Parameter[] Reshaped() =>
        [Parameter.Create("fc.weight", [5, 4]), Parameter.Create("fc.bias", [4]), Parameter.Create("emb.weight", [2, 3])];

    [Theory]
    [MemberData(nameof(Kinds))]
    public void AnotherModelsCheckpointIsRejected(string kind)
    {
        var ps = Fixture.MakeParameters();
        var opt = Make(kind, ps);
        Train(opt, ps, 1, 2);
        var state = opt.SaveState();

        var e = Assert.Throws<ArgumentException>(() => Make(kind, OtherModel()).LoadState(state));
        Assert.Contains("fc.weight", e.Message);
        e = Assert.Throws<ArgumentException>(() => Make(kind, Reshaped()).LoadState(state));
        Assert.Contains("[4, 5]", e.Message);
        Assert.Contains("[5, 4]", e.Message);
        e = Assert.Throws<ArgumentException>(() => Make(kind, ps[..2]).LoadState(state));
        Assert.Contains("emb.weight", e.Message);
        e = Assert.Throws<ArgumentException>(() => Make(kind == "sgd" ? "adamw" : "sgd", ps).LoadState(state));
        Assert.Contains(kind, e.Message);
    }

    [Fact]
    public void BadBuffersAreRejectedAndLeaveTheStateUntouched()
    {
        var ps = Fixture.MakeParameters();
        var adam = new AdamW(ps, AdamOpts);
        Train(adam, ps, 1, 2);
        var good = adam.SaveState();
        byte[] before = Bytes(adam.SaveState());

        var shortTensor = RoundTrip(good);
        shortTensor.Tensors["exp_avg:fc.bias"] = new float[3];
        Assert.Contains("exp_avg:fc.bias", Assert.Throws<ArgumentException>(() => adam.LoadState(shortTensor)).Message);

        var unknown = RoundTrip(good);
        unknown.Tensors["momentum_buffer:fc.bias"] = new float[4];
        Assert.Contains("momentum_buffer:fc.bias", Assert.Throws<ArgumentException>(() => adam.LoadState(unknown)).Message);

        var stranger = RoundTrip(good);
        stranger.Longs["step:nope"] = 1;
        Assert.Contains("step:nope", Assert.Throws<ArgumentException>(() => adam.LoadState(stranger)).Message);

        var noMax = RoundTrip(good);
        noMax.Tensors.Remove("max_exp_avg_sq:fc.weight");
        Assert.Contains("AMSGrad", Assert.Throws<ArgumentException>(() => adam.LoadState(noMax)).Message);

        var noStep = RoundTrip(good);
        noStep.Longs.Remove("step:fc.bias");
        Assert.Contains("step:fc.bias", Assert.Throws<ArgumentException>(() => adam.LoadState(noStep)).Message);

        Assert.Equal(before, Bytes(adam.SaveState()));
    }

    [Fact]
    public void NonAmsGradStateLoadsIntoNonAmsGrad()
    {
        var ps = Fixture.MakeParameters();
        var plain = new AdamW(ps, AdamOpts with { AmsGrad = false });
        Train(plain, ps, 1, 2);
        var state = plain.SaveState();
        Assert.DoesNotContain(state.Tensors.Keys, k => k.StartsWith("max_exp_avg_sq:"));
        new AdamW(ps, AdamOpts with { AmsGrad = false }).LoadState(state);
        Assert.Throws<ArgumentException>(() => new AdamW(ps, AdamOpts).LoadState(state));
    }
}
