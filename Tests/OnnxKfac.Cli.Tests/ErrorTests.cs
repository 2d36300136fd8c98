using System.CommandLine;
using Google.Protobuf;
using OnnxKfac.Cli.Tests.Support;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>Every bad input ends in exit code 2 and one line "error: ..." naming what is wrong and where.</summary>
public sealed class ErrorTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _model;
    private readonly string _x;
    private readonly string _labels;

    public ErrorTests()
    {
        _model = Models.Save(Models.Linear2(), _dir["m.onnx"]);
        _x = Models.SaveTensor(Models.Floats("x", [2, 4], Models.Values(8, 1)), _dir["x.pb"]);
        _labels = Models.SaveTensor(Models.Int64s("y", [2], 0, 2), _dir["y.pb"]);
    }

    public void Dispose() => _dir.Dispose();

    private CliResult Grad(params string[] extra) =>
        Run(["grad", _model, "--input", _x, "--target", _labels, "--loss", "cross-entropy", "-o", _dir["out"], .. extra]);

    private CliResult GradWith(string input, string target, string loss, params string[] extra) =>
        Run(["grad", _model, "--input", input, "--target", target, "--loss", loss, "-o", _dir["out"], .. extra]);

    [Fact]
    public void MissingModelFile()
    {
        string missing = _dir["nope.onnx"];
        AssertUserError(Run("inspect", missing), missing, "no such file");
        AssertUserError(Run("prepare", missing, "--loss", "mse", "-o", _dir["t.onnx"]), missing, "no such file");
        AssertUserError(Run("grad", missing, "--input", _x, "--target", _labels, "--loss", "ce", "-o", _dir["out"]), missing, "no such file");
    }

    [Fact]
    public void TruncatedModelFile()
    {
        var bytes = File.ReadAllBytes(_model);
        string path = _dir["truncated.onnx"];
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        AssertUserError(Run("inspect", path), path, "not an ONNX model");
        AssertUserError(Run("prepare", path, "--loss", "mse", "-o", _dir["t.onnx"]), path, "not an ONNX model");
    }

    [Fact]
    public void EmptyFile()
    {
        string path = _dir["empty.onnx"];
        File.WriteAllBytes(path, []);
        AssertUserError(Run("inspect", path), path, "empty file");
    }

    [Fact]
    public void PngFile()
    {
        string path = _dir["image.onnx"];
        byte[] png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89];
        File.WriteAllBytes(path, png);
        AssertUserError(Run("inspect", path), path, "not an ONNX model");
        AssertUserError(Run("grad", path, "--input", _x, "--target", _labels, "--loss", "ce", "-o", _dir["out"]), path, "not an ONNX model");
    }

    [Fact]
    public void RandomBytes()
    {
        var rng = new Random(5);
        for (int k = 0; k < 20; k++)
        {
            var bytes = new byte[rng.Next(1, 2000)];
            rng.NextBytes(bytes);
            string path = _dir[$"random{k}.onnx"];
            File.WriteAllBytes(path, bytes);
            AssertUserError(Run("inspect", path), path);
        }
    }

    [Fact]
    public void OpWithoutGradientRule()
    {
        string det = Models.Save(Models.WithDet(), _dir["det.onnx"]);
        AssertUserError(Run("prepare", det, "--loss", "mse", "-o", _dir["t.onnx"]),
            "node 'the_det' (Det)", "no gradient rule for op 'Det'", "opset 17", "supported ops: ", "MatMul");
        string x = Models.SaveTensor(Models.Floats("x", [2, 3, 3], Models.Values(18, 1)), _dir["x3.pb"]);
        string t = Models.SaveTensor(Models.Floats("t", [2], [1f, 2f]), _dir["t2.pb"]);
        AssertUserError(Run("grad", det, "--input", x, "--target", t, "--loss", "mse", "-o", _dir["out"]), "node 'the_det' (Det)", "opset 17");
        Assert.False(File.Exists(_dir["t.onnx"]));
    }

    [Fact]
    public void EveryOpWithoutGradientRuleInOneError()
    {
        string model = Models.Save(Models.WithDetAndReduceProd(), _dir["det_prod.onnx"]);
        AssertUserError(Run("prepare", model, "--loss", "mse", "-o", _dir["t.onnx"]),
            "2 nodes on the gradient path have no gradient rule (op 'Det', op 'ReduceProd')",
            "node 'the_det' (Det); node 'the_prod' (ReduceProd)", "opset 17", "supported ops: ");
    }

    [Fact]
    public void OutputThatDoesNotExist()
    {
        AssertUserError(Run("prepare", _model, "--loss", "mse", "--output", "missing", "-o", _dir["t.onnx"]), "no output 'missing'", "logits");
        AssertUserError(Grad("--output", "missing"), "no output 'missing'");
    }

    [Fact]
    public void InputNameThatDoesNotExist()
    {
        AssertUserError(GradWith("image=" + _x, _labels, "ce"), "--input image=", "no input 'image'", "inputs are: x");
        AssertUserError(GradWith("fc1.weight=" + _x, _labels, "ce"), "'fc1.weight' is an initializer");
    }

    [Fact]
    public void InputFileProblems()
    {
        AssertUserError(GradWith(_dir["none.pb"], _labels, "ce"), "input", "none.pb", "no such file");
        string garbage = _dir["garbage.pb"];
        File.WriteAllBytes(garbage, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        AssertUserError(GradWith(garbage, _labels, "ce"), garbage, "not an ONNX TensorProto");
        string shape = Models.SaveTensor(Models.Floats("x", [2, 5], Models.Values(10, 1)), _dir["x25.pb"]);
        AssertUserError(GradWith(shape, _labels, "ce"), "input 'x'", shape, "expected float [N,4]", "got float [2,5]");
        string type = Models.SaveTensor(Models.Int64s("x", [2, 4], 1, 2, 3, 4, 5, 6, 7, 8), _dir["xi.pb"]);
        AssertUserError(GradWith(type, _labels, "ce"), "input 'x'", "expected float [N,4]", "got int64 [2,4]");
        var bad = Models.Floats("x", [2, 4], Models.Values(8, 1));
        bad.Dims[1] = 7; // the data no longer fills the shape
        string inconsistent = Models.SaveTensor(bad, _dir["bad.pb"]);
        AssertUserError(GradWith(inconsistent, _labels, "ce"), inconsistent, "needs 56 bytes");
    }

    [Fact]
    public void TargetWithWrongShapeOrType()
    {
        string t23 = Models.SaveTensor(Models.Floats("t", [2, 3], Models.Values(6, 2)), _dir["t23.pb"]);
        string t32 = Models.SaveTensor(Models.Floats("t", [3, 2], Models.Values(6, 2)), _dir["t32.pb"]);
        string t13 = Models.SaveTensor(Models.Floats("t", [1, 3], Models.Values(3, 2)), _dir["t13.pb"]);
        AssertUserError(GradWith(_x, t32, "mse"), "target", t32, "mse expects a float target shaped like output 'logits' [2,3]", "got float [3,2]");
        // Broadcasting would hide this one at run time.
        AssertUserError(GradWith(_x, t13, "mse"), "target", t13, "[2,3]", "got float [1,3]");
        AssertUserError(GradWith(_x, _labels, "mse"), "target", "got int64 [2]");
        AssertUserError(GradWith(_x, t23, "cross-entropy"), "target", t23, "integer class indices", "[2]", "got float [2,3]");
        string wrongBatch = Models.SaveTensor(Models.Int64s("y", [3], 0, 1, 2), _dir["y3.pb"]);
        AssertUserError(GradWith(_x, wrongBatch, "cross-entropy"), "target", wrongBatch, "of shape [2]", "got int64 [3]");
        AssertUserError(GradWith(_x, _dir["missing.pb"], "mse"), "target", "missing.pb", "no such file");
        Assert.False(Directory.Exists(_dir["out"]));
    }

    [Fact]
    public void LabelsOutOfRange()
    {
        string high = Models.SaveTensor(Models.Int64s("y", [2], 0, 3), _dir["high.pb"]);
        AssertUserError(GradWith(_x, high, "cross-entropy"), "target", high, "label 3 at flat index 1 is outside [0, 3)", "3 classes");
        string negative = Models.SaveTensor(Models.Int64s("y", [2], -1, 0), _dir["neg.pb"]);
        AssertUserError(GradWith(_x, negative, "cross-entropy"), "label -1 at flat index 0", "ignore index -100");
        // Equal to ignore_index: fine.
        string ignored = Models.SaveTensor(Models.Int64s("y", [2], -100, 1), _dir["ign.pb"]);
        AssertOk(GradWith(_x, ignored, "cross-entropy"));
    }

    [Fact]
    public void UnknownLossKind()
    {
        AssertUserError(Run("prepare", _model, "--loss", "hinge", "-o", _dir["t.onnx"]), "unknown loss 'hinge'", "cross-entropy, mse, l1, bce-with-logits");
        AssertUserError(Run("inspect", _model, "--loss", "hinge"), "unknown loss 'hinge'");
        AssertUserError(Grad("--reduction", "median"), "--reduction", "median");
    }

    [Fact]
    public void GlobThatMatchesNothing()
    {
        AssertUserError(Run("prepare", _model, "--loss", "mse", "--trainable", "encoder.*", "-o", _dir["t.onnx"]), "pattern 'encoder.*' matches no");
        AssertUserError(Run("prepare", _model, "--loss", "mse", "--frozen", "nothing", "-o", _dir["t.onnx"]), "pattern 'nothing' matches no");
        AssertUserError(Grad("--trainable", "zzz"), "pattern 'zzz'");
        AssertUserError(Run("prepare", _model, "--loss", "mse", "--trainable", "", "-o", _dir["t.onnx"]), "--trainable: empty pattern");
        AssertUserError(Run("prepare", _model, "--loss", "mse", "--frozen", "*", "-o", _dir["t.onnx"]), "no trainable parameters");
    }

    [Fact]
    public void BadLossOptions()
    {
        AssertUserError(Grad("--class-weights", "1,2"), "--class-weights", "2 weights", "3 classes");
        AssertUserError(Grad("--class-weights", "1,x,2"), "--class-weights", "'x'");
        AssertUserError(Grad("--label-smoothing", "1.5"), "label smoothing must be in [0, 1]");
        AssertUserError(GradWith(_x, _labels, "mse", "--label-smoothing", "0.1"), "cross-entropy only");
        AssertUserError(GradWith(_x, _labels, "mse", "--ignore-index", "1"), "--ignore-index", "cross-entropy only");
        AssertUserError(Grad("--ignore-index", "abc"), "abc");
    }

    [Fact]
    public void CommandLineMistakes()
    {
        AssertUserError(Run("prepare", _model, "-o", _dir["t.onnx"]), "--loss", "is required", "onnx-kfac prepare --help");
        AssertUserError(Run("inspect", _model, "--bogus"), "--bogus");
        AssertUserError(Run("frobnicate"), "frobnicate");
        AssertUserError(Run(), "onnx-kfac --help");
        AssertUserError(Run("prepare", _model, "--loss", "mse", "-o", _model), "refusing to overwrite the source model");
        AssertUserError(Run("prepare", _model, "--loss", "mse", "-o", _dir.Path), "is a folder");
        File.WriteAllText(_dir["file"], "");
        AssertUserError(Run("grad", _model, "--input", _x, "--target", _labels, "--loss", "ce", "-o", _dir["file"]), "is a file");
    }

    [Fact]
    public void VerboseAddsTheStackTrace()
    {
        var quiet = AssertUserError(Run("inspect", _dir["nope.onnx"]));
        var verbose = Run("inspect", _dir["nope.onnx"], "--verbose");
        Assert.Equal(2, verbose.Code);
        Assert.Equal(quiet.ErrLines[0], verbose.ErrLines[0]);
        Assert.Contains("   at ", verbose.Err);
    }

    [Fact]
    public void UnexpectedExceptionsExitWithOne()
    {
        RootCommand Build(CliContext ctx)
        {
            var root = CliApp.BuildRoot(ctx);
            var boom = new Command("boom");
            boom.SetAction(_ => ((Func<int>)(() => throw new InvalidOperationException("something\nbroke")))());
            root.Subcommands.Add(boom);
            return root;
        }
        var r = Run(Build, "boom");
        Assert.Equal(1, r.Code);
        var line = Assert.Single(r.ErrLines);
        Assert.Equal("error: unexpected InvalidOperationException: something broke (run with --verbose for the stack trace)", line);
        var v = Run(Build, "boom", "--verbose");
        Assert.Equal(1, v.Code);
        Assert.Contains("   at ", v.Err);
    }
}
