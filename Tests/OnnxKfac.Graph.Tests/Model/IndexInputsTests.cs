using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;

namespace OnnxKfac.Graph.Tests.ModelIO;

/// <summary>Which lookup tables an integer input indexes: Gathers into initializers, through ops that keep the ids.</summary>
public class IndexInputsTests
{
    private static NodeProto Node(string op, string name, string[] inputs, string output, params AttributeProto[] attributes)
    {
        var n = new NodeProto { OpType = op, Name = name };
        n.Input.Add(inputs);
        n.Output.Add(output);
        n.Attribute.Add(attributes);
        return n;
    }

    [Fact]
    public void GathersIntoInitializersAreFoundThroughReshapeAndIntegerCastsOnly()
    {
        var nodes = new[]
        {
            Node("Reshape", "flat", ["ids", "shape"], "ids_flat"),
            Node("Gather", "emb", ["table", "ids_flat"], "rows"),                                   // [7, 3] rows: 7
            Node("Cast", "to_int32", ["ids"], "ids32", Attributes.Int("to", (long)TensorProto.Types.DataType.Int32)),
            Node("Gather", "cols", ["wide", "ids32"], "picked", Attributes.Int("axis", 1)),          // [4, 9] axis 1: 9
            Node("Cast", "to_float", ["ids"], "idsf", Attributes.Int("to", (long)TensorProto.Types.DataType.Float)),
            Node("Mul", "scale", ["idsf", "maskf"], "y"),
            Node("Gather", "by_data", ["data_table", "ids"], "z"),                                   // a data input, not an initializer
        };
        var inputs = new Dictionary<string, TestTensor>
        {
            ["ids"] = TestTensor.Int64([2, 3], 0, 1, 2, 3, 4, 5),
            ["maskf"] = TestTensor.Float([2, 3], new double[6]),
            ["data_table"] = TestTensor.Float([5, 2], new double[10]),
        };
        var constants = new Dictionary<string, TestTensor>
        {
            ["shape"] = TestTensor.Int64([1], -1),
            ["table"] = TestTensor.Float([7, 3], new double[21]),
            ["wide"] = TestTensor.Float([4, 9], new double[36]),
        };
        var model = TestModels.Graph(17, nodes, inputs, constants, ["rows", "picked", "y", "z"]);
        var limits = IndexInputs.Find(new GraphIndex(model), "ids");
        Assert.Equal([("table", 7L, "node 'emb' (Gather)"), ("wide", 9L, "node 'cols' (Gather)")],
            limits.Select(l => (l.Table, l.Size, l.Node)).OrderBy(l => l.Table, StringComparer.Ordinal));
        Assert.Empty(IndexInputs.Find(new GraphIndex(model), "maskf"));
    }
}
