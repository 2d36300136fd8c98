using System.Text.Json;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Tests.Support;

/// <summary>A PyTorch-exported fixture (tools/fixtures/export_fixtures.py) with its autograd references.</summary>
public sealed class Fixture
{
    private Fixture(string name, string dir)
    {
        Name = name;
        Dir = dir;
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")));
        var root = doc.RootElement;
        Model = OnnxModelIO.Load(Path.Combine(dir, "model.onnx"));
        Output = root.GetProperty("output").GetString()!;
        Loss = root.GetProperty("loss").GetDouble();
        var kind = LossOptions.ParseKind(root.GetProperty("loss_kind").GetString()!);
        var options = new LossOptions(kind) { Output = Output };
        if (root.TryGetProperty("loss_options", out var lo))
        {
            if (lo.TryGetProperty("weight", out var w)) options = options with { ClassWeights = w.EnumerateArray().Select(x => (float)x.GetDouble()).ToArray() };
            if (lo.TryGetProperty("ignore_index", out var ii)) options = options with { IgnoreIndex = ii.GetInt64() };
            if (lo.TryGetProperty("label_smoothing", out var ls)) options = options with { LabelSmoothing = ls.GetDouble() };
        }
        LossOptions = options;
        foreach (var p in root.GetProperty("inputs").EnumerateObject())
            Inputs[p.Name] = Read(p.Value.GetString()!);
        Target = Read(root.GetProperty("target").GetString()!);
        foreach (var p in root.GetProperty("gradients").EnumerateObject())
            Gradients[p.Name] = Read(p.Value.GetString()!);
        NonTrainable = root.GetProperty("non_trainable").EnumerateArray().Select(x => x.GetString()!).ToArray();
    }

    public string Name { get; }
    public string Dir { get; }
    public ModelProto Model { get; }
    public string Output { get; }
    public double Loss { get; }
    public LossOptions LossOptions { get; }
    public Dictionary<string, TestTensor> Inputs { get; } = new();
    public TestTensor Target { get; }
    public Dictionary<string, TestTensor> Gradients { get; } = new(StringComparer.Ordinal);
    public IReadOnlyList<string> NonTrainable { get; }

    public static string Root => Path.Combine(AppContext.BaseDirectory, "Fixtures");

    public static IEnumerable<object[]> All() =>
        Directory.GetDirectories(Root).Select(Path.GetFileName).Order(StringComparer.Ordinal).Select(n => new object[] { n! });

    public static Fixture Load(string name) => new(name, Path.Combine(Root, name));

    private TestTensor Read(string file)
    {
        var t = TensorProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(Dir, file)));
        return new TestTensor(t.DataType, t.Dims.ToArray(), TensorData.ToDoubles(t));
    }
}
