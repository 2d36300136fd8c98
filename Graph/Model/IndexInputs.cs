using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Model;

/// <summary>
/// A lookup table an integer model input indexes: the Gather <see cref="Node"/> that reads rows
/// of initializer <see cref="Table"/> (an embedding) at the input's values, which must lie in
/// [0, <see cref="Size"/>). ONNX's Gather accepts negative indices (counting from the end), so
/// a -1 padding id would silently read the last row; PyTorch's embedding refuses it.
/// </summary>
public sealed record IndexLimit(string Input, string Node, string Table, long Size);

/// <summary>Finds the lookup tables that an integer graph input indexes.</summary>
public static class IndexInputs
{
    /// <summary>Ops that pass integer ids through unchanged (only their layout or type changes).</summary>
    private static readonly HashSet<string> PassThrough = new(StringComparer.Ordinal)
    {
        "Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
    };

    /// <summary>
    /// The Gather nodes that take graph input <paramref name="input"/> (directly or through
    /// <see cref="PassThrough"/> ops) as indices into an initializer, with the size of the gathered axis.
    /// </summary>
    public static IReadOnlyList<IndexLimit> Find(GraphIndex index, string input)
    {
        var result = new List<IndexLimit>();
        var seen = new HashSet<string>(StringComparer.Ordinal) { input };
        var pending = new Queue<string>([input]);
        while (pending.Count > 0)
        {
            string tensor = pending.Dequeue();
            foreach (var node in index.Consumers(tensor))
            {
                if (node.Domain is not ("" or "ai.onnx")) continue;
                if (node.OpType == "Gather" && node.Input.Count == 2 && node.Input[1] == tensor &&
                    index.Initializers.TryGetValue(index.ThroughIdentity(node.Input[0]), out var table))
                {
                    long axis = node.GetInt("axis", 0);
                    if (axis < 0) axis += table.Dims.Count;
                    if (axis >= 0 && axis < table.Dims.Count)
                        result.Add(new IndexLimit(input, GraphIndex.Describe(node), table.Name, table.Dims[(int)axis]));
                }
                else if (PassThrough.Contains(node.OpType) && node.Input[0] == tensor && !IsFloatCast(node))
                {
                    foreach (var o in node.Output)
                        if (o.Length > 0 && seen.Add(o)) pending.Enqueue(o);
                }
            }
        }
        return result;
    }

    private static bool IsFloatCast(NodeProto node) =>
        node.OpType == "Cast" && node.GetInt("to", 0) is (long)TensorProto.Types.DataType.Float or (long)TensorProto.Types.DataType.Double
            or (long)TensorProto.Types.DataType.Float16 or (long)TensorProto.Types.DataType.Bfloat16;
}
