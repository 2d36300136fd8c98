using System.Text.Json;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Graph.Model;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

public class GradTests
{
    private const int N = 4;
    private static readonly float[] X = Models.Values(N * 4, 11, 1f);

    private static (double Loss, Dictionary<string, Graph.Proto.TensorProto> Grads) ReadOutput(string dir)
    {
        using var loss = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "loss.json")));
        using var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "index.json")));
        var grads = new Dictionary<string, Graph.Proto.TensorProto>();
        foreach (var e in index.RootElement.EnumerateObject())
        {
            var t = Models.ReadTensor(Path.Combine(dir, e.Value.GetString()!));
            Assert.Equal(e.Name, t.Name);
            grads[e.Name] = t;
        }
        return (loss.RootElement.GetProperty("loss").GetDouble(), grads);
    }

    [Fact]
    public void MseGradientsMatchReference()
    {
        using var dir = new TempDir();
        var m = Models.Linear2();
        string model = Models.Save(m, dir["m.onnx"]);
        var target = Models.Values(N * 3, 12, 1f);
        // The file's tensor name does not matter when the model has one input.
        Models.SaveTensor(Models.Floats("whatever", [N, 4], X), dir["x.pb"]);
        Models.SaveTensor(Models.Floats("t", [N, 3], target), dir["t.pb"]);
        var r = AssertOk(Run("grad", model, "--input", dir["x.pb"], "--target", dir["t.pb"], "--loss", "mse", "-o", dir["out"]));
        Assert.Contains("4 gradients written", r.Out);
        var (loss, grads) = ReadOutput(dir["out"]);
        var reference = Reference.Linear2(m, X, N, target, null);
        Assert.Equal(reference.Loss, loss, 1e-5);
        Assert.Equal(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"], grads.Keys);
        foreach (var (name, g) in grads)
        {
            Assert.Equal(m.Graph.Initializer.First(t => t.Name == name).Dims, g.Dims);
            Reference.AssertClose(reference.Grads[name], g, name);
        }
        Assert.Equal(["grad_000.pb", "grad_001.pb", "grad_002.pb", "grad_003.pb", "index.json", "loss.json"],
            Directory.GetFiles(dir["out"]).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void CrossEntropyWithInt32LabelsAndIgnoreIndex()
    {
        using var dir = new TempDir();
        var m = Models.Linear2();
        string model = Models.Save(m, dir["m.onnx"]);
        Models.SaveTensor(Models.Floats("x", [N, 4], X), dir["x.pb"]);
        Models.SaveTensor(Models.Int32s("labels", [N], 2, 0, 7, 1), dir["y.pb"]);
        AssertOk(Run("grad", model, "--input", "x=" + dir["x.pb"], "--target", dir["y.pb"], "--loss", "cross-entropy",
            "--ignore-index", "7", "--trainable", "fc*", "-o", dir["out"]));
        var (loss, grads) = ReadOutput(dir["out"]);
        var reference = Reference.Linear2(m, X, N, null, [2, 0, 7, 1], ignoreIndex: 7);
        Assert.Equal(reference.Loss, loss, 1e-5);
        foreach (var (name, g) in grads) Reference.AssertClose(reference.Grads[name], g, name);
    }

    [Fact]
    public void FrozenParametersHaveNoGradientFile()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.Linear2(), dir["m.onnx"]);
        Models.SaveTensor(Models.Floats("x", [N, 4], X), dir["x.pb"]);
        Models.SaveTensor(Models.Int64s("y", [N], 0, 1, 2, 1), dir["y.pb"]);
        AssertOk(Run("grad", model, "--input", dir["x.pb"], "--target", dir["y.pb"], "--loss", "ce", "--frozen", "fc1.*", "-o", dir["out"]));
        var (_, grads) = ReadOutput(dir["out"]);
        Assert.Equal(["fc2.weight", "fc2.bias"], grads.Keys);
    }

    [Fact]
    public void BindsSeveralInputsByNameOrByTheFileTensorName()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.TwoInputs(), dir["two.onnx"]);
        Models.SaveTensor(Models.Floats("a", [2, 4], Models.Values(8, 1)), dir["a.pb"]);
        Models.SaveTensor(Models.Floats("b", [2, 4], Models.Values(8, 2)), dir["b.pb"]);
        Models.SaveTensor(Models.Floats("anon", [2, 4], Models.Values(8, 2)), dir["anon.pb"]);
        Models.SaveTensor(Models.Floats("t", [2, 3], Models.Values(6, 3)), dir["t.pb"]);
        AssertOk(Run("grad", model, "--input", "a=" + dir["a.pb"], "--input", "b=" + dir["b.pb"], "--target", dir["t.pb"], "--loss", "mse", "-o", dir["o1"]));
        AssertOk(Run("grad", model, "--input", dir["a.pb"], "--input", dir["b.pb"], "--target", dir["t.pb"], "--loss", "mse", "-o", dir["o2"]));
        Assert.Equal(File.ReadAllBytes(dir["o1/grad_000.pb"]), File.ReadAllBytes(dir["o2/grad_000.pb"]));
        Assert.Equal(File.ReadAllText(dir["o1/loss.json"]), File.ReadAllText(dir["o2/loss.json"]));
        // b bound by name, the anonymous file to a.
        AssertOk(Run("grad", model, "--input", "b=" + dir["b.pb"], "--input", "a=" + dir["anon.pb"], "--target", dir["t.pb"], "--loss", "mse", "-o", dir["o3"]));

        AssertUserError(Run("grad", model, "--input", dir["anon.pb"], "--input", dir["b.pb"], "--target", dir["t.pb"], "--loss", "mse", "-o", dir["o4"]),
            "2 inputs (a, b)", "'anon'", "--input NAME=FILE");
        AssertUserError(Run("grad", model, "--input", "a=" + dir["a.pb"], "--target", dir["t.pb"], "--loss", "mse", "-o", dir["o4"]),
            "no tensor for model input 'b'", "--input b=FILE");
        AssertUserError(Run("grad", model, "--input", "a=" + dir["a.pb"], "--input", "a=" + dir["b.pb"], "--target", dir["t.pb"], "--loss", "mse", "-o", dir["o4"]),
            "'a' is given twice");
        Assert.False(Directory.Exists(dir["o4"]));
    }
}
