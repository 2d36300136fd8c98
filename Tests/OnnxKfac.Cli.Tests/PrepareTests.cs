using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Cli.Commands;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

public class PrepareTests
{
    [Fact]
    public void WritesTrainingGraphAndManifest()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.Linear2(), dir["m.onnx"]);
        string output = dir["out/training.onnx"];
        var r = AssertOk(Run("prepare", model, "--loss", "cross-entropy", "-o", output));
        Assert.Contains("4 parameters", r.Out);
        Assert.Contains("2 layers (2 dense)", r.Out);
        Assert.Contains("training.manifest.json", r.Out);
        var manifest = TrainingManifest.FromJson(File.ReadAllText(dir["out/training.manifest.json"]), "manifest");
        Assert.Equal("cross-entropy", manifest.Loss.Kind);
        Assert.Equal(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"], manifest.Parameters.Select(p => p.Name));
        Assert.Equal("onnx-kfac/training-graph/2", manifest.Format);
        Assert.Equal(2, manifest.Layers.Count);
        Assert.All(manifest.Layers, l => Assert.Contains(l.Outputs.Input!, manifest.Outputs.Select(o => o.Name))); // the tap; l.Input is the model tensor
        Assert.Null(manifest.Fisher);
        var tg = OnnxModelIO.Load(output);
        Assert.Equal("onnx-kfac", tg.ProducerName);
        using var session = new InferenceSession(output);
        Assert.Contains(manifest.Loss.Loss, session.OutputNames);
        // Atomic writes leave no temporary files behind.
        Assert.Equal(["training.manifest.json", "training.onnx"], Directory.GetFiles(dir["out"]).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void IsDeterministicAndHonoursOptions()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.Linear2(), dir["m.onnx"]);
        string[] common = ["prepare", model, "--loss", "ce", "--trainable", "fc2.*", "--sampled-fisher", "--ignore-index", "2",
            "--label-smoothing", "0.1", "--class-weights", "1,0.5,2"];
        AssertOk(Run([.. common, "-o", dir["a.onnx"]]));
        AssertOk(Run([.. common, "--out", dir["b.onnx"]]));
        Assert.Equal(File.ReadAllBytes(dir["a.onnx"]), File.ReadAllBytes(dir["b.onnx"]));
        var manifest = TrainingManifest.FromJson(File.ReadAllText(dir["a.manifest.json"]), "a");
        Assert.Equal(["fc2.weight", "fc2.bias"], manifest.Parameters.Select(p => p.Name));
        Assert.NotNull(manifest.Fisher);
        Assert.Equal(2, manifest.Loss.IgnoreIndex);
        Assert.Equal(0.1, manifest.Loss.LabelSmoothing);
        Assert.Equal([1f, 0.5f, 2f], manifest.Loss.ClassWeights!);
        Assert.Contains(manifest.Excluded, e => e.Name == "fc1.weight" && e.Reason.Contains("not matched"));

        AssertOk(Run("prepare", model, "--loss", "mse", "--frozen", "fc1.*", "--reduction", "sum", "-o", dir["c.onnx"]));
        var c = TrainingManifest.FromJson(File.ReadAllText(dir["c.manifest.json"]), "c");
        Assert.Equal(["fc2.weight", "fc2.bias"], c.Parameters.Select(p => p.Name));
        Assert.Equal("sum", c.Loss.Reduction);
        Assert.Contains(c.Excluded, e => e.Name == "fc1.bias" && e.Reason == "frozen by 'fc1.*'");
    }

    [Fact]
    public void ManifestPathReplacesTheExtension()
    {
        Assert.Equal(Path.Combine("d", "training.manifest.json"), PrepareCommand.ManifestPath(Path.Combine("d", "training.onnx")));
        Assert.Equal("a.b.manifest.json", PrepareCommand.ManifestPath("a.b.onnx"));
        Assert.Equal("plain.manifest.json", PrepareCommand.ManifestPath("plain"));
    }

    [Fact]
    public void SecondOutputNeedsTheOutputOption()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.TwoOutputsTied(), dir["two.onnx"]);
        AssertUserError(Run("prepare", model, "--loss", "mse", "-o", dir["t.onnx"]), "2 outputs", "--output");
        AssertOk(Run("prepare", model, "--loss", "mse", "--output", "aux", "-o", dir["t.onnx"]));
        var manifest = TrainingManifest.FromJson(File.ReadAllText(dir["t.manifest.json"]), "t");
        Assert.Equal("aux", manifest.Loss.Output);
        Assert.Equal(2, manifest.Parameters[0].Uses);
    }
}
