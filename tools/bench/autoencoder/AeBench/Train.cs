using System.Diagnostics;
using System.Text.Json.Nodes;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.AeBench;

/// <summary>
/// One training run of the autoencoder: an optimizer from the same initial weights, for a wall-clock
/// budget or a number of updates. Loss: the toolkit's bce-with-logits with mean reduction (over all
/// N·784 elements); every loss reported is ×784, the paper's per-image sum over pixels averaged over
/// the batch. The training loss is measured on a fixed subset of the training set with the clock
/// stopped (evaluation pass, no backward).
/// </summary>
internal static class Train
{
    public sealed record Config(string Model, string Data, string Optimizer, double Lr, int Batch, double Seconds, int MaxUpdates,
        int Threads, int Seed, double EvalEverySeconds, int EvalExamples, double Damping, double StatisticsFraction, int InverseEvery,
        double KlClip, double Momentum, string Out, double WeightDecay = 1e-5, double QuadraticFraction = 1,
        KfacInversePrecision InversePrecision = KfacInversePrecision.Auto);

    public static JsonObject Run(Config c)
    {
        var x = FashionMnist.Load(Path.Combine(c.Data, "train-images-idx3-ubyte.gz"), out int n);
        var model = OnnxModelIO.Load(c.Model);
        var loss = new LossOptions(LossKind.BceWithLogits);
        var graph = new TrainingGraphOptions(loss) { LayerTaps = false };
        KfacOptions? kfacOptions = null;
        if (c.Optimizer.StartsWith("kfac", StringComparison.Ordinal))
        {
            bool quad = c.Optimizer == "kfac-quad";
            kfacOptions = new KfacOptions
            {
                UpdateRule = quad ? KfacUpdateRule.Quadratic : KfacUpdateRule.KlClip,
                DampingAdaptation = quad ? DampingAdaptation.LevenbergMarquardt : DampingAdaptation.Fixed,
                Damping = c.Damping,
                LearningRate = c.Lr,
                Momentum = c.Momentum,
                KlClip = c.KlClip,
                InverseEvery = c.InverseEvery,
                StatisticsFraction = c.StatisticsFraction,
                QuadraticFraction = c.QuadraticFraction,
                InversePrecision = c.InversePrecision,
                WeightDecay = c.WeightDecay,
                RollbackOnDivergence = true,
            };
            graph = kfacOptions.Configure(graph, c.Batch);
        }
        using var session = TrainingSession.Create(model, graph, new TrainingSessionOptions { Threads = c.Threads, IntraOpSpinning = kfacOptions is null });
        using var kfac = kfacOptions is null ? null : new KfacOptimizer(session, kfacOptions);
        IOptimizer opt = c.Optimizer switch
        {
            "sgd" => new Sgd(session.Parameters, new SgdOptions { LearningRate = c.Lr, Momentum = c.Momentum }),
            "adamw" => new AdamW(session.Parameters, new AdamWOptions { LearningRate = c.Lr, WeightDecay = 0 }),
            _ when kfac is not null => kfac,
            _ => throw new ArgumentException($"--optimizer {c.Optimizer}: sgd, adamw, kfac-quad or kfac-kl"),
        };
        string input = session.DataInputs[0].Name, target = session.TargetInput.Name;
        var batch = session.Bind(c.Batch);
        var ctx = new StepContext(session.Parameters, session) { GradientIsLastRun = true, OneRunPerUpdate = true };   // one batch per update, one process
        var rng = new Random(c.Seed);
        int[] order = Enumerable.Range(0, n).ToArray();
        int pos = n;

        var evalBatch = c.Batch;
        double Evaluate()
        {
            double sum = 0;
            int seen = 0;
            for (int s = 0; s + evalBatch <= c.EvalExamples; s += evalBatch)
            {
                x.AsSpan(s * FashionMnist.Pixels, evalBatch * FashionMnist.Pixels).CopyTo(batch.Input<float>(input));
                x.AsSpan(s * FashionMnist.Pixels, evalBatch * FashionMnist.Pixels).CopyTo(batch.Input<float>(target));
                sum += session.Evaluate(batch) * evalBatch;
                seen += evalBatch;
            }
            return 784 * sum / seen;
        }

        var steps = new JsonArray();
        var evals = new JsonArray();
        var machine = new Machine();
        double clock = 0;         // seconds of training, evaluation excluded
        double nextEval = 0;
        string stop = "budget";
        evals.Add(new JsonObject { ["update"] = 0, ["wall_s"] = 0.0, ["loss"] = Evaluate() });
        nextEval = c.EvalEverySeconds;
        int updates = 0;
        while (clock < c.Seconds && updates < c.MaxUpdates)
        {
            long t0 = Stopwatch.GetTimestamp();
            if (pos + c.Batch > n)
            {
                for (int i = n - 1; i > 0; i--) { int j = rng.Next(i + 1); (order[i], order[j]) = (order[j], order[i]); }
                pos = 0;
            }
            var xs = batch.Input<float>(input);
            var ts = batch.Input<float>(target);
            for (int b = 0; b < c.Batch; b++)
                x.AsSpan(order[pos + b] * FashionMnist.Pixels, FashionMnist.Pixels).CopyTo(xs.Slice(b * FashionMnist.Pixels, FashionMnist.Pixels));
            xs.CopyTo(ts);
            pos += c.Batch;
            ctx.Loss = double.NaN;
            double l = session.Run(batch);
            ctx.Loss = l;
            if (!double.IsFinite(l))
            {
                if (kfac is not null && kfac.TryRecover(out _)) { clock += Stopwatch.GetElapsedTime(t0).TotalSeconds; continue; }
                stop = "diverged";
                break;
            }
            kfac?.ObserveBatch(ctx, c.Batch);
            opt.Step(ctx);
            ctx.Advance(l);
            updates++;
            clock += Stopwatch.GetElapsedTime(t0).TotalSeconds;
            var rec = new JsonObject { ["update"] = updates, ["wall_s"] = clock, ["batch_loss"] = 784 * l };
            if (kfac is not null)
            {
                var ls = kfac.LastStep;
                rec["damping"] = ls.Damping;
                if (double.IsFinite(ls.Alpha)) rec["alpha"] = ls.Alpha;
                if (double.IsFinite(ls.Mu)) rec["mu"] = ls.Mu;
                if (double.IsFinite(ls.Rho)) rec["rho"] = ls.Rho;
                if (double.IsFinite(ls.Nu)) rec["nu"] = ls.Nu;
                if (ls.RefreshedInverses) rec["float32_inverses"] = ls.SinglePrecisionInverses;
            }
            steps.Add(rec);
            if (clock >= nextEval || clock >= c.Seconds || updates >= c.MaxUpdates)
            {
                double e = Evaluate();
                evals.Add(new JsonObject { ["update"] = updates, ["wall_s"] = clock, ["loss"] = e });
                nextEval = clock + c.EvalEverySeconds;
                if (!double.IsFinite(e)) { stop = "diverged"; break; }
            }
        }
        var result = new JsonObject
        {
            ["kind"] = "train",
            ["optimizer"] = c.Optimizer, ["lr"] = c.Lr, ["batch"] = c.Batch, ["threads"] = c.Threads, ["seed"] = c.Seed,
            ["damping"] = c.Damping, ["statistics_fraction"] = c.StatisticsFraction, ["quadratic_fraction"] = c.QuadraticFraction, ["inverse_every"] = c.InverseEvery,
            ["inverse_precision"] = c.InversePrecision.ToString().ToLowerInvariant(),
            ["kl_clip"] = c.KlClip, ["momentum"] = c.Momentum, ["weight_decay"] = c.WeightDecay,
            ["updates"] = updates, ["train_seconds"] = clock, ["stop"] = stop,
            ["eval_examples"] = c.EvalExamples,
            ["other_cores"] = machine.OtherCores(), ["loadavg_end"] = Machine.LoadAverage(),
            ["peak_rss_mib"] = Machine.PeakRssMiB(), ["isa"] = Machine.Isa(),
            ["evals"] = evals, ["steps"] = steps,
        };
        if (kfac is not null)
        {
            var t = kfac.Timings;
            double u = Math.Max(1, t.Updates);
            result["kfac_ms_per_update"] = new JsonObject
            {
                ["statistics"] = 1e3 * t.Statistics / u, ["inverses"] = 1e3 * t.Inverses / u, ["preconditioning"] = 1e3 * t.Preconditioning / u,
                ["coefficients"] = 1e3 * t.Coefficients / u, ["apply"] = 1e3 * t.Apply / u,
            };
        }
        return result;
    }
}
