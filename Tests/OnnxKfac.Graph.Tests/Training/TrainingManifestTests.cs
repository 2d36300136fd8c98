using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Tests.Support;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Graph.Tests.Training;

/// <summary>The manifest lists each layer as the matcher found it, with the names of its outputs in the graph.</summary>
public class TrainingManifestTests
{
    private static TrainingGraph Build(string fixture) =>
        TrainingGraphBuilder.Build(Fixture.Load(fixture).Model, new TrainingGraphOptions(Fixture.Load(fixture).LossOptions)
        {
            SampledFisher = true, ConvPatches = true, FactorStatistics = true,
        });

    [Fact]
    public void LayersKeepTheModelTensorsAndNameTheirOutputs()
    {
        var tg = Build("cnn_opset17");
        var outputs = tg.Model.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var modelTensors = Fixture.Load("cnn_opset17").Model.Graph.Node.SelectMany(n => n.Input.Concat(n.Output)).ToHashSet(StringComparer.Ordinal);
        foreach (var l in tg.Manifest.Layers)
        {
            Assert.Contains(l.Input, modelTensors);
            Assert.Contains(l.PreActivation, modelTensors);
            var o = l.Outputs;
            foreach (var name in new[] { o.Input, o.PreactivationGradient, o.SampledPreactivationGradient, o.FactorA, o.FactorG })
                Assert.Contains(name!, outputs);
            Assert.Equal(l.Kind == LayerKind.Conv, o.Patches is not null);
            Assert.Equal(l.Conv?.Group ?? 1, l.Groups);
        }
    }

    [Fact]
    public void JsonRoundTripsAndNamesItsFormat()
    {
        string json = Build("cnn_opset17").Manifest.ToJson();
        Assert.Contains($"\"format\": \"{TrainingManifest.CurrentFormat}\"", json);
        Assert.Equal(json, TrainingManifest.FromJson(json, "m").ToJson());
        var e = Assert.Throws<OnnxKfacException>(() => TrainingManifest.FromJson(json.Replace(TrainingManifest.CurrentFormat, "onnx-kfac/training-graph/1"), "m"));
        Assert.Contains("expected 'onnx-kfac/training-graph/2'", e.Message);
    }
}
