using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Tests.Support;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Graph.Tests.Training;

/// <summary>The layer matcher is a table of patterns keyed by op type, open like the gradient registry.</summary>
public class LayerPatternsTests
{
    [Fact]
    public void DefaultTableHasOnePatternPerLayerOp() =>
        Assert.Equal(["Conv", "Gather", "Gemm", "MatMul"], LayerPatterns.Default.OpTypes);

    [Fact]
    public void RegisteringAnOpTwiceIsAnError()
    {
        var table = LayerPatterns.CreateDefault();
        var e = Assert.Throws<InvalidOperationException>(() => table.Add("Conv", (_, _) => LayerMatch.None));
        Assert.Contains("'Conv'", e.Message);
    }

    [Fact]
    public void TheTableDecidesWhichNodesAreLayers()
    {
        var f = Fixture.Load("cnn_opset17");
        var all = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions)).Manifest.Layers;
        Assert.Contains(all, l => l.Kind == LayerKind.Conv);
        Assert.Contains(all, l => l.Kind == LayerKind.Dense);

        var denseOnly = new LayerPatterns();
        foreach (var op in new[] { "Gemm", "MatMul" }) denseOnly.Add(op, LayerPatterns.Default.Find(op)!);
        var layers = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { LayerPatterns = denseOnly }).Manifest.Layers;
        Assert.Equal(all.Where(l => l.Kind == LayerKind.Dense).Select(l => l.Name), layers.Select(l => l.Name));
    }

    [Fact]
    public void AReplacedPatternCanRejectWithAReason()
    {
        var f = Fixture.Load("cnn_opset17");
        var table = LayerPatterns.CreateDefault();
        table.Replace("Conv", (_, _) => LayerMatch.Reject("no convs today"));
        var model = f.Model.Clone();
        var index = new GraphIndex(model);
        var parameters = model.Graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var (layers, rejected) = LayerMatcher.Match(index, ShapeInference.Infer(model), parameters, table);
        Assert.DoesNotContain(layers, l => l.Kind == LayerKind.Conv);
        Assert.NotEmpty(rejected);
        Assert.All(rejected, r => Assert.Equal(("Conv", "no convs today"), (r.OpType, r.Reason)));
    }
}
