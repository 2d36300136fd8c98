using System.Globalization;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Graph.Model;
using OnnxKfac.Toolkit.Data;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>onnx-kfac predict on a model trained and exported by train --export; eval's classifier metrics.</summary>
public sealed class PredictTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _tuned;
    private readonly float[] _x;
    private readonly long[] _y;
    private readonly string _data;

    public PredictTests()
    {
        string model = Models.Save(Models.Linear2(), _dir["linear2.onnx"]);
        string train = TrainData.Csv(_dir["train.csv"], 96, 1);
        AssertOk(Run("train", model, "--train", train, "--epochs", "3", "--batch-size", "8", "--threads", "1", "--quiet", "--export", _dir["tuned.onnx"]));
        _tuned = _dir["tuned.onnx"];
        (_x, _y) = TrainData.Make(30, 5);
        _data = TrainData.Csv(_dir["data.csv"], _x, _y);
    }

    public void Dispose() => _dir.Dispose();

    /// <summary>The exported model's logits, computed here from its initializers (x·W1 + b1)·scale·W2 + b2.</summary>
    private float[] Logits(int n)
    {
        var g = OnnxModelIO.Load(_tuned).Graph;
        float[] W(string name) => TensorData.ToFloats(g.Initializer.Single(t => t.Name == name));
        var (w1, b1, w2, b2, s) = (W("fc1.weight"), W("fc1.bias"), W("fc2.weight"), W("fc2.bias"), W("onnx::Mul_7")[0]);
        var z = new float[n * 3];
        for (int i = 0; i < n; i++)
        {
            var h = new float[5];
            for (int j = 0; j < 5; j++)
            {
                float a = b1[j];
                for (int f = 0; f < 4; f++) a += _x[i * 4 + f] * w1[f * 5 + j];
                h[j] = a * s;
            }
            for (int c = 0; c < 3; c++)
            {
                float a = b2[c];
                for (int j = 0; j < 5; j++) a += h[j] * w2[j * 3 + c];
                z[i * 3 + c] = a;
            }
        }
        return z;
    }

    [Fact]
    public void CsvHoldsEachExamplesClassProbabilityAndOutputsOfTheExportedModel()
    {
        var r = AssertOk(Run("predict", _tuned, "--data", _data, "-o", _dir["p.csv"]));
        Assert.Contains("wrote", r.Out);
        var lines = File.ReadAllLines(_dir["p.csv"]);
        Assert.Equal("example,class,probability,output_0,output_1,output_2", lines[0]);
        Assert.Equal(31, lines.Length);
        var z = Logits(30);
        int correct = 0;
        for (int i = 0; i < 30; i++)
        {
            var cells = lines[i + 1].Split(',').Select(c => double.Parse(c, CultureInfo.InvariantCulture)).ToArray();
            Assert.Equal(i, cells[0]);
            var row = z.AsSpan(i * 3, 3).ToArray();
            int arg = Array.IndexOf(row, row.Max());
            Assert.Equal(arg, cells[1]);
            double p = 1 / row.Sum(v => Math.Exp(v - row[arg]));
            Assert.Equal(p, cells[2], 5);
            for (int c = 0; c < 3; c++) Assert.Equal(row[c], cells[3 + c], 4);
            if (arg == _y[i]) correct++;
        }
        // The same classes eval counts as right.
        var e = AssertOk(Run("eval", _tuned, "--data", _data, "--report", _dir["e.json"]));
        Assert.Equal(correct / 30.0, TrainData.Report(_dir["e.json"]).GetProperty("metrics").GetProperty("accuracy").GetDouble(), 9);
    }

    [Fact]
    public void NpyHoldsTheOutputsOrTheClassesOrTheProbabilities()
    {
        AssertOk(Run("predict", _tuned, "--data", _data, "-o", _dir["o.npy"]));
        var outputs = Npy.ReadTensor(_dir["o.npy"]);
        Assert.Equal([30L, 3], outputs.Shape);
        var z = Logits(30);
        for (int k = 0; k < z.Length; k++) Assert.Equal(z[k], outputs.AsFloats()[k], 4);

        AssertOk(Run("predict", _tuned, "--data", _data, "-o", _dir["c.npy"], "--output-kind", "classes"));
        var classes = Npy.ReadTensor(_dir["c.npy"]);
        Assert.Equal([30L], classes.Shape);
        for (int i = 0; i < 30; i++)
        {
            var row = z.AsSpan(i * 3, 3).ToArray();
            Assert.Equal(Array.IndexOf(row, row.Max()), classes.AsInt64s()[i]);
        }

        AssertOk(Run("predict", _tuned, "--data", _data, "-o", _dir["p.npy"], "--output-kind", "probabilities"));
        var p = Npy.ReadTensor(_dir["p.npy"]).AsFloats().ToArray();
        for (int i = 0; i < 30; i++) Assert.Equal(1.0, p[(i * 3)..(i * 3 + 3)].Sum(), 5);
    }

    [Fact]
    public void UnlabelledCsvAndFeatureOnlyNpyGiveTheSameOutputs()
    {
        AssertOk(Run("predict", _tuned, "--data", _data, "-o", _dir["a.npy"]));
        // A CSV of the four feature columns alone, and the features as .npy with no labels file.
        File.WriteAllLines(_dir["x.csv"], Enumerable.Range(0, 30).Select(i =>
            string.Join(",", _x[(i * 4)..(i * 4 + 4)].Select(v => v.ToString("R", CultureInfo.InvariantCulture)))));
        File.WriteAllBytes(_dir["x.npy"], TrainData.Npy(_x, 30, 4));
        AssertOk(Run("predict", _tuned, "--data", _dir["x.csv"], "-o", _dir["b.npy"]));
        AssertOk(Run("predict", _tuned, "--data", _dir["x.npy"], "-o", _dir["c.npy"]));
        var a = Npy.ReadTensor(_dir["a.npy"]).AsFloats().ToArray();
        Assert.Equal(a, Npy.ReadTensor(_dir["b.npy"]).AsFloats().ToArray());
        Assert.Equal(a, Npy.ReadTensor(_dir["c.npy"]).AsFloats().ToArray());
    }

    [Fact]
    public void ScaleAppliesAsInTraining()
    {
        // Features ×10 on disk and --scale 10 give the outputs of the plain features.
        File.WriteAllBytes(_dir["x.npy"], TrainData.Npy(_x, 30, 4));
        File.WriteAllBytes(_dir["x10.npy"], TrainData.Npy(_x.Select(v => v * 10).ToArray(), 30, 4));
        AssertOk(Run("predict", _tuned, "--data", _dir["x.npy"], "-o", _dir["a.npy"]));
        AssertOk(Run("predict", _tuned, "--data", _dir["x10.npy"], "--scale", "10", "-o", _dir["b.npy"]));
        var a = Npy.ReadTensor(_dir["a.npy"]).AsFloats().ToArray();
        var b = Npy.ReadTensor(_dir["b.npy"]).AsFloats().ToArray();
        for (int k = 0; k < a.Length; k++) Assert.Equal(a[k], b[k], 5);
    }

    [Fact]
    public void AnUnwritableOutputIsRefusedBeforeRunningNamingThePath()
    {
        File.WriteAllText(_dir["file"], "not a folder");
        string bad = Path.Combine(_dir["file"], "p.csv");
        AssertUserError(Run("predict", _tuned, "--data", _data, "-o", bad), bad, "cannot write there");
        // Checked before the data is even read: a missing data file is not what fails.
        AssertUserError(Run("predict", _tuned, "--data", _data, "-o", _dir["p.txt"]), "p.txt", ".npy or .csv");
        AssertUserError(Run("predict", _tuned, "--data", _data, "-o", _dir["folder"] + "/"), "folder");
        AssertUserError(Run("predict", _tuned, "--data", _data, "-o", _dir["r.npy"], "--loss", "mse", "--output-kind", "classes"), "--output-kind", "needs a classifier");
        AssertUserError(Run("predict", _tuned, "--data", _dir["missing.csv"], "-o", _dir["r.npy"]), "missing.csv", "no such file");
        Assert.False(File.Exists(bad));
    }

    [Fact]
    public void EvalReportsMacroF1TopKAndTheConfusionMatrix()
    {
        var r = AssertOk(Run("eval", _tuned, "--data", _data, "--top-k", "2", "--report", _dir["e.json"], "--fail-if", "macro_f1<0", "--fail-if", "top_k_accuracy<0"));
        Assert.Contains("macro F1 ", r.Out);
        Assert.Contains("top-2 accuracy ", r.Out);
        Assert.Contains("confusion matrix (rows: true class, columns: predicted)", r.Out);
        var report = TrainData.Report(_dir["e.json"]);
        var rows = report.GetProperty("confusion_matrix").EnumerateArray().Select(row => row.EnumerateArray().Select(c => c.GetInt64()).ToArray()).ToArray();
        Assert.Equal(3, rows.Length);
        Assert.Equal(30, rows.Sum(row => row.Sum()));
        for (int t = 0; t < 3; t++) Assert.Equal(_y.Count(y => y == t), rows[t].Sum());   // rows are the true classes
        var metrics = report.GetProperty("metrics");
        Assert.Equal(rows.Select((row, t) => row[t]).Sum() / 30.0, metrics.GetProperty("accuracy").GetDouble(), 9);
        double f1 = Enumerable.Range(0, 3).Average(c => 2.0 * rows[c][c] / (rows[c].Sum() + rows.Sum(row => row[c])));
        Assert.Equal(f1, metrics.GetProperty("macro_f1").GetDouble(), 9);
        Assert.True(metrics.GetProperty("top_k_accuracy").GetDouble() >= metrics.GetProperty("accuracy").GetDouble());

        AssertUserError(Run("eval", _tuned, "--data", _data, "--top-k", "4"), "--top-k", "4 is more than the model's 3 classes");
        AssertUserError(Run("eval", _tuned, "--data", _data, "--fail-if", "top_k_accuracy<0.5"), "top_k_accuracy", "--top-k");
    }
}
