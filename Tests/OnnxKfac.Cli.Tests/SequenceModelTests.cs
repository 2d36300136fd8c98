using OnnxKfac.Cli.Tests.Support;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>
/// Sequence models through `train`: class labels per position ([N, T] labels for a [N, C, T]
/// output: the causal GPT fixture with its tied embedding learns next-token prediction, with AdamW
/// and K-FAC; a label outside the classes names its example and position), and a bool
/// key-padding mask input (the masked TransformerEncoder fixture, fed 0/1 integers).
/// </summary>
public sealed class SequenceModelTests : IDisposable
{
    private const int Seq = 6, Vocab = 12;
    private readonly TempDir _dir = new();
    private static string Gpt => Path.Combine(AppContext.BaseDirectory, "Fixtures", "gpt_opset17", "model.onnx");

    public void Dispose() => _dir.Dispose();

    /// <summary>Sequences that count up modulo the vocabulary from a random start; the label of each position is the next token.</summary>
    private string NextTokens(string name, int n, int seed, long badLabel = -1)
    {
        var rng = new Random(seed);
        var x = new long[n * Seq];
        var y = new long[n * Seq];
        for (int i = 0; i < n; i++)
        {
            int start = rng.Next(Vocab);
            for (int t = 0; t < Seq; t++)
            {
                x[i * Seq + t] = (start + t) % Vocab;
                y[i * Seq + t] = (start + t + 1) % Vocab;
            }
        }
        if (badLabel >= 0) y[2 * Seq + 3] = badLabel;
        return TrainData.Npz(_dir[name], ("x", TrainData.Npy(x, n, Seq)), ("y", TrainData.Npy(y, n, Seq)));
    }

    [Theory]
    [InlineData("adamw", "0.03")]
    [InlineData("kfac", "0.01")]
    public void TheGptLearnsNextTokensFromPerPositionLabels(string optimizer, string lr)
    {
        string train = NextTokens("train.npz", 128, 1), val = NextTokens("val.npz", 32, 2), report = _dir["r.json"];
        AssertOk(Run("train", Gpt, "--train", train, "--val", val, "--epochs", "4", "--batch-size", "16", "--threads", "1", "--quiet",
            "--optimizer", optimizer, "--lr", lr, "--report", report));
        var losses = TrainData.StepLosses(TrainData.Report(report));
        Assert.Equal(32, losses.Length);
        double first = losses.Take(4).Average(), last = losses.TakeLast(4).Average();
        Assert.True(last < 0.5 * first, $"{optimizer}: loss {first:G4} over the first 4 updates, {last:G4} over the last 4");
    }

    [Fact]
    public void ALabelOutsideTheClassesNamesItsExampleAndPosition()
    {
        string train = NextTokens("bad.npz", 32, 3, badLabel: Vocab);
        var r = Run("train", Gpt, "--train", train, "--epochs", "1", "--batch-size", "16", "--threads", "1", "--quiet");
        Assert.Equal(2, r.Code);
        Assert.Contains("example 2, position 3", r.Err);
        Assert.Contains($"{Vocab}", r.Err);
    }

    private static string MaskedEncoder => Path.Combine(AppContext.BaseDirectory, "Fixtures", "masked_encoder_opset17", "model.onnx");

    /// <summary>Class c: the unpadded positions hold feature c set to 1 (plus noise); padded positions hold noise only.</summary>
    private string MaskedSequences(string name, int n, int seed, long badMask = -1)
    {
        const int t = 5, f = 6;
        var rng = new Random(seed);
        var x = new float[n * t * f];
        var mask = new long[n * t];
        var y = new long[n];
        for (int i = 0; i < n; i++)
        {
            y[i] = rng.Next(4);
            int kept = 2 + rng.Next(t - 1);
            for (int p = 0; p < t; p++)
            {
                mask[i * t + p] = p < kept ? 0 : 1;   // PyTorch's key_padding_mask: true = padding
                for (int c = 0; c < f; c++) x[(i * t + p) * f + c] = (float)(rng.NextDouble() - 0.5) + (p < kept && c == y[i] ? 2f : 0f);
            }
        }
        if (badMask >= 0) mask[3 * t + 1] = badMask;
        return TrainData.Npz(_dir[name], ("input_0", TrainData.Npy(x, n, t, f)), ("input_1", TrainData.Npy(mask, n, t)), ("y", TrainData.Npy(y, n)));
    }

    [Fact]
    public void TheMaskedEncoderTrainsOnABoolKeyPaddingMaskFedAsIntegers()
    {
        string train = MaskedSequences("enc.npz", 128, 1), val = MaskedSequences("encval.npz", 64, 2), report = _dir["enc.json"];
        AssertOk(Run("train", MaskedEncoder, "--train", train, "--val", val, "--epochs", "6", "--batch-size", "16", "--threads", "1", "--quiet",
            "--lr", "0.01", "--report", report, "--fail-if", "val_accuracy<0.8"));
        var bad = Run("train", MaskedEncoder, "--train", MaskedSequences("badmask.npz", 32, 3, badMask: 2), "--epochs", "1", "--threads", "1", "--quiet");
        Assert.Equal(2, bad.Code);
        Assert.Contains("row 3 of input 'input_1' holds 2", bad.Err);
    }
}
