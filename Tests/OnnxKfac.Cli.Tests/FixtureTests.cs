using System.Globalization;
using System.Text.Json;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>
/// The commands on PyTorch-exported fixtures (tools/fixtures): `grad` reproduces PyTorch's
/// loss and autograd gradients; `inspect` and `prepare` handle every fixture.
/// </summary>
public class FixtureTests
{
    private static string Root => Path.Combine(AppContext.BaseDirectory, "Fixtures");

    public static IEnumerable<object[]> All() =>
        Directory.GetDirectories(Root).Select(Path.GetFileName).Order(StringComparer.Ordinal).Select(n => new object[] { n! });

    private static IReadOnlyList<Graph.Training.BrokenTie> BrokenTies(string dir) =>
        Graph.Training.Ties.Detect(OnnxModelIO.Load(Path.Combine(dir, "model.onnx"))).Broken;

    /// <summary>The loss options of a fixture as command-line arguments.</summary>
    private static List<string> LossArgs(JsonElement r)
    {
        var args = new List<string> { "--loss", r.GetProperty("loss_kind").GetString()!, "--output", r.GetProperty("output").GetString()! };
        if (r.TryGetProperty("loss_options", out var o) && o.ValueKind == JsonValueKind.Object)
        {
            if (o.TryGetProperty("weight", out var w))
                args.AddRange(["--class-weights", string.Join(",", w.EnumerateArray().Select(x => x.GetDouble().ToString("R", CultureInfo.InvariantCulture)))]);
            if (o.TryGetProperty("ignore_index", out var ii)) args.AddRange(["--ignore-index", ii.GetInt64().ToString(CultureInfo.InvariantCulture)]);
            if (o.TryGetProperty("label_smoothing", out var ls)) args.AddRange(["--label-smoothing", ls.GetDouble().ToString("R", CultureInfo.InvariantCulture)]);
        }
        return args;
    }

    [Theory]
    [MemberData(nameof(All))]
    public void GradMatchesPyTorch(string name)
    {
        string dir = Path.Combine(Root, name);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")));
        var r = doc.RootElement;
        using var tmp = new TempDir();
        var args = new List<string> { "grad", Path.Combine(dir, "model.onnx") };
        foreach (var input in r.GetProperty("inputs").EnumerateObject())
            args.AddRange(["--input", $"{input.Name}={Path.Combine(dir, input.Value.GetString()!)}"]);
        args.AddRange(["--target", Path.Combine(dir, r.GetProperty("target").GetString()!)]);
        args.AddRange(LossArgs(r));
        args.AddRange(["-o", tmp.Path]);
        // The references are per initializer: a tie the exporter broke (tied_folded) is kept
        // apart with --untie, so each copy gets its own partial derivative.
        foreach (var b in BrokenTies(dir)) args.AddRange(["--untie", b.Copy]);
        AssertOk(Run([.. args]));

        using var lossDoc = JsonDocument.Parse(File.ReadAllText(tmp["loss.json"]));
        double loss = lossDoc.RootElement.GetProperty("loss").GetDouble();
        double expected = r.GetProperty("loss").GetDouble();
        Assert.True(Math.Abs(loss - expected) <= 1e-5 * Math.Max(1, Math.Abs(expected)), $"loss {loss} vs PyTorch {expected}");

        using var index = JsonDocument.Parse(File.ReadAllText(tmp["index.json"]));
        var files = index.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        var reference = r.GetProperty("gradients").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        Assert.Equal(reference.Keys.Order(StringComparer.Ordinal), files.Keys.Order(StringComparer.Ordinal));
        foreach (var (param, refFile) in reference)
        {
            var want = TensorProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(dir, refFile)));
            var got = Models.ReadTensor(tmp[files[param]]);
            Assert.Equal(param, got.Name);
            Assert.Equal(want.Dims, got.Dims);
            Reference.AssertClose(TensorData.ToDoubles(want), got, $"{name}: gradient of '{param}'");
        }
    }

    [Theory]
    [MemberData(nameof(All))]
    public void InspectAndPrepareHandleEveryFixture(string name)
    {
        string dir = Path.Combine(Root, name);
        string model = Path.Combine(dir, "model.onnx");
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")));
        var r = doc.RootElement;
        var inspect = AssertOk(Run("inspect", model, "--json"));
        using var report = JsonDocument.Parse(inspect.Out);
        var root = report.RootElement;
        // Ops without a rule may only sit on integer paths (the packed LSTM's length sorting: TopK, ReduceProd).
        Assert.DoesNotContain(root.GetProperty("ops_without_gradient").EnumerateArray(), o => o.GetProperty("on_gradient_path").GetBoolean());
        // By default a broken tie trains as one parameter: its copy is not listed.
        var copies = BrokenTies(dir).Select(b => b.Copy).ToHashSet();
        Assert.Equal(r.GetProperty("gradients").EnumerateObject().Select(p => p.Name).Where(n => !copies.Contains(n)).Order(StringComparer.Ordinal),
            root.GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()!).Order(StringComparer.Ordinal));
        Assert.True(root.GetProperty("layers").GetArrayLength() > 0);
        AssertOk(Run("inspect", model)); // the table form too

        using var tmp = new TempDir();
        AssertOk(Run(["prepare", model, .. LossArgs(r), "--sampled-fisher", "--conv-patches", "-o", tmp["training.onnx"]]));
        var manifest = Graph.Training.TrainingManifest.FromJson(File.ReadAllText(tmp["training.manifest.json"]), name);
        Assert.NotNull(manifest.Fisher);
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(tmp["training.onnx"]);
        Assert.Contains(manifest.Loss.Loss, session.OutputNames);
    }
}
