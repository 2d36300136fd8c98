using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using TrainingSession = OnnxKfac.Toolkit.Runtime.TrainingSession;

namespace OnnxKfac.AeBench;

/// <summary>
/// Step costs of the autoencoder at one batch size and thread count (sections 3 and 4): the SGD step
/// and its graph's Run; the Run of the graph with the sampled-Fisher pass, and with K-FAC's factor
/// statistics (whole batch and a fraction); whole K-FAC steps (KL-clip rule, T_inv 20) with K-FAC's
/// own phase timings; and a 1000³ MatMul in ONNX Runtime for the machine's peak.
/// </summary>
internal static class Step
{
    public static JsonObject Run(string modelPath, string matmulPath, string data, int batchSize, int threads, int steps, int warmup, double fraction,
        double weightDecay = 1e-5, KfacPreconditioning precondition = KfacPreconditioning.Auto, KfacInversePrecision inversePrecision = KfacInversePrecision.Auto)
    {
        var x = FashionMnist.Load(Path.Combine(data, "train-images-idx3-ubyte.gz"), out _);
        var model = OnnxModelIO.Load(modelPath);
        var loss = new LossOptions(LossKind.BceWithLogits);
        var plain = new TrainingGraphOptions(loss) { LayerTaps = false };
        var result = new JsonObject { ["kind"] = "step", ["batch"] = batchSize, ["weight_decay"] = weightDecay, ["precondition"] = precondition.ToString(),
            ["inverse_precision"] = inversePrecision.ToString().ToLowerInvariant(), ["threads"] = threads, ["isa"] = Machine.Isa() };
        var machine = new Machine();

        BatchBinding Fill(TrainingSession s)
        {
            var b = s.Bind(batchSize);
            x.AsSpan(0, batchSize * FashionMnist.Pixels).CopyTo(b.Input<float>(s.DataInputs[0].Name));
            x.AsSpan(0, batchSize * FashionMnist.Pixels).CopyTo(b.Input<float>(s.TargetInput.Name));
            return b;
        }

        // SGD: Run + Sgd.Step, with Run timed on its own in the same loop.
        using (var s = TrainingSession.Create(model, plain, new TrainingSessionOptions { Threads = threads }))
        {
            var b = Fill(s);
            var sgd = new Sgd(s.Parameters, new SgdOptions { LearningRate = 0.01, Momentum = 0.9 });
            var ctx = new StepContext(s.Parameters, s);
            var step = new List<double>(); var run = new List<double>();
            for (int k = 0; k < warmup + steps; k++)
            {
                long t0 = Stopwatch.GetTimestamp();
                double l = s.Run(b);
                long t1 = Stopwatch.GetTimestamp();
                sgd.Step(ctx);
                ctx.Advance(l);
                long t2 = Stopwatch.GetTimestamp();
                if (k >= warmup) { step.Add(Ms(t2 - t0)); run.Add(Ms(t1 - t0)); }
            }
            result["sgd_step"] = Stats(step);
            result["sgd_run"] = Stats(run);
        }
        result["fisher_run"] = RunOnly(model, plain with { SampledFisher = true }, threads, Fill, warmup, steps);

        foreach (double f in fraction < 1 ? new[] { 1.0, fraction } : [1.0])
        {
            var ko = new KfacOptions
            {
                UpdateRule = KfacUpdateRule.KlClip, Damping = 1e-2, LearningRate = 1e-3, InverseEvery = 20, StatisticsFraction = f,
                WeightDecay = weightDecay, Preconditioning = precondition, InversePrecision = inversePrecision,
            };
            string key = f == 1 ? "kfac" : "kfac_fraction";
            // K-FAC's sessions do not spin (TrainingSessionOptions.IntraOpSpinning), as the CLI's for --optimizer kfac.
            result[key + "_run"] = RunOnly(model, ko.Configure(plain, batchSize), threads, Fill, warmup, steps, spinning: false);
            using var s = TrainingSession.Create(model, ko.Configure(plain, batchSize), new TrainingSessionOptions { Threads = threads, IntraOpSpinning = false });
            using var kfac = new KfacOptimizer(s, ko);
            var b = Fill(s);
            var ctx = new StepContext(s.Parameters, s) { GradientIsLastRun = true, OneRunPerUpdate = true };   // one batch per update, one process
            var step = new List<double>();
            int kfacSteps = Math.Max(40, (steps + 19) / 20 * 20);   // whole T_inv periods, so the inverses are amortized exactly
            for (int k = 0; k < 20 + kfacSteps; k++)
            {
                if (k == 20) kfac.Timings.Reset();
                long t0 = Stopwatch.GetTimestamp();
                double l = s.Run(b);
                ctx.Loss = l;
                kfac.ObserveBatch(ctx, batchSize);
                kfac.Step(ctx);
                ctx.Advance(l);
                if (k >= 20) step.Add(Ms(Stopwatch.GetTimestamp() - t0));
                if (kfac.LastStep.RefreshedInverses) result[key + "_float32_inverses"] = kfac.LastStep.SinglePrecisionInverses;
            }
            var t = kfac.Timings;
            double u = t.Updates;
            result[key + "_step"] = Stats(step);
            result[key + "_phases_ms"] = new JsonObject
            {
                ["statistics"] = 1e3 * t.Statistics / u, ["inverses"] = 1e3 * t.Inverses / u, ["preconditioning"] = 1e3 * t.Preconditioning / u,
                ["coefficients"] = 1e3 * t.Coefficients / u, ["apply"] = 1e3 * t.Apply / u,
            };
            result[key + "_per_example_updates"] = t.PerExampleUpdates;
            result[key + "_fraction"] = f;
        }
        result["matmul1000"] = MatMul(matmulPath, threads, Math.Max(10, steps / 2));
        result["other_cores"] = machine.OtherCores();
        result["loadavg_end"] = Machine.LoadAverage();
        result["peak_rss_mib"] = Machine.PeakRssMiB();
        // fwd+bwd flops per example: forward 2W, weight gradients 2W, input gradients 2(W - 784·1000) (none for the data).
        long w = 0;
        int[] dims = [784, 1000, 500, 250, 30, 250, 500, 1000, 784];
        for (int i = 0; i + 1 < dims.Length; i++) w += (long)dims[i] * dims[i + 1];
        result["fwd_bwd_gflop"] = batchSize * (6.0 * w - 2.0 * 784 * 1000) / 1e9;
        return result;
    }

    private static JsonObject RunOnly(ModelProto model, TrainingGraphOptions graph, int threads, Func<TrainingSession, BatchBinding> fill, int warmup, int steps,
        bool spinning = true)
    {
        using var s = TrainingSession.Create(model, graph, new TrainingSessionOptions { Threads = threads, IntraOpSpinning = spinning });
        var b = fill(s);
        var run = new List<double>();
        for (int k = 0; k < warmup + steps; k++)
        {
            long t0 = Stopwatch.GetTimestamp();
            s.Run(b);
            if (k >= warmup) run.Add(Ms(Stopwatch.GetTimestamp() - t0));
        }
        return Stats(run);
    }

    private static JsonObject MatMul(string path, int threads, int steps)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL, IntraOpNumThreads = threads };
        using var session = new InferenceSession(path, options);
        var rng = new Random(1);
        float[] a = GC.AllocateArray<float>(1_000_000, pinned: true), bm = GC.AllocateArray<float>(1_000_000, pinned: true), c = GC.AllocateArray<float>(1_000_000, pinned: true);
        for (int i = 0; i < a.Length; i++) { a[i] = (float)rng.NextDouble(); bm[i] = (float)rng.NextDouble(); }
        long[] shape = [1000, 1000];
        using var va = OrtValue.CreateTensorValueFromMemory(a, shape);
        using var vb = OrtValue.CreateTensorValueFromMemory(bm, shape);
        using var vc = OrtValue.CreateTensorValueFromMemory(c, shape);
        using var binding = session.CreateIoBinding();
        using var ro = new RunOptions();
        binding.BindInput("a", va); binding.BindInput("b", vb); binding.BindOutput("c", vc);
        var times = new List<double>();
        for (int k = 0; k < 3 + steps; k++)
        {
            long t0 = Stopwatch.GetTimestamp();
            session.RunWithBinding(ro, binding);
            if (k >= 3) times.Add(Ms(Stopwatch.GetTimestamp() - t0));
        }
        var r = Stats(times);
        r["gflops_at_median"] = 2e9 / ((double)r["median"]! * 1e-3) / 1e9;
        r["gflops_at_min"] = 2e9 / ((double)r["min"]! * 1e-3) / 1e9;
        return r;
    }

    private static double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;

    public static JsonObject Stats(List<double> ms)
    {
        var s = ms.OrderBy(v => v).ToArray();
        double Q(double p) => s[Math.Clamp((int)Math.Ceiling(p * s.Length) - 1, 0, s.Length - 1)];
        return new JsonObject { ["median"] = Q(0.5), ["p10"] = Q(0.1), ["p90"] = Q(0.9), ["min"] = s[0], ["mean"] = s.Average(), ["n"] = s.Length };
    }
}
