using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Model;

/// <summary>
/// Who produces and who consumes each tensor of a graph, plus the initializers and the
/// opset. Built once over a graph that is not changed while the index is in use.
/// </summary>
public sealed class GraphIndex
{
    private readonly Dictionary<string, NodeProto> _producer = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<NodeProto>> _consumers = new(StringComparer.Ordinal);
    private readonly Dictionary<NodeProto, int> _order = new(ReferenceEqualityComparer.Instance);

    public GraphIndex(ModelProto model)
    {
        Model = model;
        Graph = model.Graph;
        Opset = OpsetOf(model);
        foreach (var t in Graph.Initializer) Initializers[t.Name] = t;
        foreach (var i in Graph.Input) GraphInputs[i.Name] = i;
        for (int k = 0; k < Graph.Node.Count; k++)
        {
            var n = Graph.Node[k];
            _order[n] = k;
            foreach (var o in n.Output) if (o.Length > 0) _producer[o] = n;
            foreach (var i in n.Input)
            {
                if (i.Length == 0) continue;
                if (!_consumers.TryGetValue(i, out var list)) _consumers[i] = list = [];
                if (list.Count == 0 || !ReferenceEquals(list[^1], n)) list.Add(n);
            }
        }
    }

    public ModelProto Model { get; }
    public GraphProto Graph { get; }

    /// <summary>The default-domain (ai.onnx) opset version.</summary>
    public int Opset { get; }

    public Dictionary<string, TensorProto> Initializers { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, ValueInfoProto> GraphInputs { get; } = new(StringComparer.Ordinal);

    public NodeProto? Producer(string tensor) => _producer.GetValueOrDefault(tensor);

    public IReadOnlyList<NodeProto> Consumers(string tensor) =>
        _consumers.TryGetValue(tensor, out var l) ? l : [];

    /// <summary>Position of the node in the (topologically sorted) node list.</summary>
    public int OrderOf(NodeProto node) => _order[node];

    /// <summary>Follows Identity nodes upward to the tensor they copy (tied initializers).</summary>
    public string ThroughIdentity(string tensor)
    {
        while (_producer.TryGetValue(tensor, out var p) && p.OpType == "Identity" && p.Domain is "" or "ai.onnx")
            tensor = p.Input[0];
        return tensor;
    }

    public static int OpsetOf(ModelProto model)
    {
        foreach (var o in model.OpsetImport)
            if (o.Domain is "" or "ai.onnx") return checked((int)o.Version);
        throw new OnnxKfacException("the model imports no ai.onnx opset");
    }

    /// <summary>A node's display name for errors: its name, else op type and first output.</summary>
    public static string Describe(NodeProto n) =>
        string.IsNullOrEmpty(n.Name) ? $"{n.OpType} node producing '{n.Output.FirstOrDefault()}'" : $"node '{n.Name}' ({n.OpType})";
}
