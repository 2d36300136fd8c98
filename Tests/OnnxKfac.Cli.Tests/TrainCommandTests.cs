using System.Text.Json;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Graph.Model;
using OnnxKfac.Toolkit.Checkpoints;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>onnx-kfac train: the embedded default, config files, determinism, resume, gates, reports and plots.</summary>
public sealed class TrainCommandTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _model;
    private readonly string _train;
    private readonly string _val;

    public TrainCommandTests()
    {
        _model = Models.Save(Models.Linear2(), _dir["linear2.onnx"]);
        _train = TrainData.Csv(_dir["train.csv"], 96, 1);
        _val = TrainData.Csv(_dir["val.csv"], 40, 2);
    }

    public void Dispose() => _dir.Dispose();

    private CliResult Train(params string[] extra) =>
        Run(["train", _model, "--train", _train, "--val", _val, "--batch-size", "8", "--threads", "1", "--quiet", .. extra]);

    [Fact]
    public void WithNoArgumentsTheEmbeddedDefaultIsFineTunedAndTheTestAccuracyPrintedBeforeAndAfter()
    {
        var r = AssertOk(Run("train", "--max-steps", "40", "--report", _dir["r.json"], "--plot", _dir["loss.png"]));
        Assert.Contains("fine-tuning the embedded default", r.Out);
        Assert.Contains("test before: accuracy 72.80%", r.Out); // as tools/default/README.md measured in PyTorch
        Assert.Contains("test after:", r.Out);
        var report = TrainData.Report(_dir["r.json"]);
        Assert.True(report.GetProperty("default_job").GetBoolean());
        Assert.Equal("max steps", report.GetProperty("stop_reason").GetString());
        Assert.Equal(40, TrainData.StepLosses(report).Length);
        var metrics = report.GetProperty("metrics");
        Assert.Equal(0.728, metrics.GetProperty("test_accuracy_before").GetDouble(), 6);
        Assert.True(metrics.GetProperty("test_accuracy").GetDouble() > 0.728, report.ToString());
        Assert.Equal(3600, report.GetProperty("data").GetProperty("train").GetProperty("examples").GetInt32());
        Assert.Equal(255, report.GetProperty("config").GetProperty("scale").GetDouble());
        Assert.Equal("mean", report.GetProperty("config").GetProperty("reduction").GetString());   // the default, not null
        Assert.Equal(1, report.GetProperty("step_losses")[0].GetProperty("epoch").GetInt32());      // epochs count from 1, as printed
        var png = File.ReadAllBytes(_dir["loss.png"]);
        Assert.True(png.Length > 10_000);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
    }

    [Fact]
    public void TheSameSeedGivesTheSameLossesAndAnotherSeedOthers()
    {
        AssertOk(Train("--epochs", "2", "--seed", "5", "--report", _dir["a.json"]));
        AssertOk(Train("--epochs", "2", "--seed", "5", "--report", _dir["b.json"]));
        AssertOk(Train("--epochs", "2", "--seed", "6", "--report", _dir["c.json"]));
        var a = TrainData.StepLosses(TrainData.Report(_dir["a.json"]));
        Assert.Equal(24, a.Length);
        Assert.Equal(a, TrainData.StepLosses(TrainData.Report(_dir["b.json"])));
        Assert.NotEqual(a, TrainData.StepLosses(TrainData.Report(_dir["c.json"])));
    }

    [Fact]
    public void FlagsOverrideTheConfigFileAndTheResolvedConfigGoesIntoReportAndCheckpoint()
    {
        File.WriteAllText(_dir["run.json"], """
            {
              // comments and trailing commas are fine
              "optimizer": "sgd", "lr": 0.5, "momentum": 0.9, "epochs": 2,
              "batch-size": 16, "fail_if": ["val_loss>100"],
            }
            """);
        var r = AssertOk(Train("--config", _dir["run.json"], "--lr", "0.05", "--report", _dir["r.json"], "--checkpoint", _dir["ck"]));
        var config = TrainData.Report(_dir["r.json"]).GetProperty("config");
        Assert.Equal("sgd", config.GetProperty("optimizer").GetString());
        Assert.Equal(0.05, config.GetProperty("lr").GetDouble());
        Assert.Equal(0.9, config.GetProperty("momentum").GetDouble());
        Assert.Equal(8, config.GetProperty("batch_size").GetInt32()); // the flag beats the file
        Assert.Equal(2, config.GetProperty("epochs").GetInt32());
        Assert.Contains("gate passed", r.Out);
        var stored = JsonDocument.Parse(Checkpoint.Load(_dir["ck"]).Config).RootElement;
        Assert.Equal(0.05, stored.GetProperty("lr").GetDouble());
        Assert.Equal("sgd", stored.GetProperty("optimizer").GetString());
    }

    [Fact]
    public void AResumedRunFollowsTheUninterruptedTrajectory()
    {
        string[] common = ["--epochs", "3", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05", "--seed", "3"];
        AssertOk(Train([.. common, "--report", _dir["full.json"]]));
        AssertOk(Train([.. common, "--max-steps", "7", "--checkpoint", _dir["ck"], "--report", _dir["first.json"]]));
        var resumed = AssertOk(Train([.. common, "--checkpoint", _dir["ck"], "--resume", "--report", _dir["second.json"]]));
        var full = TrainData.StepLosses(TrainData.Report(_dir["full.json"]));
        var first = TrainData.StepLosses(TrainData.Report(_dir["first.json"]));
        var second = TrainData.Report(_dir["second.json"]);
        Assert.Equal(7, second.GetProperty("resumed_from_step").GetInt32());
        Assert.Equal(36, full.Length);
        Assert.Equal(full, first.Concat(TrainData.StepLosses(second)));

        // With only --resume, the settings come from the checkpoint (which now says: finished).
        var again = AssertOk(Run("train", "--resume", "--checkpoint", _dir["ck"], "--quiet", "--report", _dir["third.json"]));
        Assert.Empty(TrainData.StepLosses(TrainData.Report(_dir["third.json"])));
        Assert.Equal("sgd", TrainData.Report(_dir["third.json"]).GetProperty("config").GetProperty("optimizer").GetString());
    }

    [Theory]
    [InlineData("kl-clip")]
    [InlineData("quadratic")]
    public void KfacTrainsAndAResumedRunFollowsTheUninterruptedTrajectory(string rule)
    {
        string[] common = ["--epochs", "3", "--optimizer", "kfac", "--kfac-update", rule, "--kfac-damping", "0.1", "--kfac-inverse-every", "5",
            "--kfac-damping-adapt", rule == "quadratic" ? "lm" : "fixed", "--seed", "3"];
        AssertOk(Train([.. common, "--report", _dir["full.json"]]));
        AssertOk(Train([.. common, "--max-steps", "8", "--checkpoint", _dir["ck"], "--report", _dir["first.json"]]));
        AssertOk(Train([.. common, "--checkpoint", _dir["ck"], "--resume", "--report", _dir["second.json"]]));
        var fullReport = TrainData.Report(_dir["full.json"]);
        var full = TrainData.StepLosses(fullReport);
        var first = TrainData.StepLosses(TrainData.Report(_dir["first.json"]));
        Assert.Equal(36, full.Length);
        Assert.Equal(full, first.Concat(TrainData.StepLosses(TrainData.Report(_dir["second.json"]))));
        Assert.Equal("kfac", fullReport.GetProperty("config").GetProperty("optimizer").GetString());
        Assert.Equal(rule, fullReport.GetProperty("config").GetProperty("kfac_update").GetString());
        // It learns: the last epoch's losses are below the first's.
        Assert.True(full.TakeLast(12).Average() < full.Take(12).Average(), string.Join(", ", full));
    }

    [Fact]
    public void KfacOnTheEmbeddedDefaultPrintsItsDampingAndTimes()
    {
        var r = AssertOk(Run("train", "--optimizer", "kfac", "--max-steps", "30", "--report", _dir["r.json"]));   // the documented defaults: lr 0.003, λ 0.01
        Assert.Contains("kfac lr 0.003", r.Out);
        Assert.Contains("kfac: damping 0.01; K-FAC's own time: statistics", r.Out);
        // auto: tools/test.sh installs OpenBLAS; float32 where the damped factor is provably well conditioned
        Assert.Contains("kfac: inverses by cholesky (OpenBLAS libopenblas.so.0, float32 where (tr F + s)/s ≤ 1e4, else float64, ", r.Out);
        Assert.Contains("kfac: the last inverse refresh inverted 6 of 6 damped factor matrices in float32", r.Out);   // λ 0.01 keeps all six well conditioned
        var metrics = TrainData.Report(_dir["r.json"]).GetProperty("metrics");
        Assert.True(metrics.GetProperty("test_accuracy").GetDouble() > 0.728, metrics.ToString());
    }

    [Fact]
    public void KfacWithAStatisticsFractionTrainsTheEmbeddedDefault()
    {
        // Statistics on the first quarter of each batch: the sampled pass runs over a forward clone of those examples.
        AssertOk(Run("train", "--optimizer", "kfac", "--kfac-stats-fraction", "0.25", "--max-steps", "30", "--report", _dir["f.json"]));
        var report = TrainData.Report(_dir["f.json"]);
        Assert.Equal(0.25, report.GetProperty("config").GetProperty("kfac_stats_fraction").GetDouble());
        var losses = TrainData.StepLosses(report);
        Assert.Equal(30, losses.Length);
        Assert.All(losses, l => Assert.True(double.IsFinite(l)));
        // The statistics differ from the whole batch's, so the trajectory does (after the first update).
        AssertOk(Run("train", "--optimizer", "kfac", "--max-steps", "30", "--report", _dir["whole.json"]));
        Assert.NotEqual(TrainData.StepLosses(TrainData.Report(_dir["whole.json"])), losses);
        var metrics = report.GetProperty("metrics");
        Assert.True(metrics.GetProperty("test_accuracy").GetDouble() > 0.72, metrics.ToString());
    }

    [Fact]
    public void TheQuadraticRuleWithAFractionForItsFisherProductsTrainsTheEmbeddedDefault()
    {
        // The quadratic model's curvature from the first quarter of each batch (16 of 64 examples):
        // α and μ, and so the trajectory, differ from the whole batch's, and it fine-tunes as well.
        string[] common = ["train", "--optimizer", "kfac", "--kfac-update", "quadratic", "--kfac-damping", "0.1", "--kfac-damping-adapt", "lm", "--batch-size", "64", "--max-steps", "30"];
        var r = AssertOk(Run([.. common, "--kfac-quadratic-fraction", "0.25", "--report", _dir["q.json"]]));
        Assert.Contains("kfac: Fisher products of the quadratic model on the first 16 of 64 examples of each batch", r.Out);
        AssertOk(Run([.. common, "--report", _dir["whole.json"]]));
        var report = TrainData.Report(_dir["q.json"]);
        var wholeReport = TrainData.Report(_dir["whole.json"]);
        Assert.Equal(0.25, report.GetProperty("config").GetProperty("kfac_quadratic_fraction").GetDouble());
        var losses = TrainData.StepLosses(report);
        var whole = TrainData.StepLosses(wholeReport);
        Assert.Equal(30, losses.Length);
        Assert.Equal(whole[0], losses[0]);
        Assert.NotEqual(whole, losses);
        Assert.All(losses, l => Assert.True(double.IsFinite(l)));
        // Better than the start (72.8%) after 30 updates (75.1% measured; the whole batch's products: 78.6%).
        var metrics = report.GetProperty("metrics");
        Assert.True(metrics.GetProperty("test_accuracy").GetDouble() > 0.74, metrics.ToString());
    }

    [Fact]
    public void KfacInverseChoosesTheRouteAndBothTrainAlike()
    {
        var losses = new Dictionary<string, double[]>();
        foreach (var (flag, route) in new[] { ("ort", "kfac: inverses by onnxruntime (com.microsoft.Inverse, LU, float32)"), ("cholesky", "kfac: inverses by cholesky (OpenBLAS") })
        {
            var r = AssertOk(Run("train", "--optimizer", "kfac", "--max-steps", "8", "--kfac-inverse-every", "2", "--threads", "1",
                "--kfac-inverse", flag, "--report", _dir[$"{flag}.json"]));
            Assert.Contains(route, r.Out);
            var report = TrainData.Report(_dir[$"{flag}.json"]);
            Assert.Equal(flag, report.GetProperty("config").GetProperty("kfac_inverse").GetString());
            losses[flag] = TrainData.StepLosses(report);
        }
        Assert.Equal(8, losses["ort"].Length);
        for (int i = 0; i < 8; i++) Assert.True(Math.Abs(losses["ort"][i] - losses["cholesky"][i]) < 1e-3 * Math.Abs(losses["ort"][i]) + 1e-5, $"step {i + 1}: {losses["ort"][i]} vs {losses["cholesky"][i]}");
    }

    [Fact]
    public void KfacInversePrecisionPrintsTheArithmeticAndBothTrainAlike()
    {
        var losses = new Dictionary<string, double[]>();
        foreach (string precision in new[] { "float32", "float64" })
        {
            var r = AssertOk(Run("train", "--optimizer", "kfac", "--max-steps", "8", "--kfac-inverse-every", "2", "--threads", "1",
                "--kfac-inverse-precision", precision, "--report", _dir[$"{precision}.json"]));
            Assert.Contains($"kfac: inverses by cholesky (OpenBLAS libopenblas.so.0, {precision}, 1 thread)", r.Out);
            // The embedded default's MLP has 3 layers: 6 damped factors, all float32 or all float64 as forced.
            Assert.Contains($"kfac: the last inverse refresh inverted {(precision == "float32" ? 6 : 0)} of 6 damped factor matrices in float32, the rest in float64", r.Out);
            var report = TrainData.Report(_dir[$"{precision}.json"]);
            Assert.Equal(precision, report.GetProperty("config").GetProperty("kfac_inverse_precision").GetString());
            losses[precision] = TrainData.StepLosses(report);
        }
        Assert.Equal(8, losses["float64"].Length);
        for (int i = 0; i < 8; i++)
            Assert.True(Math.Abs(losses["float64"][i] - losses["float32"][i]) < 1e-3 * Math.Abs(losses["float64"][i]) + 1e-5, $"step {i + 1}: {losses["float64"][i]} vs {losses["float32"][i]}");
    }

    [Fact]
    public void KfacPreconditionsPerExampleWhenAskedAndFollowsTheDenseRun()
    {
        string[] common = ["--optimizer", "kfac", "--max-steps", "6", "--weight-decay", "0", "--kfac-inverse-every", "3", "--seed", "2"];
        var perExample = AssertOk(Run(["train", .. common, "--kfac-precondition", "per-example", "--report", _dir["pe.json"]]));
        var dense = AssertOk(Run(["train", .. common, "--kfac-precondition", "dense", "--report", _dir["dense.json"]]));
        Assert.Contains("per-example preconditioning in 6 of 6 updates", perExample.Out);
        Assert.DoesNotContain("per-example preconditioning", dense.Out);
        var a = TrainData.StepLosses(TrainData.Report(_dir["pe.json"]));
        var b = TrainData.StepLosses(TrainData.Report(_dir["dense.json"]));
        Assert.Equal(6, a.Length);
        for (int k = 0; k < a.Length; k++) Assert.True(Math.Abs(a[k] - b[k]) <= 1e-4 * Math.Abs(b[k]), $"step {k + 1}: per-example {a[k]}, dense {b[k]}");
        // With weight decay (the default η = 1e-5) the gradient is not ĜᵀĀ: dense everywhere.
        var decayed = AssertOk(Run(["train", "--optimizer", "kfac", "--max-steps", "2", "--kfac-precondition", "per-example"]));
        Assert.DoesNotContain("per-example preconditioning", decayed.Out);
    }

    [Fact]
    public void AdamIsTorchAdamWithCoupledWeightDecayNotAdamW()
    {
        AssertOk(Train("--epochs", "1", "--optimizer", "adam", "--weight-decay", "0.1", "--report", _dir["adam.json"]));
        AssertOk(Train("--epochs", "1", "--optimizer", "adamw", "--weight-decay", "0.1", "--report", _dir["adamw.json"]));
        var adam = TrainData.Report(_dir["adam.json"]);
        Assert.Equal("adam", adam.GetProperty("config").GetProperty("optimizer").GetString());
        Assert.NotEqual(TrainData.StepLosses(adam), TrainData.StepLosses(TrainData.Report(_dir["adamw.json"])));
    }

    [Fact]
    public void APlotNamedSvgIsAnSvg()
    {
        AssertOk(Train("--epochs", "1", "--plot", _dir["loss.svg"]));
        string svg = File.ReadAllText(_dir["loss.svg"]);
        Assert.StartsWith("<?xml", svg);
        Assert.Contains("<svg", svg);
    }

    [Fact]
    public void AFailedGateExitsWith3NamingTheGateAndTheValueAndStillWritesTheReport()
    {
        var r = Train("--epochs", "1", "--fail-if", "val_accuracy>=0", "--fail-if", "train_loss>1000", "--report", _dir["r.json"], "--plot", _dir["p.png"]);
        Assert.True(r.Code == 3, r.ToString());
        var line = Assert.Single(r.ErrLines);
        Assert.StartsWith("gate failed: --fail-if \"val_accuracy>=0\": val_accuracy = ", line);
        Assert.Contains("gate passed: --fail-if \"train_loss>1000\"", r.Out);
        var report = TrainData.Report(_dir["r.json"]);
        Assert.False(report.GetProperty("gates_passed").GetBoolean());
        var gates = report.GetProperty("gates").EnumerateArray().ToArray();
        Assert.False(gates[0].GetProperty("passed").GetBoolean());
        Assert.True(gates[1].GetProperty("passed").GetBoolean());
        Assert.True(File.Exists(_dir["p.png"]));
    }

    [Fact]
    public void ReportHoldsPerStepLossesEpochsValidationsTimingAndFinalMetrics()
    {
        AssertOk(Train("--epochs", "2", "--validate-every", "5", "--report", _dir["r.json"]));
        var r = TrainData.Report(_dir["r.json"]);
        Assert.Equal(24, r.GetProperty("steps").GetInt32());
        Assert.Equal(2, r.GetProperty("epoch_metrics").GetArrayLength());
        var validations = r.GetProperty("validations").EnumerateArray().ToArray();
        Assert.Equal([5L, 10L, 15L, 20L], validations.Select(v => v.GetProperty("step").GetInt64()));
        // Training seconds at each validation: increasing, and without the validation passes within the run's train_seconds.
        var seconds = validations.Select(v => v.GetProperty("train_seconds").GetDouble()).ToArray();
        Assert.True(seconds[0] > 0 && seconds.Zip(seconds.Skip(1)).All(p => p.First < p.Second), string.Join(", ", seconds));
        Assert.True(seconds[^1] < r.GetProperty("train_seconds").GetDouble());
        Assert.True(r.GetProperty("steps_per_second").GetDouble() > 0);
        Assert.True(r.GetProperty("wall_seconds").GetDouble() > 0);
        Assert.Equal("completed", r.GetProperty("stop_reason").GetString());
        var m = r.GetProperty("metrics");
        foreach (var key in new[] { "train_loss", "val_loss", "val_accuracy", "best_val_loss", "steps_per_second", "examples_per_second" })
            Assert.Equal(JsonValueKind.Number, m.GetProperty(key).ValueKind);
        Assert.Equal(JsonValueKind.Null, m.GetProperty("test_accuracy").ValueKind);
        // 96 examples per epoch, 2 epochs: the throughput counts examples, not batches.
        Assert.Equal(192, r.GetProperty("examples_per_second").GetDouble() * r.GetProperty("train_seconds").GetDouble(), 3);
    }

    [Fact]
    public void WithoutATerminalProgressIsPlainLogLines()
    {
        var r = AssertOk(Run("train", _model, "--train", _train, "--val-split", "0.25", "--batch-size", "8", "--epochs", "2", "--log-every", "3"));
        var lines = r.Out.Split('\n');
        Assert.Contains(lines, l => l.StartsWith("step 3/18  epoch 1/2  loss ", StringComparison.Ordinal) && l.Contains(" ex/s  eta ", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("epoch 1/2 done: mean train loss ", StringComparison.Ordinal) && l.Contains("val accuracy", StringComparison.Ordinal));
        Assert.DoesNotContain('\u001b', r.Out);
    }

    [Fact]
    public void OnATerminalAProgressBarRuns()
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = CliApp.Run(["train", _model, "--train", _train, "--batch-size", "8", "--epochs", "1"], o, e, isTerminal: true);
        Assert.True(code == 0, o + "\n" + e);
        Assert.Contains("100%", o.ToString());
        Assert.Contains("done: 12 updates", o.ToString());
    }

    [Fact]
    public void ExportWritesTheOriginalGraphWithTrainedWeightsAndEvalMeasuresIt()
    {
        AssertOk(Train("--epochs", "2", "--export", _dir["tuned.onnx"], "--checkpoint", _dir["ck"], "--report", _dir["r.json"]));
        var original = OnnxModelIO.Load(_model);
        var tuned = OnnxModelIO.Load(_dir["tuned.onnx"]);
        Assert.Equal(original.Graph.Node.Select(n => n.ToString()), tuned.Graph.Node.Select(n => n.ToString()));
        Assert.NotEqual(original.Graph.Initializer[0].ToString(), tuned.Graph.Initializer[0].ToString());

        // export from the checkpoint gives the same file as --export
        var ex = AssertOk(Run("export", "--checkpoint", _dir["ck"], "-o", _dir["again.onnx"]));
        Assert.Contains(" of " + _dir["ck"], ex.Out);
        Assert.Equal(File.ReadAllBytes(_dir["tuned.onnx"]), File.ReadAllBytes(_dir["again.onnx"]));

        var val = TrainData.Report(_dir["r.json"]).GetProperty("metrics");
        AssertOk(Run("eval", _dir["tuned.onnx"], "--data", _val, "--report", _dir["e.json"]));
        var m = TrainData.Report(_dir["e.json"]).GetProperty("metrics");
        Assert.Equal(val.GetProperty("val_loss").GetDouble(), m.GetProperty("loss").GetDouble(), 5);
        Assert.Equal(val.GetProperty("val_accuracy").GetDouble(), m.GetProperty("accuracy").GetDouble(), 9);
    }

    [Fact]
    public void EvalWithNoArgumentsMeasuresTheEmbeddedDefaultAndGatesIt()
    {
        var r = AssertOk(Run("eval", "--fail-if", "accuracy<0.7"));
        Assert.Contains("accuracy 72.80%", r.Out);
        Assert.Contains("gate passed", r.Out);
        var failed = Run("eval", "--fail-if", "accuracy<75%");
        Assert.Equal(3, failed.Code);
        Assert.Equal("gate failed: --fail-if \"accuracy<75%\": accuracy = 0.728", Assert.Single(failed.ErrLines));
    }

    [Fact]
    public void FrozenGroupsAndFrozenGlobsKeepTheirWeights()
    {
        AssertOk(Train("--epochs", "1", "--group", "fc1.*:frozen", "--export", _dir["g.onnx"]));
        AssertOk(Train("--epochs", "1", "--frozen", "fc2.bias", "--export", _dir["f.onnx"]));
        static Dictionary<string, float[]> Weights(string path) =>
            OnnxModelIO.Load(path).Graph.Initializer.ToDictionary(t => t.Name, t => TensorData.ToFloats(t).ToArray());
        var original = Weights(_model);
        var g = Weights(_dir["g.onnx"]);
        var f = Weights(_dir["f.onnx"]);
        Assert.Equal(original["fc1.weight"], g["fc1.weight"]);
        Assert.Equal(original["fc1.bias"], g["fc1.bias"]);
        Assert.NotEqual(original["fc2.weight"], g["fc2.weight"]);
        Assert.Equal(original["fc2.bias"], f["fc2.bias"]);
        Assert.NotEqual(original["fc2.weight"], f["fc2.weight"]);
    }

    [Fact]
    public void NpyNpzAndTensorProtoDataTrainLikeCsv()
    {
        var (x, y) = TrainData.Make(48, 4);
        File.WriteAllBytes(_dir["x.npy"], TrainData.Npy(x, 48, 4));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(y, 48));
        TrainData.Npz(_dir["d.npz"], ("features", TrainData.Npy(x, 48, 4)), ("labels", TrainData.Npy(y, 48)));
        Models.SaveTensor(Models.Floats("x", [48, 4], x), _dir["x.pb"]);
        Models.SaveTensor(Models.Int64s("y", [48], y), _dir["y.pb"]);
        TrainData.Csv(_dir["d.csv"], x, y);
        string[] common = ["--batch-size", "8", "--epochs", "1", "--threads", "1", "--quiet"];
        AssertOk(Run(["train", _model, "--train", _dir["d.csv"], "--report", _dir["csv.json"], .. common]));
        AssertOk(Run(["train", _model, "--train", _dir["x.npy"], "--train-labels", _dir["y.npy"], "--report", _dir["npy.json"], .. common]));
        AssertOk(Run(["train", _model, "--train", _dir["d.npz"], "--npz-keys", "features,labels", "--report", _dir["npz.json"], .. common]));
        AssertOk(Run(["train", _model, "--train", _dir["x.pb"], "--train-labels", _dir["y.pb"], "--report", _dir["pb.json"], .. common]));
        var csv = TrainData.StepLosses(TrainData.Report(_dir["csv.json"]));
        Assert.Equal(csv, TrainData.StepLosses(TrainData.Report(_dir["npy.json"])));
        Assert.Equal(csv, TrainData.StepLosses(TrainData.Report(_dir["npz.json"])));
        Assert.Equal(csv, TrainData.StepLosses(TrainData.Report(_dir["pb.json"])));
    }

    [Fact]
    public void AutoNormalizationAndSchedulesAreRecorded()
    {
        AssertOk(Train("--epochs", "2", "--normalize", "auto", "--schedule", "cosine", "--warmup", "3", "--clip-grad-norm", "1", "--accumulate", "2", "--report", _dir["r.json"]));
        var r = TrainData.Report(_dir["r.json"]);
        var n = r.GetProperty("normalization");
        Assert.Equal(4, n.GetProperty("mean").GetArrayLength()); // 1-D features: one per feature
        Assert.Equal(12, r.GetProperty("steps").GetInt32());    // 12 batches per epoch, 2 per update
        Assert.Equal("cosine", r.GetProperty("config").GetProperty("schedule").GetString());
    }

    [Fact]
    public void RegressionWithMseOnANamedCsvTargetColumn()
    {
        string model = Models.Save(Models.Linear2(classes: 1), _dir["reg.onnx"]);
        var (x, _) = TrainData.Make(64, 8);
        var csv = new System.Text.StringBuilder("f0,f1,target,f2,f3\n");
        for (int i = 0; i < 64; i++)
        {
            float t = 0.5f * x[i * 4] - x[i * 4 + 3];
            csv.AppendLine(string.Join(",", new[] { x[i * 4], x[i * 4 + 1], t, x[i * 4 + 2], x[i * 4 + 3] }.Select(v => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture))));
        }
        File.WriteAllText(_dir["reg.csv"], csv.ToString());
        var r = AssertOk(Run("train", model, "--train", _dir["reg.csv"], "--label-column", "target", "--loss", "mse", "--val-split", "0.25",
            "--epochs", "20", "--batch-size", "8", "--lr", "0.01", "--quiet", "--report", _dir["r.json"], "--fail-if", "val_loss>0.1"));
        var report = TrainData.Report(_dir["r.json"]);
        var losses = TrainData.StepLosses(report);
        Assert.True(losses[^1] < losses[0] / 5, $"{losses[0]} -> {losses[^1]}");
        Assert.Equal(JsonValueKind.Null, report.GetProperty("metrics").GetProperty("val_accuracy").ValueKind);
        AssertUserError(Run("train", model, "--train", _dir["reg.csv"], "--label-column", "target", "--loss", "mse", "--fail-if", "val_accuracy<1"),
            "--fail-if", "not measured");
    }

    [Fact]
    public void PatienceStopsEarlyWhenValidationStopsImproving()
    {
        // Validation labels unrelated to the features: the loss there soon stops improving.
        var (x, y) = TrainData.Make(40, 2);
        string noise = TrainData.Csv(_dir["noise.csv"], x, y.Select((_, i) => (long)(i * 7 % 3)).ToArray());
        AssertOk(Run("train", _model, "--train", _train, "--val", noise, "--batch-size", "8", "--epochs", "20", "--lr", "0.05",
            "--validate-every", "2", "--patience", "2", "--quiet", "--report", _dir["r.json"]));
        var r = TrainData.Report(_dir["r.json"]);
        Assert.Equal("early stopping", r.GetProperty("stop_reason").GetString());
        Assert.True(r.GetProperty("steps").GetInt32() < 240);
    }

    [Fact]
    public void DynamicInputDimensionsNeedAnInputShape()
    {
        var m = Models.Linear2();
        var dims = m.Graph.Input[0].Type.TensorType.Shape.Dim;
        dims[1].ClearValue();
        dims[1].DimParam = "F";
        string model = Models.Save(m, _dir["dynamic.onnx"]);
        AssertUserError(Run("train", model, "--train", _train), "input 'x'", "--input-shape x=");
        AssertOk(Run("train", model, "--train", _train, "--input-shape", "x=4", "--epochs", "1", "--quiet"));
    }
}
