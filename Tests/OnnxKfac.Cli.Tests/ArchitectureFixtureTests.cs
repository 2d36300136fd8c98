using System.Text.Json;
using OnnxKfac.Cli.Tests.Support;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>
/// `train` and `inspect --optimizer kfac` on the torchvision, audio and GPT fixtures
/// (tools/fixtures/export_vision_fixtures.py): K-FAC fits the fixture's own batch (the loss
/// falls at every step), and every trainable parameter gets a block with its reason.
/// </summary>
public class ArchitectureFixtureTests
{
    private static string Dir(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    [Theory]
    [InlineData("tv_mobilenet_v3_opset17")]   // depthwise Conv, HardSwish, squeeze-excitation
    [InlineData("tv_shufflenet_v2_opset13")]  // channel shuffle: the conv inputs' shapes are not inferred
    [InlineData("tv_vit_opset17")]            // patch Conv, attention, class token
    [InlineData("audio_conv1d_opset17")]      // Conv1d, BatchNorm1d, 1-D pooling
    public void KfacFitsTheFixtureBatch(string name)
    {
        string dir = Dir(name);
        using var tmp = new TempDir();
        AssertOk(Run("train", Path.Combine(dir, "model.onnx"), "--train", Path.Combine(dir, "input_0.pb"),
            "--train-labels", Path.Combine(dir, "target.pb"), "--batch-size", "4", "--epochs", "6", "--optimizer", "kfac",
            "--seed", "1", "--threads", "1", "--quiet", "--report", tmp["r.json"]));
        var losses = TrainData.StepLosses(TrainData.Report(tmp["r.json"]));
        Assert.Equal(6, losses.Length);
        for (int k = 1; k < losses.Length; k++)
            Assert.True(losses[k] < losses[k - 1], $"{name}: step losses {string.Join(", ", losses)}");
        Assert.True(losses[^1] < 0.99 * losses[0], $"{name}: step losses {string.Join(", ", losses)}");
    }

    [Theory]
    [InlineData("tv_mobilenet_v3_opset17")]
    [InlineData("tv_shufflenet_v2_opset13")]
    [InlineData("tv_regnet_opset17")]
    public void KfacBlocksOfConvNets(string name)
    {
        var root = InspectKfac(name);
        var blocks = root.GetProperty("kfac_blocks").EnumerateArray().ToArray();
        // every trainable parameter is in exactly one block
        Assert.Equal(root.GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()).Order(StringComparer.Ordinal),
            blocks.SelectMany(b => b.GetProperty("parameters").EnumerateArray().Select(p => p.GetString())).Order(StringComparer.Ordinal));
        // the depthwise or grouped convolutions get block-diagonal Kronecker blocks, the BN scales diagonal ones
        Assert.Contains(blocks, b => b.GetProperty("kind").GetString() == "kronecker" && b.GetProperty("reason").GetString()!.Contains("groups (block-diagonal KFC)"));
        Assert.Contains(blocks, b => b.GetProperty("kind").GetString() == "diagonal" && b.GetProperty("reason").GetString() == "scale-and-shift (BatchNormalization)");
    }

    [Theory]
    [InlineData("gpt_opset13")]
    [InlineData("gpt_opset17")]
    public void KfacBlocksOfTheGptWithTiedEmbeddings(string name)
    {
        var blocks = InspectKfac(name).GetProperty("kfac_blocks").EnumerateArray()
            .ToDictionary(b => b.GetProperty("block").GetString()!, b => (Kind: b.GetProperty("kind").GetString(), Reason: b.GetProperty("reason").GetString()!));
        // The embedding matrix is read by the Gather and by the output Gemm: tied, so no Kronecker
        // block; the output bias beside it falls back to a diagonal block too (its sampled gradient
        // is in the training graph).
        Assert.Equal("diagonal", blocks["tok.weight"].Kind);
        Assert.StartsWith("tied: used by 2 layers", blocks["tok.weight"].Reason);
        Assert.Equal("diagonal", blocks["out_bias"].Kind);
        Assert.Equal("in layer 'tok#1', whose 'tok.weight' is tied", blocks["out_bias"].Reason);
        Assert.Equal(8, blocks.Values.Count(b => b.Kind == "kronecker"));   // attention in/out and MLP projections of 2 blocks
    }

    private static JsonElement InspectKfac(string name)
    {
        var r = AssertOk(Run("inspect", Path.Combine(Dir(name), "model.onnx"), "--optimizer", "kfac", "--json"));
        using var doc = JsonDocument.Parse(r.Out);
        Assert.Equal(0, doc.RootElement.GetProperty("ops_without_gradient").GetArrayLength());
        return doc.RootElement.Clone();
    }
}
