using System.Text.Json;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>
/// inspect and train on ties the exporter breaks (tied_folded) or invents (encoder_merged),
/// module-path globs, the --trainable/--frozen preview and the partial-module warning.
/// </summary>
public sealed class TieTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name, "model.onnx");

    [Fact]
    public void InspectReportsABrokenTieAndKeepsItTied()
    {
        var r = AssertOk(Run("inspect", Fixture("tied_folded_opset13")));
        Assert.Contains("Ties the exporter broke: 1", r.Out);
        Assert.Matches(@"onnx::MatMul_24 +emb\.weight +transpose +one parameter \(--untie to split\)", r.Out);
        var root = JsonDocument.Parse(AssertOk(Run("inspect", Fixture("tied_folded_opset13"), "--json")).Out).RootElement;
        Assert.DoesNotContain("onnx::MatMul_24", root.GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()));
        var tie = Assert.Single(root.GetProperty("broken_ties").EnumerateArray().ToArray());
        Assert.True(tie.GetProperty("kept_tied").GetBoolean());
        // K-FAC sees both uses of the one weight: a tied parameter, given the fallback block.
        var kfac = AssertOk(Run("inspect", Fixture("tied_folded_opset13"), "--optimizer", "kfac"));
        Assert.Matches(@"emb\.weight +diagonal +emb\.weight +tied: used by 2 layers", kfac.Out);
        // --untie keeps it broken: the copy is a parameter again.
        var apart = JsonDocument.Parse(AssertOk(Run("inspect", Fixture("tied_folded_opset13"), "--json", "--untie", "onnx::MatMul_24")).Out).RootElement;
        Assert.Contains("onnx::MatMul_24", apart.GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()));
    }

    [Fact]
    public void InspectReportsLayersTheExporterMergedAndUntieSplitsThem()
    {
        string model = Fixture("encoder_merged_opset17");
        var r = AssertOk(Run("inspect", model, "--loss", "mse"));
        Assert.Contains("Initializers shared across modules: 9", r.Out);
        Assert.Matches(@"encoder\.layers\.0\.linear1\.bias +encoder\.layers\.0\.linear1 +encoder\.layers\.1\.linear1 +tied \(--untie to split\)", r.Out);
        var split = JsonDocument.Parse(AssertOk(Run("inspect", model, "--loss", "mse", "--json", "--untie", "encoder.layers.1.linear1.*")).Out).RootElement;
        var names = split.GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()!).ToArray();
        Assert.Contains("encoder.layers.1.linear1.bias", names);
        Assert.Contains("head.bias", names);                              // the one-element bias of the Linear(8, 1) head
        Assert.DoesNotContain("encoder.layers.1.linear2.bias", names);
        AssertUserError(Run("inspect", model, "--loss", "mse", "--untie", "head.*"), "--untie 'head.*' matches no tied initializer");
    }

    [Fact]
    public void InspectPreviewsTheTrainableSetByModulePathAndWarnsAboutPartOfAModule()
    {
        string model = Fixture("transformer_opset17");
        var root = JsonDocument.Parse(AssertOk(Run("inspect", model, "--json", "--trainable", "ff1.*", "--trainable", "head.*")).Out).RootElement;
        Assert.Equal(["ff1.bias", "head.bias", "head.weight", "onnx::MatMul_138"],
            root.GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()!).Order(StringComparer.Ordinal));
        Assert.Equal(0, root.GetProperty("warnings").GetArrayLength());
        var r = AssertOk(Run("inspect", model, "--frozen", "ff1.bias"));
        Assert.Contains("warning: pattern 'ff1.bias' matches only part of module 'ff1': it leaves out onnx::MatMul_138", r.Out);
        AssertUserError(Run("inspect", model, "--frozen", "nothing.*"), "pattern 'nothing.*' matches no floating-point initializer");
    }

    [Fact]
    public void TrainKeepsABrokenTieTiedAndFreezesRenamedWeightsByModulePath()
    {
        // tied_folded: ids [N, 5] over a vocabulary of 10, 10 classes.
        var rng = new Random(3);
        int n = 32;
        var ids = Enumerable.Range(0, n * 5).Select(_ => (long)rng.Next(10)).ToArray();
        var labels = Enumerable.Range(0, n).Select(i => ids[i * 5] % 10).ToArray();
        File.WriteAllBytes(_dir["x.npy"], TrainData.Npy(ids, n, 5));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(labels, n));
        string model = Fixture("tied_folded_opset13");
        var r = AssertOk(Run("train", model, "--train", _dir["x.npy"], "--train-labels", _dir["y.npy"], "--epochs", "2", "--lr", "0.05",
            "--optimizer", "sgd", "--export", _dir["tuned.onnx"]));
        Assert.Contains("tie: 'onnx::MatMul_24' is the transpose of 'emb.weight' (a tie the exporter broke): they train as one parameter", r.Out);
        var original = OnnxModelIO.Load(model);
        var tuned = OnnxModelIO.Load(_dir["tuned.onnx"]);
        // Both uses read the one trained weight: the output projection is its transpose, whatever it became.
        Assert.Single(tuned.Graph.Node, x => x.OpType == "Transpose" && x.Input[0] == "emb.weight" && x.Output[0] == "onnx::MatMul_24");
        Assert.DoesNotContain(tuned.Graph.Initializer, t => t.Name == "onnx::MatMul_24");
        Assert.NotEqual(Values(original, "emb.weight"), Values(tuned, "emb.weight"));
        // K-FAC trains it too: the tied weight and the bias-less layers around it get fallback blocks
        // (the sampled gradients they need are in the graph; this failed on tied models before).
        AssertOk(Run("train", model, "--train", _dir["x.npy"], "--train-labels", _dir["y.npy"], "--epochs", "1", "--optimizer", "kfac"));
        AssertOk(Run("train", Fixture("tied_opset13"), "--train", _dir["x.npy"], "--train-labels", _dir["y.npy"], "--epochs", "1", "--optimizer", "kfac"));

        // --frozen by module path reaches the renamed weight of the transformer's ff1 (onnx::MatMul_138).
        var t = JsonDocument.Parse(AssertOk(Run("inspect", Fixture("transformer_opset17"), "--json", "--frozen", "ff1.*")).Out).RootElement;
        Assert.Contains(t.GetProperty("excluded").EnumerateArray(), e => e.GetProperty("name").GetString() == "onnx::MatMul_138"
            && e.GetProperty("reason").GetString() == "frozen by 'ff1.*'");
    }

    [Fact]
    public void UntiedLayersTrainApartAndExportAsSeparateInitializers()
    {
        int n = 32;
        var rng = new Random(5);
        var x = Enumerable.Range(0, n * 3 * 8).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var y = Enumerable.Range(0, n).Select(i => x[i * 24] - x[i * 24 + 5]).ToArray();
        File.WriteAllBytes(_dir["x.npy"], TrainData.Npy(x, n, 3, 8));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(y, n, 1));
        string model = Fixture("encoder_merged_opset17");
        string[] common = ["--loss", "mse", "--train", _dir["x.npy"], "--train-labels", _dir["y.npy"], "--epochs", "3", "--lr", "0.01"];
        var r = AssertOk(Run(["train", model, .. common, "--untie", "*", "--export", _dir["apart.onnx"], "--checkpoint", _dir["run.ckpt"]]));
        Assert.Contains("tie: 'encoder.layers.0.linear1.bias' split by --untie: encoder.layers.1.linear1.bias train apart from it", r.Out);
        var apart = OnnxModelIO.Load(_dir["apart.onnx"]);
        Assert.DoesNotContain(apart.Graph.Node, node => node.OpType == "Identity");
        var l0 = Values(apart, "encoder.layers.0.linear1.bias");
        var l1 = Values(apart, "encoder.layers.1.linear1.bias");
        Assert.NotEqual(l0, l1);                                            // equal at the start, apart after training
        Assert.NotEqual(Values(OnnxModelIO.Load(model), "encoder.layers.0.linear1.bias"), l0);
        // export from the checkpoint splits the same way (the run's --untie is in its config).
        AssertOk(Run("export", "--checkpoint", _dir["run.ckpt"], "-o", _dir["again.onnx"]));
        Assert.Equal(l1, Values(OnnxModelIO.Load(_dir["again.onnx"]), "encoder.layers.1.linear1.bias"));

        // By default they train tied: one initializer, read by both layers through the exporter's Identity.
        AssertOk(Run(["train", model, .. common, "--export", _dir["tied.onnx"]]));
        var tied = OnnxModelIO.Load(_dir["tied.onnx"]);
        Assert.Contains(tied.Graph.Node, node => node.OpType == "Identity" && node.Output[0] == "encoder.layers.1.linear1.bias");
        Assert.DoesNotContain(tied.Graph.Initializer, t => t.Name == "encoder.layers.1.linear1.bias");
    }

    private static float[] Values(ModelProto m, string name) => TensorData.ToFloats(m.Graph.Initializer.Single(t => t.Name == name));
}
