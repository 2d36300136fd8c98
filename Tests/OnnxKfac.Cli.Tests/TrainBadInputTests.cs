using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Toolkit.Checkpoints;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>Bad input to train, eval and export: exit code 2 and one line "error: ..." that names the file, flag or key.</summary>
public sealed class TrainBadInputTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _model;
    private readonly string _train;

    public TrainBadInputTests()
    {
        _model = Models.Save(Models.Linear2(), _dir["linear2.onnx"]);
        _train = TrainData.Csv(_dir["train.csv"], 32, 1);
    }

    public void Dispose() => _dir.Dispose();

    private CliResult Train(params string[] extra) =>
        Run(["train", _model, "--train", _train, "--batch-size", "8", "--epochs", "1", "--quiet", .. extra]);

    [Fact]
    public void DataWhoseShapeDoesNotFitTheModelInput()
    {
        var (x, y) = TrainData.Make(16, 3, features: 5);
        string wide = TrainData.Csv(_dir["wide.csv"], x, y, features: 5);
        AssertUserError(Run("train", _model, "--train", wide), "--train", wide, "[5]", "model input 'x' takes [4]");
        AssertUserError(Run("eval", _model, "--data", wide), "--data", wide, "model input 'x' takes [4]");
        var v = TrainData.Csv(_dir["v.csv"], x, y, features: 5);
        AssertUserError(Train("--val", v), "--val", v, "model input 'x'");
    }

    [Fact]
    public void LabelsOfTheWrongTypeOrOutOfRange()
    {
        var (x, _) = TrainData.Make(8, 3);
        File.WriteAllBytes(_dir["x.npy"], TrainData.Npy(x, 8, 4));
        File.WriteAllBytes(_dir["half.npy"], TrainData.Npy(new float[] { 0.5f, 1, 2, 0, 1, 2, 0, 1 }, 8));
        AssertUserError(Run("train", _model, "--train", _dir["x.npy"], "--train-labels", _dir["half.npy"]), "--train", _dir["half.npy"], "not an integer class index");

        string seven = TrainData.Csv(_dir["seven.csv"], x, [0, 1, 2, 7, 0, 1, 2, 0]);
        AssertUserError(Run("train", _model, "--train", seven), seven, "label 7", "out of range [0, 3)");
        AssertUserError(Run("eval", _model, "--data", seven), seven, "out of range");
    }

    [Fact]
    public void AnEmptyDataSet()
    {
        File.WriteAllText(_dir["empty.csv"], "f0,f1,f2,f3,label\n");
        AssertUserError(Run("train", _model, "--train", _dir["empty.csv"]), _dir["empty.csv"], "empty");
        File.WriteAllBytes(_dir["x0.npy"], TrainData.Npy(Array.Empty<float>(), 0, 4));
        File.WriteAllBytes(_dir["y0.npy"], TrainData.Npy(Array.Empty<long>(), 0));
        AssertUserError(Run("train", _model, "--train", _dir["x0.npy"], "--train-labels", _dir["y0.npy"]), "empty");
    }

    [Fact]
    public void NaNInTheDataIsADataErrorNamingTheFileAndTheExample()
    {
        var (x, y) = TrainData.Make(32, 5);
        x[20 * 4 + 1] = float.NaN;
        File.WriteAllBytes(_dir["nanx.npy"], TrainData.Npy(x, 32, 4));
        File.WriteAllBytes(_dir["nany.npy"], TrainData.Npy(y, 32));
        AssertUserError(Run("train", _model, "--train", _dir["nanx.npy"], "--train-labels", _dir["nany.npy"], "--quiet"),
            "--train", _dir["nanx.npy"], "example 20 holds NaN", "not data");
        AssertUserError(Run("eval", _model, "--data", _dir["nanx.npy"], "--labels", _dir["nany.npy"]), "--data", "example 20 holds NaN");
    }

    [Fact]
    public void ANaNLossStopsWithAClearMessageAndLeavesNoPoisonedCheckpoint()
    {
        // A learning rate no run survives: the weights overflow and the loss turns NaN after an update or two.
        var (x, y) = TrainData.Make(32, 5);
        File.WriteAllBytes(_dir["x.npy"], TrainData.Npy(x, 32, 4));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(y, 32));
        string ck = _dir["ck"];
        var r = Run("train", _model, "--train", _dir["x.npy"], "--train-labels", _dir["y.npy"], "--batch-size", "8", "--epochs", "2", "--quiet",
            "--optimizer", "sgd", "--lr", "1e30", "--checkpoint", ck, "--checkpoint-every", "1", "--report", _dir["r.json"]);
        AssertUserError(r, "non-finite loss", "--skip-nonfinite", "no checkpoint was written after it");
        int before = TrainData.StepLosses(TrainData.Report(_dir["r.json"])).Length;
        Assert.Equal(before > 0, File.Exists(ck)); // one checkpoint per update before the NaN batch
        if (before > 0)
            foreach (var p in Checkpoint.Load(ck).Parameters) Assert.All(p.Value, v => Assert.True(float.IsFinite(v)));
        var report = TrainData.Report(_dir["r.json"]);
        Assert.Equal("error", report.GetProperty("stop_reason").GetString());
        Assert.Contains("non-finite", report.GetProperty("error").GetString());

        var skip = AssertOk(Run("train", _model, "--train", _dir["x.npy"], "--train-labels", _dir["y.npy"], "--batch-size", "8", "--epochs", "2", "--quiet",
            "--optimizer", "sgd", "--lr", "1e30", "--skip-nonfinite", "--checkpoint", ck, "--report", _dir["s.json"]));
        int skipped = TrainData.Report(_dir["s.json"]).GetProperty("skipped_steps").GetInt32();
        Assert.True(skipped > 0, skip.Out);
        Assert.Contains($"{skipped} non-finite batches skipped", skip.Out);
        foreach (var p in Checkpoint.Load(ck).Parameters) Assert.All(p.Value, v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void ACheckpointFromAnotherModel()
    {
        AssertOk(Train("--checkpoint", _dir["ck"]));
        string other = Models.Save(Models.Linear2(classes: 4), _dir["other.onnx"]);
        string data4 = TrainData.Csv(_dir["four.csv"], 16, 1);
        AssertUserError(Run("train", other, "--train", data4, "--checkpoint", _dir["ck"], "--resume"), _dir["ck"], "checkpoint is from another model", "fc2.weight");
        AssertUserError(Run("export", "--checkpoint", _dir["ck"], "--model", other, "-o", _dir["out.onnx"]), _dir["ck"], "from another model", "fc2.weight");
        AssertUserError(Run("export", "--checkpoint", _dir["ck"], "--model", _model, "-o", _model), "refusing to overwrite");
        File.WriteAllText(_dir["junk"], "not a checkpoint");
        AssertUserError(Run("export", "--checkpoint", _dir["junk"], "--model", _model, "-o", _dir["o.onnx"]), _dir["junk"], "not an onnx-kfac checkpoint");
        Assert.False(File.Exists(_dir["out.onnx"]));
    }

    [Fact]
    public void MissingFiles()
    {
        string nope = _dir["nope.csv"];
        AssertUserError(Run("train", _model, "--train", nope), "--train", nope, "no such file");
        AssertUserError(Train("--val", nope), "--val", nope, "no such file");
        AssertUserError(Run("train", _model, "--train", _dir["x.npy"]), "--train", "no such file");
        AssertUserError(Run("train", _dir["nope.onnx"], "--train", _train), _dir["nope.onnx"], "no such file");
        AssertUserError(Run("eval", _model, "--data", nope), "--data", nope, "no such file");
        AssertUserError(Run("export", "--checkpoint", _dir["nope.ck"], "-o", _dir["o.onnx"]), "no such checkpoint");
        AssertUserError(Run("train", "--config", _dir["nope.json"]), "--config", "no such file");
        AssertUserError(Run("train", _model), "--train is required");
        var (x, _) = TrainData.Make(8, 3);
        File.WriteAllBytes(_dir["x.npy"], TrainData.Npy(x, 8, 4));
        AssertUserError(Run("train", _model, "--train", _dir["x.npy"]), "--train", "features only", "--train-labels");
    }

    [Fact]
    public void BadGateExpressions()
    {
        AssertUserError(Train("--fail-if", "val_accuracy=0.8"), "--fail-if", "'val_accuracy=0.8' is not a gate", "< <= > >=");
        AssertUserError(Train("--fail-if", "val_acc<0.8"), "--fail-if", "unknown metric 'val_acc'", "val_accuracy");
        AssertUserError(Train("--fail-if", "val_accuracy<0.8"), "--fail-if", "not measured in this run", "--val-split");
        AssertUserError(Train("--fail-if", "test_loss>1"), "not measured", "--test");
        AssertUserError(Run("eval", _model, "--data", _train, "--loss", "mse", "--fail-if", "accuracy<0.5"), "cross-entropy only");
    }

    [Fact]
    public void AConfigFileWithAnUnknownKeyOrABadValueNamesTheKey()
    {
        string cfg = _dir["run.json"];
        File.WriteAllText(cfg, """{ "epochs": 1, "learning_rate": 0.1 }""");
        AssertUserError(Train("--config", cfg), cfg, "unknown key 'learning_rate'");
        File.WriteAllText(cfg, """{ "lrr": 0.1 }""");
        AssertUserError(Train("--config", cfg), "unknown key 'lrr'", "did you mean 'lr'?");
        File.WriteAllText(cfg, """{ "epochs": "three" }""");
        AssertUserError(Train("--config", cfg), cfg, "key 'epochs'", "expected an integer", "\"three\"");
        File.WriteAllText(cfg, """{ "optimizer": "adam2" }""");
        AssertUserError(Train("--config", cfg), cfg, "key 'optimizer'", "unknown optimizer 'adam2'");
        File.WriteAllText(cfg, """{ "lr": -1 }""");
        AssertUserError(Train("--config", cfg), cfg, "key 'lr'", "≥ 0");
        File.WriteAllText(cfg, """{ "group": ["fc1.*:lr=fast"] }""");
        AssertUserError(Train("--config", cfg), cfg, "key 'group'", "'lr=fast'");
        File.WriteAllText(cfg, """[1, 2]""");
        AssertUserError(Train("--config", cfg), cfg, "expected a JSON object");
        File.WriteAllText(cfg, """{ "epochs": 1,""");
        AssertUserError(Train("--config", cfg), cfg, "not valid JSON");
    }

    [Fact]
    public void BadFlagValuesNameTheFlag()
    {
        AssertUserError(Train("--optimizer", "rmsprop"), "--optimizer", "unknown optimizer 'rmsprop'");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-damping", "-1"), "--kfac-damping", "> 0");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-update", "newton"), "--kfac-update", "kl-clip or quadratic");
        AssertUserError(Train("--kfac-kl-clip", "0.01"), "--kfac-kl-clip", "--optimizer kfac");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-block", "nothing.*:diagonal"), "--kfac-block", "matches no trainable parameter");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-block", "net.*:dense"), "--kfac-block", "unknown block kind 'dense'");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-update", "quadratic", "--lr", "0.1"), "--lr", "quadratic");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-stats-fraction", "0"), "--kfac-stats-fraction", "(0, 1]");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-update", "quadratic", "--kfac-quadratic-fraction", "1.5"), "--kfac-quadratic-fraction", "(0, 1]");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-quadratic-fraction", "0.25"), "--kfac-quadratic-fraction", "--kfac-update quadratic or --kfac-damping-adapt lm");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-fisher", "empirical", "--kfac-fallback", "diagonal"), "--kfac-fallback", "empirical");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-inverse", "svd"), "--kfac-inverse", "unknown value 'svd'", "auto or cholesky or ort");
        AssertUserError(Train("--kfac-inverse", "cholesky"), "--kfac-inverse", "--optimizer kfac");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-inverse-precision", "float16"), "--kfac-inverse-precision", "unknown value 'float16'", "auto or float32 or float64");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-inverse", "ort", "--kfac-inverse-precision", "float32"), "--kfac-inverse-precision", "--kfac-inverse ort");
        AssertUserError(Train("--optimizer", "sgd", "--kfac-inverse-precision", "float32"), "--kfac-inverse-precision", "--optimizer kfac");
        AssertUserError(Train("--optimizer", "kfac", "--kfac-precondition", "sparse"), "--kfac-precondition", "auto or dense or per-example");
        AssertUserError(Train("--optimizer", "sgd", "--kfac-precondition", "dense"), "--kfac-precondition", "--optimizer kfac");
        AssertUserError(Train("--lr", "-0.1"), "--lr", "≥ 0");
        AssertUserError(Run("train", _model, "--train", _train, "--batch-size", "0"), "--batch-size", "at least 1");
        AssertUserError(Train("--momentum", "0.9"), "--momentum", "--optimizer sgd");
        AssertUserError(Train("--schedule", "exponential"), "--schedule", "unknown schedule");
        AssertUserError(Train("--gamma", "0.5"), "--gamma", "--schedule step");
        AssertUserError(Train("--val-split", "1.5"), "--val-split", "between 0 and 1");
        AssertUserError(Train("--normalize", "zscore"), "--normalize", "none, auto or MEAN,STD");
        AssertUserError(Train("--device", "tpu"), "--device", "unknown device 'tpu'");
        AssertUserError(Train("--group", "nothing.*:lr=0.1"), "--group", "nothing.*");
        AssertUserError(Train("--patience", "2"), "--patience", "validation data");
        AssertUserError(Train("--resume"), "--resume", "--checkpoint");
        AssertUserError(Train("--input-shape", "x=4,a"), "--input-shape", "NAME=d1,d2");
        AssertUserError(Train("--loss", "hinge"), "--loss", "unknown loss 'hinge'");
        AssertUserError(Train("--lr", "abc"), "--lr: 'abc' is not a number");
        AssertUserError(Train("--patience", "1.5"), "--patience: '1.5' is not a whole number");
        Assert.DoesNotContain("System.", Train("--lr", "abc").Err);
        AssertUserError(Train("--plot", "loss.jpg"), "--plot", ".png or .svg");
        // Outputs are checked before training: a folder, or a folder that cannot be made (under a file).
        AssertUserError(Train("--checkpoint", Path.GetTempPath()), "--checkpoint", "is a folder");
        string underFile = Path.Combine(_model, "out", "report.json");
        var r = AssertUserError(Train("--report", underFile, "--max-steps", "1"), "--report", underFile, "cannot write there");
        Assert.DoesNotContain("step 1", r.Out);
        // The labels flag suggested for features-only files is the command's own (eval: --labels, train: --train-labels).
        var eval = AssertUserError(Run("eval", TrainData.Default("fashion_mlp.onnx"), "--data", TrainData.Default("test-images-idx3-ubyte.gz")), "give the labels with --labels FILE");
        Assert.DoesNotContain("--data-labels", eval.Err);
        AssertUserError(Run("train", TrainData.Default("fashion_mlp.onnx"), "--train", TrainData.Default("train-images-idx3-ubyte.gz")), "give the labels with --train-labels FILE");
    }

    [Fact]
    public void EvalWithANonFiniteLossFailsAndItsReportHasNoTrainingKeys()
    {
        // The model's constant 'onnx::Mul_7' is NaN: every output, and so the loss, is NaN.
        var model = Models.Linear2();
        var scale = model.Graph.Initializer.First(t => t.Name == "onnx::Mul_7");
        model.Graph.Initializer.Remove(scale);
        model.Graph.Initializer.Add(Graph.Model.TensorData.FromFloats("onnx::Mul_7", [], [float.NaN]));
        string nanModel = Models.Save(model, _dir["nan.onnx"]);
        var (x, y) = TrainData.Make(12, 3);
        File.WriteAllBytes(_dir["x.npy"], TrainData.Npy(x, 12, 4));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(y, 12));
        AssertUserError(Run("eval", nanModel, "--data", _dir["x.npy"], "--labels", _dir["y.npy"], "--report", _dir["nan.json"]), "the loss is NaN");
        var report = TrainData.Report(_dir["nan.json"]);
        Assert.Contains("NaN", report.GetProperty("error").GetString());
        foreach (var key in new[] { "step_losses", "train_seconds", "steps", "stop_reason", "epoch_metrics" })
            Assert.False(report.TryGetProperty(key, out _), $"eval's report has the training key '{key}'");
    }
}
