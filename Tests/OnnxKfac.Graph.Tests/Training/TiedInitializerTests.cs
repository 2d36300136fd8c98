using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Graph.Tests.Training;

public class TiedInitializerTests
{
    /// <summary>y = (x W) W through two Identity copies of one initializer, as exporters tie weights.</summary>
    private static ModelProto TiedModel()
    {
        var nodes = new[]
        {
            new NodeProto { OpType = "Identity", Name = "tie1", Input = { "w" }, Output = { "w1" } },
            new NodeProto { OpType = "Identity", Name = "tie2", Input = { "w" }, Output = { "w2" } },
            new NodeProto { OpType = "MatMul", Name = "mm1", Input = { "x", "w1" }, Output = { "h" } },
            new NodeProto { OpType = "Tanh", Name = "act", Input = { "h" }, Output = { "t" } },
            new NodeProto { OpType = "MatMul", Name = "mm2", Input = { "t", "w2" }, Output = { "y" } },
        };
        var w = TestTensor.Random(1, [3, 3], 5);
        var model = TestModels.Graph(17, nodes, new Dictionary<string, TestTensor> { ["x"] = TestTensor.Random(1, [2, 3], 6) },
            new Dictionary<string, TestTensor> { ["w"] = w }, ["y"]);
        return model;
    }

    [Fact]
    public void TiedInitializerGetsTheSumOfBothUsesAndTwoLayers()
    {
        var model = TiedModel();
        var ties = ParameterSelection.FindTies(new GraphIndex(model));
        var tie = Assert.Single(ties);
        Assert.Equal("w", tie.Name);
        Assert.Equal(2, tie.IdentityCopies);
        Assert.Equal(2, tie.Readers.Count);

        var tg = TrainingGraphBuilder.Build(model, new TrainingGraphOptions(new LossOptions(LossKind.Mse)));
        var p = Assert.Single(tg.Manifest.Parameters);
        Assert.Equal("w", p.Name);
        Assert.Equal(2, p.Uses);
        Assert.Equal(2, tg.Manifest.Layers.Count(l => l.Weight == "w"));

        // The summed gradient equals finite differences of the loss in w.
        var x = TestTensor.Random(1, [2, 3], 6);
        var target = TestTensor.Random(1, [2, 3], 7);
        var w0 = TestTensor.FromProto(model.Graph.Initializer[0]);
        using var ort = new Ort(tg.Model);
        double Loss(TestTensor w) => ort.Run(new Dictionary<string, TestTensor> { ["x"] = x, ["w"] = w, [tg.Manifest.Loss.Target] = target })[tg.Manifest.Loss.Loss].Data[0];
        var grad = ort.Run(new Dictionary<string, TestTensor> { ["x"] = x, ["w"] = w0, [tg.Manifest.Loss.Target] = target })[p.Gradient].Data;
        for (int i = 0; i < 9; i++)
        {
            double h = 1e-2;
            double numeric = (Loss(w0.With(i, w0.Data[i] + h)) - Loss(w0.With(i, w0.Data[i] - h))) / (2 * h);
            Assert.True(Math.Abs(numeric - grad[i]) < 2e-3, $"dw[{i}] {grad[i]} vs {numeric}");
        }
    }
}

public class InitializersAsInputsTests
{
    [Fact]
    public void InitializersListedAsGraphInputsStillTrain()
    {
        // torch.onnx.export(keep_initializers_as_inputs=True) lists every weight as a graph input too.
        var f = Fixture.Load("mlp_opset13");
        var model = f.Model.Clone();
        foreach (var t in model.Graph.Initializer)
            model.Graph.Input.Add(ValueInfos.Tensor(t.Name, t.DataType, t.Dims.ToArray()));
        var tg = TrainingGraphBuilder.Build(model, new TrainingGraphOptions(f.LossOptions));
        Assert.Equal(f.Gradients.Keys.Order(), tg.Manifest.Parameters.Select(p => p.Name).Order());
        Assert.Equal(tg.Model.Graph.Input.Count, tg.Model.Graph.Input.Select(i => i.Name).Distinct().Count());
        Assert.Single(tg.Manifest.Inputs, i => i.Role == TensorRole.Data);
        using var ort = new Ort(tg.Model);
        var outs = ort.Run(new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target });
        Assert.Equal(f.Loss, outs[tg.Manifest.Loss.Loss].Data[0], 5);
    }
}
