using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Graph.Tests.ModelIO;

/// <summary>Pruning.FoldOutputIdentities: graph outputs named by an Identity take the copied tensor's place.</summary>
public class PruningTests
{
    private static NodeProto Node(string op, string[] inputs, string output)
    {
        var n = new NodeProto { OpType = op, Name = op + "_" + output };
        n.Input.Add(inputs);
        n.Output.Add(output);
        return n;
    }

    private static GraphProto Graph(IEnumerable<NodeProto> nodes, string[] inputs, string[] outputs)
    {
        var g = new GraphProto { Name = "g" };
        g.Node.Add(nodes);
        foreach (var i in inputs) g.Input.Add(ValueInfos.Tensor(i, (int)TensorProto.Types.DataType.Float, [2]));
        foreach (var o in outputs) g.Output.Add(ValueInfos.Tensor(o, (int)TensorProto.Types.DataType.Float, [2]));
        return g;
    }

    [Fact]
    public void AnIdentityThatNamesAnOutputIsFoldedIntoItsProducerOnlyWhereThatIsSafe()
    {
        var g = Graph(
        [
            Node("Neg", ["x"], "t"),
            Node("Identity", ["t"], "out1"),       // folded: Neg now writes out1
            Node("Identity", ["t"], "out2"),       // t renamed once: this one stays and reads out1
            Node("Exp", ["t"], "u"),               // an internal reader of t reads out1
            Node("Identity", ["u"], "mid"),        // not a graph output: stays
            Node("Identity", ["x"], "out3"),       // a graph input: stays
            Node("Identity", ["u"], "out4"),       // u is itself a graph output: stays
            Node("Sin", ["x"], "v"),
            Node("Identity", ["v"], "w"),          // a chain: Sin writes out5 after two folds
            Node("Identity", ["w"], "out5"),
        ], ["x"], ["out1", "out2", "u", "mid", "out3", "out4", "out5"]);
        Pruning.FoldOutputIdentities(g);
        Assert.Equal(["Neg", "Identity", "Exp", "Identity", "Identity", "Identity", "Sin"], g.Node.Select(n => n.OpType));
        Assert.Equal("out5", g.Node[^1].Output[0]);
        Assert.Equal("out1", g.Node[0].Output[0]);
        Assert.Equal(["out1"], g.Node[1].Input);
        Assert.Equal("out2", g.Node[1].Output[0]);
        Assert.Equal(["out1"], g.Node[2].Input);
        Assert.Equal(["u", "x", "u"], g.Node.Skip(3).Take(3).Select(n => n.Input[0]));
    }

    [Theory]
    [InlineData("mlp_opset17", false)]
    [InlineData("mlp_opset17", true)]
    [InlineData("autoencoder_bce_opset17", true)]
    [InlineData("cnn_opset13", false)]
    public void TrainingGraphsCopyNoGradientIntoItsOutput(string fixture, bool taps)
    {
        var f = Fixture.Load(fixture);
        var tg = TrainingGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { LayerTaps = taps });
        var outputs = tg.Model.Graph.Output.Select(o => o.Name).ToHashSet();
        // Only the taps of graph inputs (a layer reading the data) stay copies.
        var inputs = tg.Model.Graph.Input.Select(i => i.Name).ToHashSet();
        var copies = tg.Model.Graph.Node.Where(n => n.OpType == "Identity" && outputs.Contains(n.Output[0]) && !inputs.Contains(n.Input[0]))
            .Select(n => n.Output[0]).ToArray();
        Assert.Empty(copies);
        // Every gradient the manifest names is produced by the node that computes it.
        var produced = tg.Model.Graph.Node.SelectMany(n => n.Output).ToHashSet();
        Assert.All(tg.Manifest.Parameters, p => Assert.Contains(p.Gradient, produced));
    }
}
