using System.Text.Json;
using OnnxKfac.Cli.Tests.Support;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>
/// `train` and `inspect --optimizer kfac` on PyTorch-exported LSTM classifiers (tools/fixtures/
/// export_rnn_fixtures.py): the recurrent ops are unrolled for training, the loss goes down with
/// AdamW and with K-FAC, and K-FAC gives the LSTM's W, R, B initializers diagonal blocks.
/// </summary>
public sealed class RecurrentTrainTests : IDisposable
{
    private const int Examples = 48, Seq = 5;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name, "model.onnx");

    /// <summary>Float sequences [48, 5, 6]; the class is the largest of the first three features summed over time.</summary>
    private (string X, string Y) FloatSequences()
    {
        var rng = new Random(5);
        var x = new float[Examples * Seq * 6];
        var y = new long[Examples];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(2 * rng.NextDouble() - 1);
        for (int n = 0; n < Examples; n++)
        {
            var sums = new double[3];
            for (int t = 0; t < Seq; t++)
                for (int c = 0; c < 3; c++) sums[c] += x[(n * Seq + t) * 6 + c];
            y[n] = Array.IndexOf(sums, sums.Max());
        }
        File.WriteAllBytes(_dir["x.npy"], TrainData.Npy(x, Examples, Seq, 6));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(y, Examples));
        return (_dir["x.npy"], _dir["y.npy"]);
    }

    /// <summary>Token ids [48, 5] of a 12-word vocabulary; the class is the last token mod 3.</summary>
    private (string X, string Y) TokenSequences()
    {
        var rng = new Random(6);
        var ids = Enumerable.Range(0, Examples * Seq).Select(_ => (long)rng.Next(12)).ToArray();
        var y = Enumerable.Range(0, Examples).Select(n => ids[n * Seq + Seq - 1] % 3).ToArray();
        File.WriteAllBytes(_dir["ids.npy"], TrainData.Npy(ids, Examples, Seq));
        File.WriteAllBytes(_dir["yi.npy"], TrainData.Npy(y, Examples));
        return (_dir["ids.npy"], _dir["yi.npy"]);
    }

    private static void AssertLearns(JsonElement report, int perEpoch)
    {
        var losses = TrainData.StepLosses(report);
        Assert.Equal(4 * perEpoch, losses.Length);
        Assert.True(losses.TakeLast(perEpoch).Average() < 0.95 * losses.Take(perEpoch).Average(), string.Join(", ", losses));
    }

    [Fact]
    public void AnLstmWithLearnedInitialStatesTrainsAndTheLossGoesDown()
    {
        var (x, y) = FloatSequences();
        AssertOk(Run("train", Fixture("lstm_batch_first_opset17"), "--train", x, "--train-labels", y, "--batch-size", "8", "--epochs", "4",
            "--lr", "0.1", "--threads", "1", "--quiet", "--report", _dir["r.json"]));
        AssertLearns(TrainData.Report(_dir["r.json"]), 6);
    }

    [Fact]
    public void KfacTrainsATwoLayerBidirectionalLstmWithDiagonalBlocksForItsWeights()
    {
        string model = Fixture("lstm_opset13");
        var inspect = JsonDocument.Parse(AssertOk(Run("inspect", model, "--optimizer", "kfac", "--json")).Out).RootElement;
        var blocks = inspect.GetProperty("kfac_blocks").EnumerateArray().ToArray();
        var recurrent = blocks.Where(b => b.GetProperty("reason").GetString()!.Contains("read by LSTM")).ToArray();
        Assert.Equal(6, recurrent.Length); // W, R, B of each of the two LSTM layers
        Assert.All(recurrent, b => Assert.Equal("diagonal", b.GetProperty("kind").GetString()));
        Assert.Equal(0, inspect.GetProperty("ops_without_gradient").GetArrayLength());

        var (ids, y) = TokenSequences();
        var r = AssertOk(Run("train", model, "--train", ids, "--train-labels", y, "--batch-size", "8", "--epochs", "4", "--optimizer", "kfac",
            "--lr", "0.1", "--kfac-damping", "0.1", "--threads", "1", "--report", _dir["k.json"]));
        Assert.Contains("kfac: damping 0.1", r.Out);
        var report = TrainData.Report(_dir["k.json"]);
        Assert.Equal("kfac", report.GetProperty("config").GetProperty("optimizer").GetString());
        AssertLearns(report, 6);
    }
}
