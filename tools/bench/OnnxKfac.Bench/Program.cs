using Google.Protobuf;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Bench;

/// <summary>
/// Speed benchmarks of OnnxKfac training steps on ONNX Runtime (CPU). See tools/bench/README.md.
/// <code>
/// onnx-kfac-bench [--models fashion_mlp,mlp,...] [--batches 32,256] [--threads 1,2]
///                 [--steps 100] [--warmup 20] [--out results.jsonl] [--attempts 3] [--quiet-cores 0.3]
///                 [--profile fashion_mlp:256:1,...] [--profile-out profile.json] [--profile-runs 50]
///                 [--experiments transformer:256:2,...] [--experiments-out experiments.json] [--baseline DIR]
/// (--models none: only the profile and experiments; --dump DIR: write the training graphs and stop)
/// </code>
/// One JSON object per (model, batch, threads) goes to --out (JSON lines); a summary to stdout.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        Options opt;
        try { opt = Options.Parse(args); }
        catch (ArgumentException e)
        {
            // A bad option: one line that names it (the options: the comment above), exit 2.
            Console.Error.WriteLine($"onnx-kfac-bench: {e.Message}");
            return 2;
        }
        string root = FindRoot();
        if (opt.Dump is not null)
        {
            Directory.CreateDirectory(opt.Dump);
            foreach (var name in opt.Models)
            {
                var spec = ModelSpec.Find(name);
                var model = OnnxModelIO.Load(Path.Combine(root, spec.RelativePath));
                foreach (var (suffix, options) in new[] { ("train", GraphOptions()), ("fisher", GraphOptions(fisher: true)) })
                {
                    try
                    {
                        var tg = TrainingGraphBuilder.Build(model, options);
                        File.WriteAllBytes(Path.Combine(opt.Dump, $"{spec.Name}.{suffix}.onnx"), tg.Model.ToByteArray());
                        File.WriteAllText(Path.Combine(opt.Dump, $"{spec.Name}.{suffix}.json"), tg.Manifest.ToJson());
                    }
                    catch (OnnxKfacException e) { Console.WriteLine($"{spec.Name}: {e.Message.Split(';')[0]}"); }
                }
            }
            return 0;
        }
        using var results = opt.Out is null ? null : new StreamWriter(opt.Out, append: false);
        foreach (var name in opt.Models)
        {
            var spec = ModelSpec.Find(name);
            foreach (var record in BenchModel(spec, root, opt))
            {
                Console.WriteLine(Summary(record));
                results?.WriteLine(record.ToJsonString());
                results?.Flush();
            }
        }
        if (opt.Experiments.Count > 0)
        {
            var all = new JsonArray();
            foreach (var (model, batch, threads) in opt.Experiments)
            {
                var spec = ModelSpec.Find(model);
                var source = OnnxModelIO.Load(Path.Combine(root, spec.RelativePath));
                using var session = TrainingSession.Create(source, GraphOptions(), new TrainingSessionOptions { Threads = threads });
                var b = session.Bind(batch);
                BatchFiller.Fill(session, b, spec, seed: batch);
                foreach (var m in new[]
                {
                    Contention.Quietest<JsonObject?>(() => Experiments.PowPatch(session, b, threads, opt.Warmup, opt.Steps), opt.Attempts, opt.QuietCores),
                    Contention.Quietest<JsonObject?>(() => threads > 1 ? Experiments.Spinning(session, b, threads, opt.Warmup, opt.Steps) : null, opt.Attempts, opt.QuietCores),
                    Contention.Quietest(() => Experiments.ParallelExecution(session, b, threads, opt.Warmup, opt.Steps), opt.Attempts, opt.QuietCores),
                    Contention.Quietest(() => Experiments.ConvWeightGradPatches(session, b, threads, opt.Warmup, opt.Steps), opt.Attempts, opt.QuietCores),
                    Contention.Quietest(() => Experiments.ConvWeightGradPatches(session, b, threads, opt.Warmup, opt.Steps, patchesFirst: true), opt.Attempts, opt.QuietCores),
                    Contention.Quietest(() => Experiments.ConvWeightGradSlices(session, b, threads, opt.Warmup, opt.Steps), opt.Attempts, opt.QuietCores),
                    Contention.Quietest(() => Experiments.MaxPoolIndices(source, session, b, threads, opt.Warmup, opt.Steps), opt.Attempts, opt.QuietCores),
                    Contention.Quietest(() => opt.Baseline is null ? null : Experiments.Baseline(Path.Combine(opt.Baseline, $"{spec.Name}.train.onnx"), session, b, threads, opt.Warmup, opt.Steps), opt.Attempts, opt.QuietCores),
                })
                {
                    if (m.Value is not { } r) continue;
                    r["other_cores"] = m.OtherCores;
                    r["attempts"] = m.Attempts;
                    r["model"] = spec.Name; r["batch"] = batch; r["threads"] = threads;
                    Console.WriteLine(r.ToJsonString());
                    all.Add(r);
                }
            }
            if (opt.ExperimentsOut is not null) File.WriteAllText(opt.ExperimentsOut, all.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        if (opt.Profile.Count > 0)
        {
            var all = new JsonArray();
            foreach (var (model, batch, threads) in opt.Profile)
            {
                var p = ProfileOne(ModelSpec.Find(model), root, batch, threads, opt.ProfileRuns);
                if (p is not null) all.Add(p);
            }
            if (opt.ProfileOut is not null) File.WriteAllText(opt.ProfileOut, all.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        return 0;
    }

    private const int AllocationSteps = 100;

    private static TrainingGraphOptions GraphOptions(bool fisher = false, bool taps = true) =>
        new(new LossOptions(LossKind.CrossEntropy)) { SampledFisher = fisher, LayerTaps = taps };

    private static IEnumerable<JsonObject> BenchModel(ModelSpec spec, string root, Options opt)
    {
        string path = Path.Combine(root, spec.RelativePath);
        var model = OnnxModelIO.Load(path);
        // Can the training graph be built at all (gradient rules for every op)?
        string? skip = null;
        try { TrainingGraphBuilder.Build(model, GraphOptions()); }
        catch (OnnxKfacException e) { skip = e.Message; }
        if (skip is not null)
        {
            yield return new JsonObject { ["model"] = spec.Name, ["path"] = spec.RelativePath, ["skipped"] = skip };
            yield break;
        }
        using var probe = new SpeedProbe();
        foreach (int threads in opt.Threads)
        {
            var sessionOptions = new TrainingSessionOptions { Threads = threads };
            using var plain = TrainingSession.Create(model, GraphOptions(), sessionOptions);
            using var fisher = TrainingSession.Create(model, GraphOptions(fisher: true), sessionOptions);
            using var bare = TrainingSession.Create(model, GraphOptions(taps: false), sessionOptions);
            foreach (int batch in opt.Batches)
            {
                var b = plain.Bind(batch);
                BatchFiller.Fill(plain, b, spec, seed: batch);
                var bf = fisher.Bind(batch);
                BatchFiller.Fill(fisher, bf, spec, seed: batch);
                var bb = bare.Bind(batch);
                BatchFiller.Fill(bare, bb, spec, seed: batch);

                double probeBefore = probe.Gflops();
                // Each measurement is retried while other processes keep a core busy (shared machine).
                Contention.Measured<T> Q<T>(Func<T> f) => Contention.Quietest(f, opt.Attempts, opt.QuietCores);
                var step = Q(() => StepBench.Run(plain, b, opt.Warmup, opt.Steps));
                var forward = Q(() => StepBench.Forward(path, plain, b, threads, opt.Warmup, opt.Steps));
                var fisherStep = Q(() => StepBench.Run(fisher, bf, opt.Warmup, opt.Steps));
                var bareStep = Q(() => StepBench.Run(bare, bb, opt.Warmup, opt.Steps));
                // The same model with the batch dimension fixed: every shape is static, so the
                // backward graph needs no run-time shape arithmetic (Shape/NonZero unbroadcast).
                using var fixedBatch = TrainingSession.Create(StaticBatch(model, batch), GraphOptions(), sessionOptions);
                var bs = fixedBatch.Bind(batch);
                BatchFiller.Fill(fixedBatch, bs, spec, seed: batch);
                var staticStep = Q(() => StepBench.Run(fixedBatch, bs, opt.Warmup, opt.Steps));
                // Allocation: a separate untimed run of exactly AllocationSteps steps per session.
                // A non-zero count is checked again at once: a one-off (first-use) allocation
                // reads 0 the second time, a per-step one does not.
                long allocPlain = StepBench.AllocatedBytes(plain, b, AllocationSteps);
                long? allocPlainAgain = allocPlain != 0 ? StepBench.AllocatedBytes(plain, b, AllocationSteps) : null;
                long allocFisher = StepBench.AllocatedBytes(fisher, bf, AllocationSteps);
                long? allocFisherAgain = allocFisher != 0 ? StepBench.AllocatedBytes(fisher, bf, AllocationSteps) : null;
                double probeAfter = probe.Gflops();
                var others = new JsonObject
                {
                    ["step"] = step.OtherCores, ["forward"] = forward.OtherCores, ["fisher_step"] = fisherStep.OtherCores,
                    ["bare_step"] = bareStep.OtherCores, ["static_step"] = staticStep.OtherCores,
                };
                var attempts = new JsonObject
                {
                    ["step"] = step.Attempts, ["forward"] = forward.Attempts, ["fisher_step"] = fisherStep.Attempts,
                    ["bare_step"] = bareStep.Attempts, ["static_step"] = staticStep.Attempts,
                };
                yield return new JsonObject
                {
                    ["model"] = spec.Name,
                    ["path"] = spec.RelativePath,
                    ["batch"] = batch,
                    ["threads"] = threads,
                    ["parameters"] = plain.Parameters.Sum(p => p.Value.Length),
                    ["layers"] = plain.Manifest.Layers.Count,
                    ["model_nodes"] = model.Graph.Node.Count,
                    ["training_nodes"] = plain.TrainingModel.Graph.Node.Count,
                    ["fisher_nodes"] = fisher.TrainingModel.Graph.Node.Count,
                    ["bare_nodes"] = bare.TrainingModel.Graph.Node.Count,
                    ["static_nodes"] = fixedBatch.TrainingModel.Graph.Node.Count,
                    ["step"] = Json(step.Value.Step),
                    ["run"] = Json(step.Value.Run),
                    ["sgd"] = Json(step.Value.Sgd),
                    ["forward"] = Json(forward.Value),
                    ["fisher_step"] = Json(fisherStep.Value.Step),
                    ["bare_step"] = Json(bareStep.Value.Step),
                    ["static_step"] = Json(staticStep.Value.Step),
                    ["alloc_bytes"] = allocPlain,
                    ["alloc_fisher_bytes"] = allocFisher,
                    ["alloc_recheck_bytes"] = allocPlainAgain,
                    ["alloc_fisher_recheck_bytes"] = allocFisherAgain,
                    ["alloc_steps"] = AllocationSteps,
                    ["alloc_timed_bytes"] = step.Value.AllocatedBytes,
                    ["alloc_timed_steps"] = step.Value.AllocationSteps,
                    ["other_cores"] = others,
                    ["attempts"] = attempts,
                    ["loadavg"] = LoadAverage(),
                    ["probe_gflops"] = new JsonObject { ["before"] = probeBefore, ["after"] = probeAfter },
                };
            }
        }
    }

    /// <summary>A copy of <paramref name="model"/> whose inputs and outputs have batch dimension <paramref name="batch"/> and no intermediate shape annotations.</summary>
    internal static ModelProto StaticBatch(ModelProto model, int batch)
    {
        var m = model.Clone();
        var inits = new HashSet<string>(m.Graph.Initializer.Select(t => t.Name), StringComparer.Ordinal);
        foreach (var vi in m.Graph.Input.Where(i => !inits.Contains(i.Name)).Concat(m.Graph.Output))
        {
            if (vi.Type?.TensorType?.Shape is not { Dim.Count: > 0 } shape) continue;
            shape.Dim[0] = new TensorShapeProto.Types.Dimension { DimValue = batch };
        }
        m.Graph.ValueInfo.Clear();
        return m;
    }

    private static JsonObject? ProfileOne(ModelSpec spec, string root, int batch, int threads, int runs)
    {
        var model = OnnxModelIO.Load(Path.Combine(root, spec.RelativePath));
        TrainingSession session;
        try { session = TrainingSession.Create(model, GraphOptions(), new TrainingSessionOptions { Threads = threads }); }
        catch (OnnxKfacException e)
        {
            Console.WriteLine($"profile {spec.Name}: skipped ({e.Message})");
            return null;
        }
        using (session)
        {
            var b = session.Bind(batch);
            BatchFiller.Fill(session, b, spec, seed: batch);
            string dir = Path.Combine(Path.GetTempPath(), $"onnx-kfac-bench-{Environment.ProcessId}-{spec.Name}-{batch}-{threads}");
            var r = GraphProfile.Run(session, b, threads, runs, dir);
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
            Console.WriteLine($"profile {spec.Name} batch {batch} threads {threads}: kernels {r.KernelMsPerRun:F3} ms/run");
            foreach (var t in r.KernelTimes.Take(10)) Console.WriteLine($"  {t.OpType,-28} {t.Nodes,4} nodes {t.MsPerRun,9:F4} ms");
            var ops = new JsonArray();
            foreach (var t in r.KernelTimes) ops.Add(new JsonObject { ["op"] = t.OpType, ["nodes"] = t.Nodes, ["ms"] = t.MsPerRun });
            var top = new JsonArray();
            foreach (var (node, op, ms) in r.TopNodes) top.Add(new JsonObject { ["node"] = node, ["op"] = op, ["ms"] = ms });
            return new JsonObject
            {
                ["model"] = spec.Name,
                ["batch"] = batch,
                ["threads"] = threads,
                ["runs"] = runs,
                ["kernel_ms"] = r.KernelMsPerRun,
                ["ops"] = ops,
                ["top_nodes"] = top,
                ["training_graph_ops"] = Counts(r.TrainingGraphOps),
                ["optimized_ops"] = Counts(r.OptimizedOps),
            };
        }
    }

    private static JsonObject Counts(SortedDictionary<string, int> counts)
    {
        var o = new JsonObject();
        foreach (var (k, v) in counts) o[k] = v;
        return o;
    }

    private static JsonObject Json(Timing t) =>
        new() { ["median_ms"] = t.Median, ["p90_ms"] = t.P90, ["min_ms"] = t.Min, ["steps"] = t.Steps };

    private static string Summary(JsonObject r)
    {
        if (r["skipped"] is { } s) return $"{r["model"]}: skipped: {s}";
        double M(string k) => r[k]!["median_ms"]!.GetValue<double>();
        return $"{r["model"],-12} batch {r["batch"],4} threads {r["threads"]}: step {M("step"):F3} ms (p90 {r["step"]!["p90_ms"]!.GetValue<double>():F3}; run {M("run"):F3}, sgd {M("sgd"):F3}), " +
               $"forward {M("forward"):F3}, fisher {M("fisher_step"):F3}, no taps {M("bare_step"):F3}, static batch {M("static_step"):F3}, alloc {r["alloc_bytes"]} B/{r["alloc_steps"]} steps, " +
               $"others used {r["other_cores"]!["step"]!.GetValue<double>():F2} cores ({r["attempts"]!["step"]} attempts)";
    }

    /// <summary>The 1-minute load average (other processes on the machine skew timings), or -1 where unknown.</summary>
    private static double LoadAverage()
    {
        try
        {
            return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return -1;
        }
    }

    private static string FindRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "OnnxKfac.sln"))) return d.FullName;
        }
        throw new InvalidOperationException("cannot find the repository root (OnnxKfac.sln) above the working directory");
    }

    private sealed class Options
    {
        public List<string> Models { get; private set; } = ["fashion_mlp", "mlp", "transformer", "cnn", "resnet"];
        public List<int> Batches { get; private set; } = [32, 256];
        public List<int> Threads { get; private set; } = [1, 2];
        public int Steps { get; private set; } = 100;
        public int Warmup { get; private set; } = 20;
        public string? Out { get; private set; }
        public string? Dump { get; private set; }
        public string? Baseline { get; private set; }
        public List<(string, int, int)> Profile { get; } = [];
        public string? ProfileOut { get; private set; }
        public List<(string, int, int)> Experiments { get; } = [];
        public string? ExperimentsOut { get; private set; }
        public int ProfileRuns { get; private set; } = 50;
        public int Attempts { get; private set; } = 3;
        public double QuietCores { get; private set; } = 0.3;

        private static IEnumerable<(string, int, int)> Configs(string text) =>
            text.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(item => item.Split(':'))
                .Select(p => (p[0], int.Parse(p[1]), int.Parse(p[2])));

        public static Options Parse(string[] args)
        {
            var o = new Options();
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--models": o.Models = [.. Next().Split(',', StringSplitOptions.RemoveEmptyEntries)]; break;
                    case "--batches": o.Batches = [.. Next().Split(',').Select(int.Parse)]; break;
                    case "--threads": o.Threads = [.. Next().Split(',').Select(int.Parse)]; break;
                    case "--steps": o.Steps = int.Parse(Next()); break;
                    case "--warmup": o.Warmup = int.Parse(Next()); break;
                    case "--out": o.Out = Next(); break;
                    case "--dump": o.Dump = Next(); break;
                    case "--baseline": o.Baseline = Next(); break;
                    case "--attempts": o.Attempts = int.Parse(Next()); break;
                    case "--quiet-cores": o.QuietCores = double.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                    case "--profile": o.Profile.AddRange(Configs(Next())); break;
                    case "--experiments": o.Experiments.AddRange(Configs(Next())); break;
                    case "--experiments-out": o.ExperimentsOut = Next(); break;
                    case "--profile-out": o.ProfileOut = Next(); break;
                    case "--profile-runs": o.ProfileRuns = int.Parse(Next()); break;
                    default: throw new ArgumentException($"unknown argument '{args[i]}'");
                }
            }
            if (o.Models.Count == 1 && o.Models[0] == "none") o.Models.Clear();
            if (o.Steps < 50) throw new ArgumentException("--steps must be at least 50");
            return o;
        }
    }
}
