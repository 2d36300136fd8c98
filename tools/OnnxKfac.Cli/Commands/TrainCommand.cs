using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using OnnxKfac.Cli.Common;
using OnnxKfac.Cli.Training;
using OnnxKfac.Graph;
using OnnxKfac.Toolkit.Checkpoints;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Export;
using OnnxKfac.Toolkit.Runtime;
using Spectre.Console;

namespace OnnxKfac.Cli.Commands;

/// <summary>
/// <c>onnx-kfac train [MODEL] [flags] [--config run.json]</c>: fine-tunes a model on a data
/// set with SGD or AdamW, with validation, checkpoints, a report, a loss plot and CI gates.
/// With neither MODEL nor --train it fine-tunes the embedded default (tools/default).
/// </summary>
internal static class TrainCommand
{
    /// <summary>Exit code of a run stopped by Ctrl+C (after writing its checkpoint and report).</summary>
    public const int Cancelled = 130;

    /// <summary>Exit code of a run stopped by SIGTERM (docker stop, Kubernetes, CI cancellation), 128 + 15, after the same writes.</summary>
    public const int Terminated = 143;

    public const int DefaultEpochs = 3;
    public const int DefaultBatchSize = 32;
    public const long DefaultSeed = 42;

    public static Command Create(CliContext ctx)
    {
        var table = new SettingTable(TrainSettings.All);
        var model = new Argument<string?>("MODEL")
        {
            Description = "The ONNX model to fine-tune; omit it (and --train) to fine-tune the embedded default",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var config = new Option<string?>("--config")
        {
            Description = "A JSON file of settings: every flag is a key (--batch-size 64 = \"batch_size\": 64); flags override it",
            HelpName = "run.json",
        };
        var cmd = new Command("train", "Fine-tune a model (K-FAC, SGD or AdamW), with validation, checkpoints, a report, a loss plot and CI gates");
        cmd.Arguments.Add(model);
        cmd.Options.Add(config);
        table.AddTo(cmd);
        cmd.SetAction(r => new TrainRun(ctx, table).Execute(r, r.GetValue(model), r.GetValue(config)));
        return cmd;
    }

    /// <summary>
    /// The settings in effect: the resumed checkpoint's stored config (with --resume), then the
    /// config file, then the flags, each overriding the one before; then the embedded default's
    /// settings when no model and no training data were named.
    /// </summary>
    public static Config LoadConfig(SettingTable table, ParseResult r, string? modelArg, string? configPath, out Checkpoint? resumeFrom)
    {
        Config Layers(Config into)
        {
            if (configPath is not null) table.FromFile(configPath, into);
            table.FromCommandLine(r, into);
            if (modelArg is not null) into.Set("model", modelArg, "MODEL");
            return into;
        }
        var first = Layers(new Config());
        resumeFrom = null;
        if (first.Peek("resume") is true)
        {
            string path = first.Peek("checkpoint") as string
                ?? throw first.Error("resume", "needs --checkpoint PATH: the checkpoint to continue from");
            if (File.Exists(path))
            {
                resumeFrom = Checkpoint.Load(path);
                var cfg = new Config();
                if (resumeFrom.Config.Length > 0) table.FromJson(resumeFrom.Config, $"checkpoint {path}", cfg, fromCheckpoint: true);
                first = Layers(cfg);
            }
        }
        first.IsDefaultJob = !first.Has("model") && !first.Has("train");
        if (first.IsDefaultJob) DefaultJob.Apply(first);
        return first;
    }

    private sealed class TrainRun(CliContext ctx, SettingTable table)
    {
        private readonly List<IDisposable> _owned = [];
        private int _batch;
        private long _updatesPerEpoch;
        private long _epochExamples;

        /// <summary>One process, or this rank of an mpirun launch (then libmpi is loaded; a plain run never needs it).</summary>
        private ICollectives _ranks = SingleProcess.Instance;

        public int Execute(ParseResult r, string? modelArg, string? configPath)
        {
            _ranks = MpiCollectives.FromEnvironment();
            if (_ranks is IDisposable mpi) _owned.Insert(0, mpi);   // disposed last: MPI_Finalize
            try { return Run(r, modelArg, configPath); }
            catch (Exception e) when (_ranks is MpiCollectives { Size: > 1 } world)
            {
                // The other ranks would wait in their next collective: stop them all now, naming this rank.
                world.Abort($"error: rank {world.Rank} of {world.Size}: {e.Message}", e is OnnxKfacException ? ExitCodes.UserError : ExitCodes.Unexpected);
                throw;
            }
            finally
            {
                for (int k = _owned.Count - 1; k >= 0; k--) _owned[k].Dispose();
            }
        }

        private T Own<T>(T d) where T : IDisposable
        {
            _owned.Add(d);
            return d;
        }

        private int Run(ParseResult r, string? modelArg, string? configPath)
        {
            var wall = Stopwatch.StartNew();
            string startedAt = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
            var cfg = LoadConfig(table, r, modelArg, configPath, out var resumeFrom);
            bool quiet = cfg.Bool("quiet") || _ranks.Rank != 0;   // with several ranks, rank 0 speaks and writes
            var log = _ranks.Rank == 0 ? ctx.Out : TextWriter.Null;
            if (cfg.IsDefaultJob)
                log.WriteLine("No MODEL given: fine-tuning the embedded default, a Fashion-MNIST MLP (72.8% test accuracy), on its 4000 shipped images. Train your own: onnx-kfac train MODEL --train DATA ...");

            // ---- settings that need no model --------------------------------------------------
            string modelPath = cfg.String("model") ?? throw new OnnxKfacException("give the MODEL to fine-tune (or neither MODEL nor --train, to fine-tune the embedded default)");
            if (cfg.String("train") is null) throw new OnnxKfacException($"--train is required: the data to fine-tune {modelPath} on");
            foreach (var key in new[] { "train", "train_labels", "val", "val_labels", "test", "test_labels" }) DataSources.CheckExists(cfg, key);
            if (cfg.Has("val") && cfg.Has("val_split")) throw cfg.Error("val_split", "give --val or --val-split, not both");
            if (!cfg.Has("val") && cfg.Has("val_labels")) throw cfg.Error("val_labels", "given without --val");
            if (!cfg.Has("test") && cfg.Has("test_labels")) throw cfg.Error("test_labels", "given without --test");
            long seedValue = cfg.Long("seed", DefaultSeed)!.Value;
            if (seedValue < 0) throw cfg.Error("seed", $"{seedValue}: must be 0 or more");
            ulong seed = (ulong)seedValue;
            int batch = Positive(cfg, "batch_size", DefaultBatchSize);
            int epochs = Positive(cfg, "epochs", DefaultEpochs);
            long? maxSteps = cfg.Long("max_steps");
            if (maxSteps is < 1) throw cfg.Error("max_steps", $"{maxSteps}: must be at least 1");
            int accumulate = Positive(cfg, "accumulate", 1);
            int? validateEvery = OptionalPositive(cfg, "validate_every");
            int? patience = OptionalPositive(cfg, "patience");
            int? checkpointEvery = OptionalPositive(cfg, "checkpoint_every");
            int logEvery = Positive(cfg, "log_every", 50);
            double? clip = cfg.Double("clip_grad_norm");
            if (clip is <= 0) throw cfg.Error("clip_grad_norm", $"{clip}: must be positive");
            string? checkpoint = cfg.String("checkpoint");
            if (checkpointEvery is not null && checkpoint is null) throw cfg.Error("checkpoint_every", "needs --checkpoint PATH");
            bool resume = cfg.Bool("resume");
            if (resume && resumeFrom is null) log.WriteLine($"no checkpoint at {checkpoint} yet: starting from the model's weights");
            string? report = cfg.String("report"), plot = cfg.String("plot"), export = cfg.String("export");
            if (_ranks.Rank != 0) report = plot = export = null;
            if (report is not null && !cfg.Has("log_csv")) cfg.Set("log_csv", StepLogBeside(report), cfg.Where("report"));
            string? stepLog = _ranks.Rank == 0 ? cfg.String("log_csv") : null;
            CheckNotModel(cfg, modelPath, "export", "checkpoint", "report", "plot", "log_csv");
            if (cfg.Bool("export_with_preprocessing") && cfg.String("export") is null) throw cfg.Error("export_with_preprocessing", "needs --export OUT.onnx");
            if (plot is not null && !LossPlot.IsSupported(plot)) throw cfg.Error("plot", $"{plot}: the plot is written as .png or .svg, chosen by the extension");
            // Every output is checked before training: a run must not fail at its end for an unwritable path.
            foreach (var key in new[] { "checkpoint", "report", "plot", "export", "log_csv" }) CheckWritable(cfg, key);

            // ---- model, data, optimizer ----------------------------------------------------------
            var setup = Own(ModelSetup.Open(cfg, modelPath, seed, graph => OptimizerSetup.ConfigureGraph(cfg, graph, accumulate == 1 && _ranks.Size == 1 ? batch : null),
                spinning: OptimizerSetup.Kind(cfg) != "kfac"));
            var session = setup.Session;
            bool hasVal = cfg.Has("val") || cfg.Has("val_split");
            bool hasTest = cfg.Has("test");
            int? topK = OptionalPositive(cfg, "top_k");
            if (topK is not null && !setup.Classification) throw cfg.Error("top_k", "applies to cross-entropy classifiers only");
            if (topK is { } k && setup.Classes is { } classes && k > classes) throw cfg.Error("top_k", $"{k} is more than the model's {classes} classes");
            var gates = Gates.Parse(cfg.List("fail_if"), Availability(hasVal, hasTest, setup.Classification, topK is not null), cfg);
            if (patience is not null && !hasVal) throw cfg.Error("patience", "early stopping needs validation data (--val or --val-split)");
            if (validateEvery is not null && !hasVal) throw cfg.Error("validate_every", "needs validation data (--val or --val-split)");

            var allTrain = Own(setup.OpenData(cfg, "train", "train_labels"));
            Dataset trainRaw = allTrain;
            Dataset? valRaw = null;
            Dataset? val = null, test = null;
            if (cfg.Double("val_split") is { } fraction)
            {
                if (!(fraction > 0 && fraction < 1)) throw cfg.Error("val_split", $"{fraction}: must lie strictly between 0 and 1");
                try
                {
                    var (t, v) = allTrain.Split(fraction, seed);
                    trainRaw = Own(t);
                    valRaw = Own(v);
                }
                catch (DataException e) { throw cfg.Error("val_split", e.Message.TrimEnd('.'), e); }
            }
            else if (cfg.Has("val")) valRaw = Own(setup.OpenData(cfg, "val", "val_labels"));
            var norm = DataSources.ResolveNormalization(cfg, trainRaw);
            var train = Own(DataSources.Apply(trainRaw, norm, cfg));
            if (valRaw is not null) val = Own(DataSources.Apply(valRaw, norm, cfg));
            if (hasTest) test = Own(DataSources.Apply(Own(setup.OpenData(cfg, "test", "test_labels")), norm, cfg));

            // With K ranks an update reads a global batch of K × --batch-size, and a short last one is dropped.
            long globalBatch = (long)batch * _ranks.Size;
            bool dropLast = cfg.Bool("drop_last") || _ranks.Size > 1;
            long batchesPerEpoch = dropLast ? train.Count / globalBatch : (train.Count + globalBatch - 1) / globalBatch;
            if (batchesPerEpoch == 0)
                throw cfg.Error("batch_size", _ranks.Size > 1
                    ? $"{_ranks.Size} ranks × {batch} is more than the {train.Count} training examples: every global batch would be dropped"
                    : $"{batch} is more than the {train.Count} training examples, and --drop-last drops every batch");
            long updatesPerEpoch = (batchesPerEpoch + accumulate - 1) / accumulate;
            _batch = checked((int)globalBatch);
            _updatesPerEpoch = updatesPerEpoch;
            _epochExamples = dropLast ? batchesPerEpoch * globalBatch : train.Count;
            bool epochsGiven = cfg.Has("epochs");
            long totalSteps = maxSteps is { } ms ? (epochsGiven ? Math.Min(ms, epochs * updatesPerEpoch) : ms) : epochs * updatesPerEpoch;
            var schedule = OptimizerSetup.Schedule(cfg, totalSteps, updatesPerEpoch);
            var plateau = OptimizerSetup.PlateauOf(schedule);
            if (plateau is not null && !hasVal) throw cfg.Error("schedule", "plateau reduces the rate when the validation loss stops improving: it needs validation data (--val or --val-split)");
            var optimizer = OptimizerSetup.Create(cfg, session, totalSteps, updatesPerEpoch, schedule);
            if (optimizer is IDisposable disposable) Own(disposable);

            var options = new TrainerOptions
            {
                Epochs = epochs,
                MaxSteps = maxSteps is null ? null : totalSteps,
                BatchSize = batch,
                DropLast = cfg.Bool("drop_last"),
                Seed = seed,
                ValidateEvery = validateEvery,
                EarlyStoppingPatience = patience,
                TopK = topK,
                Plateau = plateau,
                KeepBest = !cfg.Bool("no_keep_best"),
                ClipGradNorm = optimizer is Toolkit.Kfac.KfacOptimizer ? null : clip,   // K-FAC clips the update it takes
                AccumulationSteps = accumulate,
                SkipNonFinite = cfg.Bool("skip_nonfinite"),
                CheckpointPath = checkpoint,
                CheckpointEvery = checkpointEvery,
                Collectives = _ranks,
            };
            if (checkpoint is not null) TrainReport.CreateParent(checkpoint);
            options = options with { CheckpointConfig = cfg.ResolvedJson() };

            var plan = new RunPlan(totalSteps, maxSteps is null || epochsGiven ? epochs : null, _batch, resumeFrom?.Longs[CheckpointKeys.Step] ?? 0, validateEvery is not null, _epochExamples);
            bool terminal = ctx.IsTerminal && !quiet;
            IAnsiConsole? console = terminal ? AnsiConsole.Create(new AnsiConsoleSettings
            {
                Ansi = AnsiSupport.Detect,
                ColorSystem = ColorSystemSupport.Detect,
                Interactive = InteractionSupport.Yes,
                Out = new AnsiConsoleOutput(ctx.Out),
            }) : null;
            var progress = console is null ? null : new SpectreProgress(console, plan);
            ITrainingObserver? display = quiet ? null : progress ?? (ITrainingObserver)new PlainLog(log, plan, logEvery);
            var baseRate = cfg.Double("lr", optimizer is Toolkit.Kfac.KfacOptimizer ? OptimizerSetup.DefaultKfacLearningRate : OptimizerSetup.DefaultLearningRate)!.Value;
            bool hasRate = !(optimizer is Toolkit.Kfac.KfacOptimizer && cfg.String("kfac_update", "kl-clip") == "quadratic");
            var stepRows = stepLog is null ? null : Own(new StepLog(stepLog, append: resumeFrom is not null, u => hasRate ? baseRate * schedule.Factor(u) : null, display));
            var trainClock = new Stopwatch();   // started with training: the report's train_seconds
            var recorder = new RunRecorder(stepRows ?? display, trainClock);
            var trainer = new Trainer(session, optimizer, options, recorder);
            if (resumeFrom is not null)
            {
                trainer.Resume(resumeFrom, checkpoint!);
                log.WriteLine($"resumed from {checkpoint} at update {trainer.Step}");
            }

            string lossName = Graph.Losses.LossOptions.Name(setup.Loss.Kind);
            if (!quiet)
            {
                log.WriteLine($"model {modelPath}: {session.Parameters.Count} parameters ({setup.ParameterValues.ToString("N0", CultureInfo.InvariantCulture)} values) trained, {lossName} on '{session.Manifest.Loss.Output}'");
                foreach (var note in setup.Notes) log.WriteLine(note.StartsWith("warning: ", StringComparison.Ordinal) ? note : "tie: " + note);
                log.WriteLine($"data: {train.Count} training examples" + (val is null ? "" : $", {val.Count} validation") + (test is null ? "" : $", {test.Count} test") +
                    (norm is null ? "" : $"; features divided by {Config.Format(cfg.Double("scale", 1)!.Value)}" + (norm.Mean is null ? "" : ", then normalized")));
                log.WriteLine($"{OptimizerSetup.Describe(cfg)}, batch {batch}, " +
                    (plan.Epochs is { } e ? $"{e} epochs, " : "") + $"{totalSteps} updates, seed {seed}, on {session.Options.Device}");
                if (optimizer is Toolkit.Kfac.KfacOptimizer inverting) log.WriteLine($"kfac: inverses by {inverting.InverseRoute}");
                if (cfg.Double("kfac_quadratic_fraction") is { } q && q < 1)
                {
                    int seen = session.FisherProductExamples(batch);
                    log.WriteLine(seen < batch
                        ? $"kfac: Fisher products of the quadratic model on the first {seen} of {batch} examples of each batch"
                        : $"kfac: Fisher products of the quadratic model on all {batch} examples of each batch (the model's batch size is fixed)");
                }
                if (_ranks is MpiCollectives world)
                    log.WriteLine($"data-parallel: {world.Size} ranks over {world.Library}, batch {batch} per rank = {batch * world.Size} per update; rank 0 writes every file");
            }

            Metrics? testBefore = null, testAfter = null;
            if (test is not null)
            {
                testBefore = Evaluate(trainer, test, "--test");
                log.WriteLine($"test before: {Describe(testBefore.Value)}");
            }

            // ---- train ---------------------------------------------------------------------------
            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
            Console.CancelKeyPress += onCancel;
            bool terminated = false;
            // SIGTERM is handled as Ctrl+C: stop after the current update, write checkpoint, report and plot.
            using var onTerm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c =>
            {
                c.Cancel = true;
                terminated = true;
                cancel.Cancel();
            });
            TrainingResult? result = null;
            string? error = null;
            trainClock.Start();
            try
            {
                result = progress is null ? Fit(trainer, train, val, cancel.Token) : progress.Run(() => Fit(trainer, train, val, cancel.Token));
            }
            catch (OnnxKfacException e)
            {
                error = e.Message;
                WriteOutputs(cfg, setup, startedAt, wall, trainClock, resumeFrom, train, val, test, norm, recorder, null, error, testBefore, null, [], plot, report, null);
                throw;
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
            trainClock.Stop();

            if (test is not null) testAfter = Evaluate(trainer, test, "--test");
            if (export is not null)
            {
                var exported = ModelExport.WithParameters(session.SourceModel, session.Parameters);
                if (cfg.Bool("export_with_preprocessing"))
                {
                    if (norm is null) log.WriteLine("--export-with-preprocessing: no --scale or --normalize, so the exported model takes the data as it is");
                    else exported = ModelExport.WithPreprocessing(exported, setup.Inputs[0].Name, norm, setup.InputShapes[0]);
                }
                TrainReport.CreateParent(export);
                PrepareCommand.Write(() => Graph.Model.OnnxModelIO.Save(exported, export), export);
            }

            // ---- summary, report, gates -------------------------------------------------------------
            var res = result!;
            log.WriteLine($"done: {res.Steps - plan.StartStep} updates in {ProgressText.Seconds(trainClock.Elapsed)} ({(res.Steps - plan.StartStep) / Math.Max(1e-9, trainClock.Elapsed.TotalSeconds):F1} updates/s), stopped: {res.StopReason}" +
                (res.SkippedSteps > 0 ? $", {res.SkippedSteps} non-finite batches skipped" : ""));
            if (_ranks is MpiCollectives { Statistics: var cs } && res.Steps > plan.StartStep)
                log.WriteLine($"collectives (rank 0): {cs}; per update {cs.TotalBytes / 1e6 / (res.Steps - plan.StartStep):F3} MB, {1e3 * cs.TotalSeconds / (res.Steps - plan.StartStep):F2} ms");
            if (optimizer is Toolkit.Kfac.KfacOptimizer kfac && !quiet)
            {
                log.WriteLine($"kfac: damping {kfac.Damping:G3}; K-FAC's own time: {kfac.Timings}");
                if (kfac.InverseMethod == Toolkit.Kfac.KfacInverseMethod.Cholesky && _ranks.Size == 1)   // with ranks, each inverts only its share
                    log.WriteLine($"kfac: the last inverse refresh inverted {kfac.LastRefreshSinglePrecision} of {kfac.FactorGroups} damped factor matrices in float32, the rest in float64");
            }
            if (res.FinalValidation is { } fv) log.WriteLine($"validation: {Describe(fv)}");
            if (testAfter is { } ta)
            {
                string delta = ta.Accuracy is { } a && testBefore?.Accuracy is { } b ? $" ({(a - b >= 0 ? "+" : "")}{100 * (a - b):F1} points)" : "";
                log.WriteLine($"test after:  {Describe(ta)}{delta}");
            }
            if (!quiet)
            {
                var tables = ReportWriter.For(ctx);
                ClassifierMetrics.WriteConfusion(tables, "validation confusion matrix", res.FinalValidation);
                ClassifierMetrics.WriteConfusion(tables, "test confusion matrix", testAfter);
            }
            var metrics = WriteOutputs(cfg, setup, startedAt, wall, trainClock, resumeFrom, train, val, test, norm, recorder, res, null, testBefore, testAfter, gates, plot, report, export);
            foreach (var (what, path) in new[] { ("checkpoint", checkpoint), ("fine-tuned model", export), ("report", report), ("step log", stepLog), ("loss plot", plot) })
                if (path is not null) log.WriteLine($"wrote {what} {path}");
            if (res.StopReason == "cancelled") return terminated ? Terminated : Cancelled;
            return metrics.GatesPassed ? ExitCodes.Ok : Gates.ExitCode;
        }

        private static TrainingResult Fit(Trainer trainer, Dataset train, Dataset? val, CancellationToken cancel)
        {
            try { return trainer.Fit(train, val, cancel); }
            catch (DataException e) { throw new OnnxKfacException(e.Message.TrimEnd('.'), e); }
        }

        private static Metrics Evaluate(Trainer trainer, Dataset data, string flag)
        {
            try { return trainer.Evaluate(data); }
            catch (DataException e) { throw new OnnxKfacException($"{flag}: {e.Message.TrimEnd('.')}", e); }
        }

        private TrainReport WriteOutputs(Config cfg, ModelSetup setup, string startedAt, Stopwatch wall, Stopwatch trainClock, Checkpoint? resumeFrom,
            Dataset train, Dataset? val, Dataset? test, Normalization? norm, RunRecorder rec, TrainingResult? res, string? error,
            Metrics? testBefore, Metrics? testAfter, IReadOnlyList<Gate> gates, string? plot, string? report, string? export)
        {
            double seconds = trainClock.Elapsed.TotalSeconds;
            long start = resumeFrom?.Longs[CheckpointKeys.Step] ?? 0;
            long steps = res?.Steps ?? rec.Steps.Where(s => !s.Skipped).Select(s => s.Step).DefaultIfEmpty(start).Max();
            long skipped = res?.SkippedSteps ?? rec.Steps.Count(s => s.Skipped);
            double examplesPerSecond = seconds > 0 ? rec.Examples.Total(_batch, _epochExamples) / seconds : 0;
            // Mean training loss over the last epoch's worth of updates.
            int window = (int)Math.Max(1, _updatesPerEpoch);
            var lastLosses = rec.Steps.Where(s => !s.Skipped).TakeLast(window).Select(s => s.Loss).ToArray();
            var m = new SortedDictionary<string, double?>(StringComparer.Ordinal)
            {
                ["train_loss"] = lastLosses.Length > 0 ? lastLosses.Average() : null,
                ["val_loss"] = res?.FinalValidation?.Loss,
                ["val_accuracy"] = res?.FinalValidation?.Accuracy,
                ["best_val_loss"] = res?.BestValidation?.Loss,
                ["test_loss"] = testAfter?.Loss,
                ["test_accuracy"] = testAfter?.Accuracy,
                ["test_loss_before"] = testBefore?.Loss,
                ["test_accuracy_before"] = testBefore?.Accuracy,
                ["steps"] = steps,
                ["skipped_steps"] = skipped,
                ["epochs"] = res?.Epochs ?? rec.Epochs.Count,
                ["steps_per_second"] = seconds > 0 ? (steps - start) / seconds : 0,
                ["examples_per_second"] = examplesPerSecond,
                ["wall_seconds"] = wall.Elapsed.TotalSeconds,
            };
            ClassifierMetrics.AddTo(m, "val_", res?.FinalValidation);
            ClassifierMetrics.AddTo(m, "test_", testAfter);
            var gateResults = res is null ? [] : Gates.Check(gates, m, ctx.Out, ctx.Error);
            var r = new TrainReport
            {
                Command = "train",
                Model = setup.Path,
                DefaultJob = cfg.IsDefaultJob,
                Config = JsonNode.Parse(cfg.ResolvedJson()),
                StartedAt = startedAt,
                Data = new()
                {
                    ["train"] = new DataSummary(train.Source, train.Count),
                    ["validation"] = val is null ? null : new DataSummary(val.Source, val.Count),
                    ["test"] = test is null ? null : new DataSummary(test.Source, test.Count),
                },
                Normalization = DataSources.DescribeNormalization(norm),
                Parameters = setup.Session.Parameters.Count,
                ParameterValues = setup.ParameterValues,
                ResumedFromStep = resumeFrom is null ? null : start,
                WallSeconds = wall.Elapsed.TotalSeconds,
                TrainSeconds = seconds,
                Steps = steps,
                SkippedSteps = skipped,
                Epochs = (int)(m["epochs"] ?? 0),
                StepsPerSecond = m["steps_per_second"] ?? 0,
                ExamplesPerSecond = examplesPerSecond,
                StopReason = res?.StopReason ?? "error",
                Error = error,
                StepLosses = rec.Steps,
                EpochMetrics = rec.Epochs,
                Validations = rec.Validations,
                Messages = rec.Messages,
                Metrics = m,
                ConfusionMatrices = new()
                {
                    ["validation"] = ClassifierMetrics.Rows(res?.FinalValidation),
                    ["test"] = ClassifierMetrics.Rows(testAfter),
                },
                Gates = gateResults,
                GatesPassed = gateResults.All(g => g.Passed),
                Outputs = new() { ["checkpoint"] = cfg.String("checkpoint"), ["export"] = export, ["report"] = report, ["plot"] = plot },
            };
            if (plot is not null)
            {
                TrainReport.CreateParent(plot);
                 string title = $"{Path.GetFileName(setup.Path)}: {OptimizerSetup.Describe(cfg)}, batch {_batch}" + (error is null ? "" : " (stopped by an error)");
                PrepareCommand.Write(() => LossPlot.Save(plot, title, rec.Steps, rec.Validations, window / 4), plot);
            }
            if (report is not null) r.Write(report);
            return r;
        }

        private static string Describe(Metrics m) =>
            (m.Accuracy is { } a ? $"accuracy {ProgressText.Percent(a)}, " : "") + $"loss {ProgressText.Loss(m.Loss)}{ClassifierMetrics.Describe(m)} ({m.Examples} examples)";

        private static IReadOnlyDictionary<string, string?> Availability(bool val, bool test, bool classification, bool topK)
        {
            const string noVal = "no validation data (--val or --val-split)";
            const string noTest = "no test data (--test)";
            const string noAcc = "accuracy is measured for cross-entropy only";
            var available = new Dictionary<string, string?>(StringComparer.Ordinal)
            {
                ["train_loss"] = null,
                ["val_loss"] = val ? null : noVal,
                ["val_accuracy"] = !val ? noVal : !classification ? noAcc : null,
                ["best_val_loss"] = val ? null : noVal,
                ["test_loss"] = test ? null : noTest,
                ["test_accuracy"] = !test ? noTest : !classification ? noAcc : null,
                ["test_loss_before"] = test ? null : noTest,
                ["test_accuracy_before"] = !test ? noTest : !classification ? noAcc : null,
                ["steps"] = null,
                ["skipped_steps"] = null,
                ["epochs"] = null,
                ["steps_per_second"] = null,
                ["examples_per_second"] = null,
                ["wall_seconds"] = null,
            };
            ClassifierMetrics.AddAvailability(available, "val_", val ? null : noVal, classification, topK);
            ClassifierMetrics.AddAvailability(available, "test_", test ? null : noTest, classification, topK);
            return available;
        }

        private static int Positive(Config cfg, string key, int fallback)
        {
            int v = cfg.Int(key, fallback)!.Value;
            return v >= 1 ? v : throw cfg.Error(key, $"{v}: must be at least 1");
        }

        private static int? OptionalPositive(Config cfg, string key)
        {
            int? v = cfg.Int(key);
            return v is null or >= 1 ? v : throw cfg.Error(key, $"{v}: must be at least 1");
        }

        /// <summary>The folder of output <paramref name="key"/> exists (or is created) and accepts a file.</summary>
        private static void CheckWritable(Config cfg, string key)
        {
            if (cfg.String(key) is { } path) OutputPaths.CheckWritable(path, (message, e) => cfg.Error(key, message, e));
        }

        /// <summary>The step log beside a report: <c>out/r.json</c> → <c>out/r.steps.csv</c>.</summary>
        public static string StepLogBeside(string report) =>
            Path.Combine(Path.GetDirectoryName(report) ?? "", Path.GetFileNameWithoutExtension(report) + ".steps.csv");

        private static void CheckNotModel(Config cfg, string model, params string[] keys)
        {
            foreach (var key in keys)
                if (cfg.String(key) is { } path && string.Equals(Path.GetFullPath(path), Path.GetFullPath(model), StringComparison.Ordinal))
                    throw cfg.Error(key, $"{path} is the model being trained; refusing to overwrite it");
        }
    }
}
