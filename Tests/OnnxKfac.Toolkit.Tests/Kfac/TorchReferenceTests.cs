using System.Text.Json;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Toolkit.Tests.Kfac;

/// <summary>
/// K-FAC end to end against a straightforward K-FAC written with PyTorch over the same ONNX
/// graphs (tools/fixtures/kfac_reference.py, references committed): the same sampled targets
/// (the noise is fed), the same damping, two updates of each rule. Factors, preconditioned
/// gradients and new weights agree within 1e-4 of each tensor's scale.
/// </summary>
public sealed class TorchReferenceTests(Xunit.Abstractions.ITestOutputHelper log)
{
    /// <summary>The worst error relative to the scale over every tensor compared in a test (logged, for the record).</summary>
    [ThreadStatic] private static double t_worst;

    internal sealed class Reference
    {
        public Reference(string fixture)
        {
            Dir = Path.Combine(AppContext.BaseDirectory, "Kfac", "References", fixture + "_opset17");
            Fixture = Path.Combine(AppContext.BaseDirectory, "Fixtures", fixture + "_opset17");
            Json = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "kfac.json"))).RootElement;
            Model = OnnxModelIO.Load(Path.Combine(Fixture, "model.onnx"));
            var h = Json.GetProperty("hyperparameters");
            Options = new KfacOptions
            {
                Damping = h.GetProperty("damping").GetDouble(),
                WeightDecay = h.GetProperty("weight_decay").GetDouble(),
                LearningRate = h.GetProperty("learning_rate").GetDouble(),
                Momentum = h.GetProperty("momentum").GetDouble(),
                KlClip = h.GetProperty("kl_clip").GetDouble(),
                FactorDecay = h.GetProperty("factor_decay").GetDouble(),
                InverseEvery = 1,
                Fallback = FallbackBlock.Identity,
            };
            Loss = new LossOptions(LossOptions.ParseKind(Json.GetProperty("loss_kind").GetString()!)) { Output = Json.GetProperty("output").GetString() };
        }

        public string Dir { get; }
        public string Fixture { get; }
        public JsonElement Json { get; }
        public ModelProto Model { get; }
        public KfacOptions Options { get; }
        public LossOptions Loss { get; }

        public float[] Tensor(string file) => TensorData.ToFloats(Graph.Proto.TensorProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(Dir, file))));

        public Graph.Proto.TensorProto FixtureTensor(string file) => Graph.Proto.TensorProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(Fixture, file)));

        /// <summary>A session over the fixture with the input and target bound; the noise is fed per step.</summary>
        public (TrainingSession Session, BatchBinding Batch) Open(KfacOptions options)
        {
            var session = TrainingSession.Create(Model, options.Configure(new TrainingGraphOptions(Loss)), new TrainingSessionOptions { Threads = 1 });
            session.DrawNoise = false;
            int n = Json.GetProperty("batch").GetInt32();
            var batch = session.Bind(n);
            var input = FixtureTensor("input_0.pb");
            string inputName = session.DataInputs[0].Name;
            if (session.DataInputs[0].ElemType == "int64") TensorData.ToDoubles(input).Select(x => (long)x).ToArray().CopyTo(batch.Input<long>(inputName));
            else TensorData.ToFloats(input).CopyTo(batch.Input<float>(inputName));
            var target = FixtureTensor("target.pb");
            if (session.TargetInput.ElemType == "int64") TensorData.ToDoubles(target).Select(x => (long)x).ToArray().CopyTo(batch.Input<long>(session.TargetInput.Name));
            else TensorData.ToFloats(target).CopyTo(batch.Input<float>(session.TargetInput.Name));
            return (session, batch);
        }

        public double Step(TrainingSession session, BatchBinding batch, KfacOptimizer kfac, StepContext context, int step)
        {
            Tensor($"noise_{step}.pb").CopyTo(batch.Input<float>(session.Manifest.Fisher!.NoiseInput));
            double loss = session.Run(batch);
            context.UpdateCount = step;
            context.Loss = loss;
            kfac.ObserveBatch(context, batch.BatchSize);
            kfac.Step(context);
            return loss;
        }

        public IEnumerable<(string Name, string File)> Map(JsonElement obj) =>
            obj.EnumerateObject().Select(p => (p.Name, p.Value.GetString()!));
    }

    internal static void AssertClose(float[] expected, ReadOnlySpan<float> actual, string what, double tolerance = 1e-4)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = Math.Max(1e-6, expected.Max(x => Math.Abs((double)x)));
        double worst = 0;
        int at = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs(expected[i] - actual[i]);
            if (err > worst) { worst = err; at = i; }
        }
        t_worst = Math.Max(t_worst, worst / scale);
        Assert.True(worst <= tolerance * scale, $"{what}: entry {at} is {actual[at]}, PyTorch {expected[at]} (error {worst / scale:E2} of the scale {scale:G3})");
    }

    private static void AssertFactors(Reference r, KfacOptimizer kfac, JsonElement stats, string which)
    {
        foreach (var layer in r.Json.GetProperty("layers").EnumerateArray())
        {
            if (layer.GetProperty("kind").GetString() == "embedding") continue;   // diagonal A: checked through V
            string name = layer.GetProperty("name").GetString()!;
            var (a, g, _, _) = kfac.FactorsOf(name);
            string aFile = stats.GetProperty(which == "hat" ? "Ahat" : "A").GetProperty(name).GetString()!;
            string gFile = stats.GetProperty(which == "hat" ? "Ghat" : "G").GetProperty(name).GetString()!;
            AssertClose(r.Tensor(aFile), a.Select(x => (float)x).ToArray(), $"{name} Â");
            AssertClose(r.Tensor(gFile), g.Select(x => (float)x).ToArray(), $"{name} Ĝ");
        }
    }

    [Theory]
    [InlineData("mlp")]
    [InlineData("cnn")]
    [InlineData("transformer")]
    [InlineData("autoencoder_bce")]
    public void KlClipTwoUpdatesMatchPyTorch(string fixture)
    {
        t_worst = 0;
        var r = new Reference(fixture);
        var (session, batch) = r.Open(r.Options);
        using var _ = session;
        using var kfac = new KfacOptimizer(session, r.Options);
        var context = new StepContext(session.Parameters, session);
        var byName = session.Parameters.ToDictionary(p => p.Name);

        r.Step(session, batch, kfac, context, 1);
        var s1 = r.Json.GetProperty("step1");
        AssertFactors(r, kfac, s1, "batch");
        foreach (var (name, file) in r.Map(s1.GetProperty("V"))) AssertClose(r.Tensor(file), kfac.PreconditionedOf(name), $"step 1 V of {name}");
        var kl1 = r.Json.GetProperty("kl_clip").GetProperty("step1");
        Assert.Equal(kl1.GetProperty("nu").GetDouble(), kfac.LastStep.Nu, 4);
        foreach (var (name, file) in r.Map(kl1.GetProperty("theta"))) AssertClose(r.Tensor(file), byName[name].Value, $"step 1 weights of {name}");

        r.Step(session, batch, kfac, context, 2);
        var kl2 = r.Json.GetProperty("kl_clip").GetProperty("step2");
        AssertFactors(r, kfac, kl2.GetProperty("stats"), "hat");
        foreach (var (name, file) in r.Map(kl2.GetProperty("stats").GetProperty("V"))) AssertClose(r.Tensor(file), kfac.PreconditionedOf(name), $"step 2 V of {name}");
        foreach (var (name, file) in r.Map(kl2.GetProperty("theta"))) AssertClose(r.Tensor(file), byName[name].Value, $"step 2 weights of {name}");
        log.WriteLine($"{fixture} KL clip: worst error {t_worst:E2} of each tensor's scale (factors, V, weights, two updates)");
    }

    [Theory]
    [InlineData("mlp")]
    [InlineData("cnn")]
    [InlineData("transformer")]
    [InlineData("autoencoder_bce")]
    public void QuadraticRuleTwoUpdatesMatchPyTorch(string fixture)
    {
        // The paper's rule: α and μ from the exact Fisher of the minibatch (Jacobian-vector products).
        t_worst = 0;
        var r = new Reference(fixture);
        var options = r.Options with { UpdateRule = KfacUpdateRule.Quadratic };
        var (session, batch) = r.Open(options);
        using var _ = session;
        using var kfac = new KfacOptimizer(session, options);
        var context = new StepContext(session.Parameters, session);
        var byName = session.Parameters.ToDictionary(p => p.Name);
        var q = r.Json.GetProperty("quadratic");
        foreach (var (step, key) in new[] { (1, "step1"), (2, "step2") })
        {
            r.Step(session, batch, kfac, context, step);
            var expected = q.GetProperty(key);
            double alpha = expected.GetProperty("alpha").GetDouble(), mu = expected.GetProperty("mu").GetDouble();
            Assert.True(Math.Abs(kfac.LastStep.Alpha - alpha) <= 1e-4 * Math.Abs(alpha), $"step {step}: α = {kfac.LastStep.Alpha}, PyTorch {alpha}");
            Assert.True(Math.Abs(kfac.LastStep.Mu - mu) <= 1e-4 * Math.Max(1e-3, Math.Abs(mu)), $"step {step}: μ = {kfac.LastStep.Mu}, PyTorch {mu}");
            double dfd = expected.GetProperty("DFD").GetDouble();
            Assert.True(Math.Abs(kfac.LastStep.DeltaFDelta - dfd) <= 1e-4 * Math.Abs(dfd), $"step {step}: ΔᵀFΔ = {kfac.LastStep.DeltaFDelta}, PyTorch {dfd}");
            foreach (var (name, file) in r.Map(expected.GetProperty("theta"))) AssertClose(r.Tensor(file), byName[name].Value, $"step {step} weights of {name}");
            log.WriteLine($"{fixture} quadratic step {step}: α {kfac.LastStep.Alpha:G7} (PyTorch {alpha:G7}), μ {kfac.LastStep.Mu:G7} (PyTorch {mu:G7})");
        }
        log.WriteLine($"{fixture} quadratic: worst weight error {t_worst:E2} of the scale");
    }
}
