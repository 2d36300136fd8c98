using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Tests.Support;

/// <summary>Builds tiny ONNX models for tests.</summary>
public static class TestModels
{
    /// <summary>
    /// A model of one node. <paramref name="inputs"/> become graph inputs (with their
    /// shapes), <paramref name="constants"/> initializers; "" in <paramref name="inputOrder"/>
    /// leaves an optional input out.
    /// </summary>
    public static ModelProto SingleOp(string opType, int opset, IReadOnlyList<string> inputOrder,
        IReadOnlyDictionary<string, TestTensor> inputs, IReadOnlyDictionary<string, TestTensor>? constants = null,
        int outputs = 1, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = opType.ToLowerInvariant() + "0" };
        node.Input.Add(inputOrder);
        for (int k = 0; k < outputs; k++) node.Output.Add($"y{k}");
        node.Attribute.Add(attributes);
        return Graph(opset, [node], inputs, constants, Enumerable.Range(0, outputs).Select(k => $"y{k}").ToArray());
    }

    public static ModelProto Graph(int opset, IEnumerable<NodeProto> nodes, IReadOnlyDictionary<string, TestTensor> inputs,
        IReadOnlyDictionary<string, TestTensor>? constants, IReadOnlyList<string> outputs)
    {
        var g = new GraphProto { Name = "test" };
        g.Node.Add(nodes);
        foreach (var (name, t) in inputs) g.Input.Add(ValueInfos.Tensor(name, t.ElemType, t.Shape));
        foreach (var (name, t) in constants ?? new Dictionary<string, TestTensor>()) g.Initializer.Add(ToProto(name, t));
        foreach (var o in outputs) g.Output.Add(new ValueInfoProto { Name = o });
        var model = new ModelProto { IrVersion = 8, ProducerName = "OnnxKfac.Tests", Graph = g };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        // Give the outputs types and shapes from static inference, as exporters do.
        var infos = ShapeInference.Infer(model);
        foreach (var vi in g.Output)
            if (infos.TryGetValue(vi.Name, out var info)) vi.Type = ValueInfos.Tensor(vi.Name, info.ElemType, info.Shape).Type;
        return model;
    }

    public static TensorProto ToProto(string name, TestTensor t) => t.ElemType switch
    {
        (int)TensorProto.Types.DataType.Double => TensorData.FromDoubles(name, t.Shape, t.Data),
        (int)TensorProto.Types.DataType.Float => TensorData.FromFloats(name, t.Shape, t.Data.Select(x => (float)x).ToArray()),
        (int)TensorProto.Types.DataType.Int64 => TensorData.FromInt64s(name, t.Shape, t.Data.Select(x => (long)x).ToArray()),
        _ => throw new NotSupportedException(),
    };
}
