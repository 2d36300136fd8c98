using OnnxKfac.Cli.Tests.Support;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>
/// train and eval on models with several data inputs (PyTorch fixtures): token ids with an
/// attention mask, two float towers, int64 ids next to floats; NPZ entries mapped by --inputs or
/// by name, one file per input, and the refusals (ids outside the vocabulary, -1, float ids,
/// an input without data).
/// </summary>
public sealed class TrainMultiInputTests : IDisposable
{
    private const int Seq = 5, Vocab = 12;
    private readonly TempDir _dir = new();
    private readonly string _tokenModel = Fixture("token_mask");

    public void Dispose() => _dir.Dispose();

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name + "_opset17", "model.onnx");

    /// <summary>Class c uses tokens 4c..4c+3; the mask keeps 1..Seq positions (the masked ones hold noise).</summary>
    private static (long[] Ids, long[] Mask, long[] Y) Tokens(int n, int seed)
    {
        var rng = new Random(seed);
        var ids = new long[n * Seq];
        var mask = new long[n * Seq];
        var y = new long[n];
        for (int i = 0; i < n; i++)
        {
            y[i] = rng.Next(3);
            int kept = 1 + rng.Next(Seq);
            for (int t = 0; t < Seq; t++)
            {
                mask[i * Seq + t] = t < kept ? 1 : 0;
                ids[i * Seq + t] = t < kept ? 4 * y[i] + rng.Next(4) : rng.Next(Vocab);
            }
        }
        return (ids, mask, y);
    }

    private string TokenNpz(string name, int n, int seed, string idsKey = "ids", string maskKey = "mask", Action<long[]>? edit = null)
    {
        var (ids, mask, y) = Tokens(n, seed);
        edit?.Invoke(ids);
        return TrainData.Npz(_dir[name], (idsKey, TrainData.Npy(ids, n, Seq)), (maskKey, TrainData.Npy(mask, n, Seq)), ("y", TrainData.Npy(y, n)));
    }

    private static readonly string[] Common = ["--batch-size", "16", "--threads", "1", "--quiet", "--optimizer", "adamw", "--lr", "0.05"];

    [Fact]
    public void TokenClassifierWithAttentionMaskLearnsFromAnNpzMappedByInputs()
    {
        string train = TokenNpz("train.npz", 96, 1), val = TokenNpz("val.npz", 48, 2);
        const string map = "input_ids=ids,attention_mask=mask";
        var before = AssertOk(Run("eval", _tokenModel, "--data", val, "--inputs", map, "--threads", "1"));
        Assert.Contains("accuracy", before.Out);
        AssertOk(Run(["train", _tokenModel, "--train", train, "--val", val, "--inputs", map, "--epochs", "4",
            "--fail-if", "val_accuracy<0.9", "--export", _dir["tuned.onnx"], .. Common]));
        var after = AssertOk(Run("eval", _dir["tuned.onnx"], "--data", val, "--inputs", map, "--threads", "1"));
        Assert.Contains("accuracy 100.00%", after.Out);
    }

    [Fact]
    public void NpzByMappingByMatchingNamesAndOneFilePerInputGiveTheSameTrajectory()
    {
        var (ids, mask, y) = Tokens(64, 3);
        TrainData.Npz(_dir["mapped.npz"], ("ids", TrainData.Npy(ids, 64, Seq)), ("mask", TrainData.Npy(mask, 64, Seq)), ("labels", TrainData.Npy(y, 64)));
        // Entries named like the inputs, stored in the other order.
        TrainData.Npz(_dir["named.npz"], ("attention_mask", TrainData.Npy(mask, 64, Seq)), ("input_ids", TrainData.Npy(ids, 64, Seq)), ("y", TrainData.Npy(y, 64)));
        File.WriteAllBytes(_dir["ids.npy"], TrainData.Npy(ids, 64, Seq));
        File.WriteAllBytes(_dir["mask.npy"], TrainData.Npy(mask, 64, Seq));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(y, 64));
        Models.SaveTensor(Models.Int64s("ids", [64, Seq], ids), _dir["ids.pb"]);
        Models.SaveTensor(Models.Int64s("mask", [64, Seq], mask), _dir["mask.pb"]);
        string[] run = ["--epochs", "2", "--val-split", "0.25", .. Common];
        AssertOk(Run(["train", _tokenModel, "--train", _dir["mapped.npz"], "--inputs", "input_ids=ids", "--inputs", "attention_mask=mask",
            "--npz-keys", "x,labels", "--report", _dir["a.json"], .. run]));
        AssertOk(Run(["train", _tokenModel, "--train", _dir["named.npz"], "--report", _dir["b.json"], .. run]));
        AssertOk(Run(["train", _tokenModel, "--train", $"input_ids={_dir["ids.npy"]},attention_mask={_dir["mask.npy"]}", "--train-labels", _dir["y.npy"],
            "--report", _dir["c.json"], .. run]));
        AssertOk(Run(["train", _tokenModel, "--train", $"attention_mask={_dir["mask.pb"]},input_ids={_dir["ids.pb"]}", "--train-labels", _dir["y.npy"],
            "--report", _dir["d.json"], .. run]));
        var a = TrainData.StepLosses(TrainData.Report(_dir["a.json"]));
        Assert.Equal(6, a.Length);   // 48 training examples, batches of 16, 2 epochs
        Assert.True(a[^1] < a[0], string.Join(", ", a));
        Assert.Equal(a, TrainData.StepLosses(TrainData.Report(_dir["b.json"])));
        Assert.Equal(a, TrainData.StepLosses(TrainData.Report(_dir["c.json"])));
        Assert.Equal(a, TrainData.StepLosses(TrainData.Report(_dir["d.json"])));
    }

    [Fact]
    public void EvalReadsEveryInputFromNpzOrFilesAlike()
    {
        var (ids, mask, y) = Tokens(40, 4);
        TrainData.Npz(_dir["d.npz"], ("input_ids", TrainData.Npy(ids, 40, Seq)), ("attention_mask", TrainData.Npy(mask, 40, Seq)), ("y", TrainData.Npy(y, 40)));
        File.WriteAllBytes(_dir["ids.npy"], TrainData.Npy(ids, 40, Seq));
        File.WriteAllBytes(_dir["mask.npy"], TrainData.Npy(mask, 40, Seq));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(y, 40));
        string Metrics(CliResult r) => r.Out[r.Out.IndexOf(": accuracy", StringComparison.Ordinal)..].Split(" (")[0];
        var npz = AssertOk(Run("eval", _tokenModel, "--data", _dir["d.npz"], "--threads", "1"));
        var files = AssertOk(Run("eval", _tokenModel, "--data", $"input_ids={_dir["ids.npy"]},attention_mask={_dir["mask.npy"]}", "--labels", _dir["y.npy"], "--threads", "1"));
        Assert.Equal(Metrics(npz), Metrics(files));
        Assert.Contains("40 examples", npz.Out);
    }

    [Fact]
    public void TwoFloatTowersAndAFloatNextToAnInt64InputTrainWithKfac()
    {
        var rng = new Random(5);
        float[] Floats(int n) => Enumerable.Range(0, n).Select(_ => (float)(2 * rng.NextDouble() - 1)).ToArray();
        var q = Floats(64 * 6);
        var item = Floats(64 * 5);
        var y = Enumerable.Range(0, 64).Select(i => q[i * 6] * item[i * 5] > 0 ? 1L : 0L).ToArray();
        TrainData.Npz(_dir["tt.npz"], ("query", TrainData.Npy(q, 64, 6)), ("item", TrainData.Npy(item, 64, 5)), ("y", TrainData.Npy(y, 64)));
        AssertOk(Run("train", Fixture("two_tower"), "--train", _dir["tt.npz"], "--epochs", "2", "--batch-size", "16", "--threads", "1", "--quiet", "--report", _dir["tt.json"]));
        Assert.All(TrainData.StepLosses(TrainData.Report(_dir["tt.json"])), l => Assert.True(double.IsFinite(l)));

        var tokens = Enumerable.Range(0, 64 * 4).Select(_ => (long)rng.Next(10)).ToArray();
        var x = Floats(64 * 3);
        var y2 = Enumerable.Range(0, 64).Select(i => (tokens[i * 4] >= 5 ? 1L : 0L) + (x[i * 3] > 0 ? 1 : 0)).ToArray();
        TrainData.Npz(_dir["fi.npz"], ("tokens", TrainData.Npy(tokens, 64, 4)), ("features", TrainData.Npy(x, 64, 3)), ("y", TrainData.Npy(y2, 64)));
        AssertOk(Run("train", Fixture("float_int"), "--train", _dir["fi.npz"], "--epochs", "2", "--batch-size", "16", "--threads", "1", "--quiet", "--report", _dir["fi.json"]));
        var losses = TrainData.StepLosses(TrainData.Report(_dir["fi.json"]));
        Assert.Equal(8, losses.Length);
        Assert.All(losses, l => Assert.True(double.IsFinite(l)));
    }

    [Fact]
    public void AnIdOutsideTheVocabularyNamesTheFileTheInputAndTheRow()
    {
        string bad = TokenNpz("bad.npz", 32, 6, "input_ids", "attention_mask", ids => ids[7 * Seq + 2] = Vocab);
        AssertUserError(Run("train", _tokenModel, "--train", bad, "--epochs", "1", "--quiet"),
            "bad.npz", "input_ids", "row 7", "id 12", "[0, 12)", "emb.weight");
        AssertUserError(Run("eval", _tokenModel, "--data", bad), "bad.npz", "input_ids", "row 7", "id 12");
    }

    [Fact]
    public void MinusOneIsRefusedRatherThanReadFromTheEndOfTheTable()
    {
        var (ids, mask, y) = Tokens(32, 7);
        ids[3 * Seq] = -1;
        File.WriteAllBytes(_dir["ids.npy"], TrainData.Npy(ids, 32, Seq));
        File.WriteAllBytes(_dir["mask.npy"], TrainData.Npy(mask, 32, Seq));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(y, 32));
        AssertUserError(Run("train", _tokenModel, "--train", $"input_ids={_dir["ids.npy"]},attention_mask={_dir["mask.npy"]}", "--train-labels", _dir["y.npy"], "--epochs", "1", "--quiet"),
            "ids.npy", "input_ids", "row 3", "id -1", "[0, 12)");
    }

    [Fact]
    public void FloatDataIsNeverCastIntoAnInt64Input()
    {
        var (ids, mask, y) = Tokens(32, 8);
        File.WriteAllBytes(_dir["ids.npy"], TrainData.Npy(ids.Select(v => (float)v).ToArray(), 32, Seq));
        File.WriteAllBytes(_dir["mask.npy"], TrainData.Npy(mask, 32, Seq));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(y, 32));
        AssertUserError(Run("train", _tokenModel, "--train", $"input_ids={_dir["ids.npy"]},attention_mask={_dir["mask.npy"]}", "--train-labels", _dir["y.npy"], "--epochs", "1", "--quiet"),
            "ids.npy", "input_ids", "float");
    }

    [Fact]
    public void AnInputWithoutDataIsNamed()
    {
        string npz = TokenNpz("d.npz", 32, 9);
        AssertUserError(Run("train", _tokenModel, "--train", npz, "--inputs", "input_ids=ids", "--quiet"),
            "no entry for model input 'attention_mask'", "--inputs attention_mask=ENTRY");
        AssertUserError(Run("train", _tokenModel, "--train", npz, "--inputs", "input_ids=ids,attention_mask=nope", "--quiet"),
            "--inputs", "no entry 'nope'", "attention_mask");
        AssertUserError(Run("train", _tokenModel, "--train", npz, "--inputs", "input_ids=ids,mask=mask", "--quiet"),
            "--inputs", "'mask' is not a data input", "attention_mask");
        var (ids, _, y) = Tokens(32, 9);
        File.WriteAllBytes(_dir["ids.npy"], TrainData.Npy(ids, 32, Seq));
        File.WriteAllBytes(_dir["y.npy"], TrainData.Npy(y, 32));
        AssertUserError(Run("train", _tokenModel, "--train", $"input_ids={_dir["ids.npy"]}", "--train-labels", _dir["y.npy"], "--quiet"),
            "--train", "no file for model input 'attention_mask'");
        AssertUserError(Run("train", _tokenModel, "--train", _dir["ids.npy"], "--train-labels", _dir["y.npy"], "--quiet"),
            "ids.npy", "2 data inputs", "input_ids=FILE,attention_mask=FILE");
        TrainData.Csv(_dir["d.csv"], 32, 1);
        AssertUserError(Run("train", _tokenModel, "--train", _dir["d.csv"], "--quiet"), "d.csv", "CSV", "2 data inputs");
    }
}
