using System.Globalization;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Toolkit.Data;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>
/// What users of training tools expect from train: models exported with their preprocessing,
/// the popular schedules end to end, classifier metrics in the report, the per-update CSV log.
/// </summary>
public sealed class TrainUserToolsTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _model;
    private readonly string _train;
    private readonly string _val;

    public TrainUserToolsTests()
    {
        _model = Models.Save(Models.Linear2(), _dir["linear2.onnx"]);
        _train = TrainData.Csv(_dir["train.csv"], 96, 1);
        _val = TrainData.Csv(_dir["val.csv"], 40, 2);
    }

    public void Dispose() => _dir.Dispose();

    private CliResult Train(params string[] extra) =>
        Run(["train", _model, "--train", _train, "--batch-size", "8", "--threads", "1", "--quiet", .. extra]);

    private float[] Predict(string model, string npy)
    {
        string output = _dir[$"out-{Guid.NewGuid():N}.npy"];
        AssertOk(Run("predict", model, "--data", npy, "-o", output, "--threads", "1"));
        return Npy.ReadTensor(output).AsFloats().ToArray();
    }

    [Theory]
    [InlineData("fixed")]
    [InlineData("auto")]
    public void AModelExportedWithPreprocessingTakesRawInputs(string mode)
    {
        // Raw features in [-10, 10]: --scale 10 maps them back to the [-1, 1] the teacher used.
        var (x, y) = TrainData.Make(96, 1);
        var raw = x.Select(v => v * 10).ToArray();
        string trainRaw = TrainData.Csv(_dir["raw.csv"], raw, y);
        string[] norm = mode == "fixed" ? ["--scale", "10", "--normalize", "0.1,2"] : ["--scale", "10", "--normalize", "auto"];
        AssertOk(Run(["train", _model, "--train", trainRaw, "--epochs", "2", "--batch-size", "8", "--threads", "1", "--quiet", .. norm,
            "--export", _dir["prep.onnx"], "--export-with-preprocessing", "--checkpoint", _dir["ck"], "--report", _dir["r.json"]]));
        AssertOk(Run("export", "--checkpoint", _dir["ck"], "-o", _dir["plain.onnx"]));
        var n = TrainData.Report(_dir["r.json"]).GetProperty("normalization");
        float scale = n.GetProperty("scale").GetSingle();
        float[] mean = n.GetProperty("mean").EnumerateArray().Select(v => v.GetSingle()).ToArray();
        float[] std = n.GetProperty("std").EnumerateArray().Select(v => v.GetSingle()).ToArray();
        Assert.Equal(mode == "fixed" ? 1 : 4, mean.Length);
        // The normalized features, computed here from the report's statistics.
        var normalized = raw.Select((v, k) => (v * scale - mean[k % mean.Length]) / std[k % std.Length]).ToArray();
        File.WriteAllBytes(_dir["raw.npy"], TrainData.Npy(raw, 96, 4));
        File.WriteAllBytes(_dir["norm.npy"], TrainData.Npy(normalized, 96, 4));
        var fromRaw = Predict(_dir["prep.onnx"], _dir["raw.npy"]);
        var fromNormalized = Predict(_dir["plain.onnx"], _dir["norm.npy"]);
        Assert.Equal(96 * 3, fromRaw.Length);
        for (int k = 0; k < fromRaw.Length; k++) Assert.True(Math.Abs(fromRaw[k] - fromNormalized[k]) <= 1e-5f * (1 + Math.Abs(fromNormalized[k])), $"output {k}: {fromRaw[k]} vs {fromNormalized[k]}");
        // The plain model on raw inputs is something else: the preprocessing really is in the graph.
        var plainOnRaw = Predict(_dir["plain.onnx"], _dir["raw.npy"]);
        Assert.True(plainOnRaw.Zip(fromRaw).Max(t => Math.Abs(t.First - t.Second)) > 0.1);
        var graph = Graph.Model.OnnxModelIO.Load(_dir["prep.onnx"]).Graph;
        Assert.Equal(["Mul", "Add"], graph.Node.Take(2).Select(node => node.OpType));
        Assert.Equal("x", graph.Input[0].Name);   // the input keeps its name

        if (mode == "fixed")
        {
            // export --with-preprocessing bakes in the checkpoint's settings: the same model.
            AssertOk(Run("export", "--checkpoint", _dir["ck"], "-o", _dir["prep2.onnx"], "--with-preprocessing"));
            Assert.Equal(fromRaw, Predict(_dir["prep2.onnx"], _dir["raw.npy"]));
        }
        else AssertUserError(Run("export", "--checkpoint", _dir["ck"], "-o", _dir["prep2.onnx"], "--with-preprocessing"), "--normalize auto", "train --export-with-preprocessing");
    }

    [Fact]
    public void ExportWithPreprocessingNeedsAnExport() =>
        AssertUserError(Train("--export-with-preprocessing"), "--export-with-preprocessing", "needs --export");

    [Fact]
    public void TheStepLogHasARowPerUpdateAndValidationWithLrAndGradNorm()
    {
        AssertOk(Train("--val", _val, "--epochs", "2", "--schedule", "onecycle", "--lr", "0.05", "--report", _dir["r.json"]));
        var lines = File.ReadAllLines(_dir["r.steps.csv"]);
        Assert.Equal("kind,step,epoch,loss,accuracy,lr,grad_norm,wall_seconds", lines[0]);
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToArray();
        var train = rows.Where(r => r[0] == "train").ToArray();
        Assert.Equal(24, train.Length);
        Assert.Equal(Enumerable.Range(1, 24).Select(i => i.ToString(CultureInfo.InvariantCulture)), train.Select(r => r[1]));
        var report = TrainData.Report(_dir["r.json"]);
        Assert.Equal(TrainData.StepLosses(report), train.Select(r => double.Parse(r[3], CultureInfo.InvariantCulture)));
        var schedule = new Toolkit.Optim.OneCycleSchedule(24);
        for (int u = 1; u <= 24; u++) Assert.Equal(0.05 * schedule.Factor(u), double.Parse(train[u - 1][5], CultureInfo.InvariantCulture), 12);
        Assert.All(train, r => Assert.True(double.Parse(r[6], CultureInfo.InvariantCulture) > 0));
        var validations = rows.Where(r => r[0] == "validation").ToArray();
        Assert.Equal(["12", "24"], validations.Select(r => r[1]));
        Assert.Equal(report.GetProperty("validations")[1].GetProperty("loss").GetDouble(), double.Parse(validations[1][3], CultureInfo.InvariantCulture));
        Assert.Equal(_dir["r.steps.csv"], report.GetProperty("config").GetProperty("log_csv").GetString());
    }

    [Fact]
    public void AResumedRunAppendsToItsStepLog()
    {
        AssertOk(Train("--epochs", "2", "--max-steps", "5", "--checkpoint", _dir["ck"], "--log-csv", _dir["log.csv"]));
        AssertOk(Train("--epochs", "2", "--checkpoint", _dir["ck"], "--resume", "--log-csv", _dir["log.csv"]));
        var steps = File.ReadAllLines(_dir["log.csv"]).Skip(1).Where(l => l.StartsWith("train,", StringComparison.Ordinal)).Select(l => l.Split(',')[1]).ToArray();
        Assert.Equal(Enumerable.Range(1, 24).Select(i => i.ToString(CultureInfo.InvariantCulture)), steps);
        Assert.Single(File.ReadAllLines(_dir["log.csv"]), l => l.StartsWith("kind,", StringComparison.Ordinal));
    }

    [Fact]
    public void PlateauLowersTheRateAndItsStateSurvivesResume()
    {
        string[] plateau = ["--val", _val, "--epochs", "8", "--optimizer", "sgd", "--lr", "0.5", "--schedule", "plateau", "--plateau-patience", "0",
            "--plateau-factor", "0.5", "--plateau-threshold", "0.05", "--validate-every", "3", "--no-keep-best"];
        AssertOk(Train([.. plateau, "--log-csv", _dir["full.csv"], "--report", _dir["full.json"]]));
        var full = File.ReadAllLines(_dir["full.csv"]).Where(l => l.StartsWith("train,", StringComparison.Ordinal)).Select(l => l.Split(',')).ToArray();
        var rates = full.Select(r => double.Parse(r[5], CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(0.5, rates[0]);
        Assert.True(rates[^1] < 0.5, "the validation loss plateaued and the rate came down: " + string.Join(" ", rates.Distinct()));
        Assert.Contains(TrainData.Report(_dir["full.json"]).GetProperty("messages").EnumerateArray(), m => m.GetString()!.Contains("has not improved", StringComparison.Ordinal));
        // Stopped half-way and resumed: the same rates and losses, update for update.
        AssertOk(Train([.. plateau, "--max-steps", "50", "--checkpoint", _dir["ck"]]));
        AssertOk(Train([.. plateau, "--checkpoint", _dir["ck"], "--resume", "--log-csv", _dir["resumed.csv"]]));
        var resumed = File.ReadAllLines(_dir["resumed.csv"]).Where(l => l.StartsWith("train,", StringComparison.Ordinal)).Select(l => l.Split(',')).ToArray();
        Assert.Equal(full.Skip(50).Select(r => (r[1], r[3], r[5])), resumed.Select(r => (r[1], r[3], r[5])));
    }

    [Fact]
    public void ScheduleOptionsAreCheckedAndNamed()
    {
        AssertUserError(Train("--schedule", "plateau"), "--schedule", "needs validation data");
        AssertUserError(Train("--schedule", "cosine", "--pct-start", "0.2"), "--pct-start", "applies to --schedule onecycle");
        AssertUserError(Train("--schedule", "onecycle", "--warmup", "3"), "--warmup", "onecycle");
        AssertUserError(Train("--schedule", "onecycle", "--pct-start", "1.5"), "--pct-start", "(0, 1)");
        AssertUserError(Train("--val", _val, "--schedule", "plateau", "--min-lr", "1"), "--min-lr");
        AssertUserError(Train("--schedule", "linear", "--warmup", "100"), "--warmup");
        AssertUserError(Train("--schedule", "exponential"), "--schedule", "linear, onecycle or plateau");
    }

    [Fact]
    public void LinearWithWarmupStartsAtZeroAndEndsNearZero()
    {
        AssertOk(Train("--epochs", "1", "--schedule", "linear", "--warmup", "4", "--lr", "0.1", "--log-csv", _dir["l.csv"]));
        var rates = File.ReadAllLines(_dir["l.csv"]).Skip(1).Select(l => double.Parse(l.Split(',')[5], CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(12, rates.Length);
        Assert.Equal([0, 0.025, 0.05, 0.075, 0.1, 0.0875], rates[..6].Select(r => Math.Round(r, 12)));
        Assert.Equal(0.1 / 8, rates[^1], 12);
    }

    [Fact]
    public void TheReportAndSummaryHoldTheClassifierMetrics()
    {
        var r = Run("train", _model, "--train", _train, "--val", _val, "--test", _val, "--epochs", "2", "--batch-size", "8", "--threads", "1", "--top-k", "2",
            "--report", _dir["r.json"], "--fail-if", "val_macro_f1<0", "--fail-if", "test_top_k_accuracy<0");
        AssertOk(r);
        Assert.Contains("validation confusion matrix (rows: true class, columns: predicted)", r.Out);
        Assert.Contains("top-2 accuracy", r.Out);
        var report = TrainData.Report(_dir["r.json"]);
        var metrics = report.GetProperty("metrics");
        foreach (var key in new[] { "val_macro_f1", "val_top_k_accuracy", "test_macro_f1", "test_top_k_accuracy" })
            Assert.True(metrics.GetProperty(key).GetDouble() > 0, key);
        var matrix = report.GetProperty("confusion_matrices").GetProperty("test");
        Assert.Equal(40, matrix.EnumerateArray().Sum(row => row.EnumerateArray().Sum(c => c.GetInt64())));
        Assert.Equal(metrics.GetProperty("test_accuracy").GetDouble(),
            Enumerable.Range(0, 3).Sum(c => matrix[c][c].GetInt64()) / 40.0, 9);
    }
}
