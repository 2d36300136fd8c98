using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Kfac.Blocks;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Toolkit.Tests.Kfac;

/// <summary>
/// Per-example preconditioning (Toolkit/Kfac/README.md): V = (Ĝᵣ G⁻¹ᵀ)ᵀ(Āᵣ A⁻¹) equals the dense
/// G⁻¹ ∇W̄ A⁻¹ when the gradient is exactly ĜᵣᵀĀᵣ, is chosen where it is cheaper, and is not used where
/// the gradient is something else (weight decay, accumulation).
/// </summary>
public sealed class PerExampleTests
{
    private const int N = 8;

    private static NodeProto Node(string op, string name, string[] inputs, string output, params AttributeProto[] attributes)
    {
        var n = new NodeProto { OpType = op, Name = name };
        n.Input.Add(inputs);
        n.Output.Add(output);
        n.Attribute.Add(attributes);
        return n;
    }

    private static void Weight(GraphProto g, Random rng, string name, params long[] shape)
    {
        long n = shape.Aggregate(1L, (a, b) => a * b);
        g.Initializer.Add(TensorData.FromFloats(name, shape, Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray()));
    }

    private static ModelProto Model(GraphProto g)
    {
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Version = 17 });
        return m;
    }

    /// <summary>
    /// x [N, 6] → Gemm (alpha 0.5, beta 2; transB as given) → Relu → MatMul [16, 12] + Add bias → Relu
    /// → MatMul [12, 3] without bias → y [N, 3].
    /// </summary>
    internal static ModelProto Mlp(bool transB)
    {
        var g = new GraphProto { Name = "mlp" };
        g.Input.Add(ValueInfos.Tensor("x", (int)DataType.Float, [-1, 6]));
        g.Output.Add(ValueInfos.Tensor("y", (int)DataType.Float, [-1, 3]));
        var rng = new Random(3);
        Weight(g, rng, "fc1.weight", transB ? [16, 6] : [6, 16]);
        Weight(g, rng, "fc1.bias", 16);
        Weight(g, rng, "fc2.weight", 16, 12);
        Weight(g, rng, "fc2.bias", 12);
        Weight(g, rng, "fc3.weight", 12, 3);
        g.Node.Add(Node("Gemm", "fc1", ["x", "fc1.weight", "fc1.bias"], "s1",
            Attributes.Int("transB", transB ? 1 : 0), Attributes.Float("alpha", 0.5f), Attributes.Float("beta", 2f)));
        g.Node.Add(Node("Relu", "r1", ["s1"], "h1"));
        g.Node.Add(Node("MatMul", "fc2", ["h1", "fc2.weight"], "m2"));
        g.Node.Add(Node("Add", "fc2_add", ["m2", "fc2.bias"], "s2"));
        g.Node.Add(Node("Relu", "r2", ["s2"], "h2"));
        g.Node.Add(Node("MatMul", "fc3", ["h2", "fc3.weight"], "y"));
        return Model(g);
    }

    /// <summary>x [N, 4, 5] → MatMul [5, 7] + Add bias → Relu → MatMul [7, 3] → y [N, 4, 3]: dense over an extra axis (rows N·4).</summary>
    internal static ModelProto Sequence()
    {
        var g = new GraphProto { Name = "seq" };
        g.Input.Add(ValueInfos.Tensor("x", (int)DataType.Float, [-1, 4, 5]));
        g.Output.Add(ValueInfos.Tensor("y", (int)DataType.Float, [-1, 4, 3]));
        var rng = new Random(4);
        Weight(g, rng, "fc1.weight", 5, 7);
        Weight(g, rng, "fc1.bias", 7);
        Weight(g, rng, "fc2.weight", 7, 3);
        g.Node.Add(Node("MatMul", "fc1", ["x", "fc1.weight"], "m1"));
        g.Node.Add(Node("Add", "fc1_add", ["m1", "fc1.bias"], "s1"));
        g.Node.Add(Node("Relu", "r1", ["s1"], "h1"));
        g.Node.Add(Node("MatMul", "fc2", ["h1", "fc2.weight"], "y"));
        return Model(g);
    }

    /// <summary>x [N, 40] → Gemm 40→50 → Relu → Gemm 50→2: at N = 8 the per-example form is cheaper for fc1 (crossover ≈ 29.9 rows), not for fc2 (≈ 2.0).</summary>
    internal static ModelProto Wide()
    {
        var g = new GraphProto { Name = "wide" };
        g.Input.Add(ValueInfos.Tensor("x", (int)DataType.Float, [-1, 40]));
        g.Output.Add(ValueInfos.Tensor("y", (int)DataType.Float, [-1, 2]));
        var rng = new Random(6);
        Weight(g, rng, "fc1.weight", 50, 40);
        Weight(g, rng, "fc1.bias", 50);
        Weight(g, rng, "fc2.weight", 2, 50);
        Weight(g, rng, "fc2.bias", 2);
        g.Node.Add(Node("Gemm", "fc1", ["x", "fc1.weight", "fc1.bias"], "s1", Attributes.Int("transB", 1)));
        g.Node.Add(Node("Relu", "r1", ["s1"], "h1"));
        g.Node.Add(Node("Gemm", "fc2", ["h1", "fc2.weight", "fc2.bias"], "y", Attributes.Int("transB", 1)));
        return Model(g);
    }

    private static readonly LossOptions Mse = new(LossKind.Mse);

    private static KfacOptions Options(KfacPreconditioning mode, double eta = 0) => new()
    {
        Preconditioning = mode, WeightDecay = eta, Damping = 0.05, LearningRate = 0.05, InverseEvery = 2, Fallback = FallbackBlock.Identity,
    };

    /// <summary>Steps K-FAC by hand on fixed batches (the gradient is the last run's: <see cref="StepContext.GradientIsLastRun"/>).</summary>
    private sealed class Run : IDisposable
    {
        public readonly TrainingSession Session;
        public readonly KfacOptimizer Kfac;
        private readonly StepContext _context;
        private readonly ModelProto _model;

        public Run(ModelProto model, KfacOptions options, int batchSize)
        {
            _model = model;
            Session = TrainingSession.Create(model, options.Configure(new TrainingGraphOptions(Mse), batchSize), new TrainingSessionOptions { Threads = 1 });
            Kfac = new KfacOptimizer(Session, options);
            _context = new StepContext(Session.Parameters, Session) { GradientIsLastRun = true };
        }

        public void Step(int seed, int batchSize = N, bool lastRun = true)
        {
            var b = Session.Bind(batchSize);
            var rng = new Random(seed);
            var x = b.Input<float>(Session.DataInputs[0].Name);
            for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
            var t = b.Input<float>(Session.TargetInput.Name);
            for (int i = 0; i < t.Length; i++) t[i] = (float)(rng.NextDouble() - 0.5);
            double loss = Session.Run(b);
            _context.Loss = loss;
            _context.GradientIsLastRun = lastRun;
            Kfac.ObserveBatch(_context, batchSize);
            Kfac.Step(_context);
            _context.Advance(loss);
        }

        public IEnumerable<string> Names => Session.Parameters.Select(p => p.Name);

        public void Dispose()
        {
            Kfac.Dispose();
            Session.Dispose();
            _ = _model;
        }
    }

    private static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double rtol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = 0;
        foreach (float v in expected) scale = Math.Max(scale, Math.Abs(v));
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= rtol * scale + 1e-7,
                $"{what}[{i}]: dense {expected[i]}, per-example {actual[i]} (largest |V| {scale})");
    }

    public static TheoryData<string> Models => new() { "mlp-transB", "mlp-transB0", "sequence" };

    private static ModelProto ByName(string name) => name switch
    {
        "mlp-transB" => Mlp(transB: true),
        "mlp-transB0" => Mlp(transB: false),
        _ => Sequence(),
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void PerExampleVEqualsTheDenseVOverSeveralUpdates(string model)
    {
        using var dense = new Run(ByName(model), Options(KfacPreconditioning.Dense), N);
        using var perExample = new Run(ByName(model), Options(KfacPreconditioning.PerExample), N);
        int layers = perExample.Session.Manifest.Layers.Count;
        for (int step = 1; step <= 5; step++)
        {
            dense.Step(step);
            perExample.Step(step);
            Assert.Equal(0, dense.Kfac.LastStep.PerExampleBlocks);
            Assert.Equal(layers, perExample.Kfac.LastStep.PerExampleBlocks);
            foreach (string p in dense.Names)
                Close(dense.Kfac.PreconditionedOf(p), perExample.Kfac.PreconditionedOf(p), step == 1 ? 1e-4 : 1e-3, $"{model} update {step}: V of {p}");
        }
        // The runs stayed together: the weights after five updates agree.
        for (int k = 0; k < dense.Session.Parameters.Count; k++)
            Close(dense.Session.Parameters[k].Value, perExample.Session.Parameters[k].Value, 1e-4, $"{model}: {dense.Session.Parameters[k].Name}");
    }

    [Fact]
    public void ASmallerBatchBuildsItsOwnProgram()
    {
        using var dense = new Run(Mlp(true), Options(KfacPreconditioning.Dense), N);
        using var perExample = new Run(Mlp(true), Options(KfacPreconditioning.PerExample), N);
        foreach (var (seed, n) in new[] { (1, N), (2, 3), (3, N), (4, 3) })
        {
            dense.Step(seed, n);
            perExample.Step(seed, n);
            Assert.Equal(3, perExample.Kfac.LastStep.PerExampleBlocks);
            foreach (string p in dense.Names)
                Close(dense.Kfac.PreconditionedOf(p), perExample.Kfac.PreconditionedOf(p), 1e-3, $"batch {n}: V of {p}");
        }
    }

    [Fact]
    public void WeightDecayOrAnAccumulatedGradientKeepsTheDenseForm()
    {
        // η > 0 everywhere: no taps, dense.
        using (var decayed = new Run(Mlp(true), Options(KfacPreconditioning.PerExample, eta: 1e-3), N))
        {
            Assert.All(decayed.Session.Manifest.Layers, l => Assert.Null(l.Outputs.Input));
            decayed.Step(1);
            Assert.Equal(0, decayed.Kfac.LastStep.PerExampleBlocks);
        }
        // η > 0 but 0 for fc2's group: only fc2's block may go per-example.
        var grouped = Options(KfacPreconditioning.PerExample, eta: 1e-3) with { Groups = [new ParameterGroup("fc2.*") { WeightDecay = 0 }] };
        using (var run = new Run(Mlp(true), grouped, N))
        {
            run.Step(1);
            Assert.Equal(1, run.Kfac.LastStep.PerExampleBlocks);
            // The gradient is not the last run's alone (accumulated, all-reduced or clipped): dense.
            run.Step(2, lastRun: false);
            Assert.Equal(0, run.Kfac.LastStep.PerExampleBlocks);
        }
    }

    [Fact]
    public void AutoTakesThePerExampleFormWhereItIsCheaper()
    {
        using (var run = new Run(Wide(), Options(KfacPreconditioning.Auto), N))
        {
            var layers = run.Session.Manifest.Layers;
            Assert.NotNull(layers.Single(l => l.Name == "fc1").Outputs.Input);   // taps only where the form pays at N = 8
            Assert.Null(layers.Single(l => l.Name == "fc2").Outputs.Input);
            run.Step(1);
            Assert.Equal(1, run.Kfac.LastStep.PerExampleBlocks);
            run.Step(2, batchSize: 40);                                            // 40 rows > 29.9: fc1 goes dense again
            Assert.Equal(0, run.Kfac.LastStep.PerExampleBlocks);
        }
        using (var run = new Run(Wide(), Options(KfacPreconditioning.Auto), 64))
            Assert.All(run.Session.Manifest.Layers, l => Assert.Null(l.Outputs.Input));
        // Without a batch size Configure requests no taps (it cannot tell where the form pays).
        Assert.Null(Options(KfacPreconditioning.Auto).Configure(new TrainingGraphOptions(Mse)).TapLayer);
    }

    [Theory]
    // The paper's autoencoder (784-1000-500-250-30 mirrored, biases): at 256 rows the four large layers
    // halve their cost per-example (crossovers ≈ 584, 429, 429, 583 rows), the others do not; at 1024 none does.
    [InlineData(785, 1000, 256, true)]
    [InlineData(1001, 500, 256, true)]
    [InlineData(501, 1000, 256, true)]
    [InlineData(1001, 784, 256, true)]
    [InlineData(501, 250, 256, false)]
    [InlineData(251, 500, 256, false)]
    [InlineData(251, 30, 256, false)]
    [InlineData(31, 250, 256, false)]
    [InlineData(785, 1000, 1024, false)]
    [InlineData(1001, 500, 1024, false)]
    [InlineData(1001, 500, 428, true)]
    [InlineData(1001, 500, 429, false)]
    public void TheCriterionComparesTheFlopsOfBothForms(long dA, long dG, long rows, bool perExample) =>
        Assert.Equal(perExample, KroneckerBlock.PerExampleIsCheaper(dA, dG, rows));

    [Fact]
    public void TheTrainerUsesThePerExampleFormAndMatchesTheDenseRunIncludingAShortLastBatch()
    {
        const int count = 20;   // batches of 8, 8 and 4
        var rng = new Random(12);
        var x = Enumerable.Range(0, count * 6).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var y = Enumerable.Range(0, count * 3).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        using var data = Dataset.FromTensors(DataTensor.FromFloat(x, count, 6), DataTensor.FromFloat(y, count, 3));
        float[][] Train(KfacPreconditioning mode, int accumulate, out List<int> perExample, double? clip = null)
        {
            var options = Options(mode);
            using var s = TrainingSession.Create(Mlp(true), options.Configure(new TrainingGraphOptions(Mse), N), new TrainingSessionOptions { Threads = 1 });
            using var kfac = new KfacOptimizer(s, options);
            var seen = new Observer(kfac);
            new Trainer(s, kfac, new TrainerOptions { BatchSize = N, Epochs = 2, Seed = 1, AccumulationSteps = accumulate, ClipGradNorm = clip }, seen).Fit(data);
            perExample = seen.PerExample;
            return [.. s.Parameters.Select(p => p.Value.ToArray())];
        }
        var dense = Train(KfacPreconditioning.Dense, 1, out var none);
        var per = Train(KfacPreconditioning.PerExample, 1, out var used);
        Assert.All(none, c => Assert.Equal(0, c));
        Assert.Equal([3, 3, 3, 3, 3, 3], used);   // every update, the two short last batches included
        for (int k = 0; k < dense.Length; k++) Close(dense[k], per[k], 1e-4, $"parameter {k}");
        Train(KfacPreconditioning.PerExample, 2, out var accumulated);
        Assert.NotEmpty(accumulated);
        Assert.All(accumulated, c => Assert.Equal(0, c));
        Train(KfacPreconditioning.PerExample, 1, out var clipped, clip: 1e-6);   // every gradient clipped: not ĜᵀĀ any more
        Assert.Equal(6, clipped.Count);
        Assert.All(clipped, c => Assert.Equal(0, c));
    }

    private sealed class Observer(KfacOptimizer kfac) : ITrainingObserver
    {
        public List<int> PerExample { get; } = [];

        public void OnStep(in StepReport report)
        {
            if (!report.Skipped) PerExample.Add(kfac.LastStep.PerExampleBlocks);
        }
    }
}
