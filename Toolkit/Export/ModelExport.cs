using Google.Protobuf;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Export;

/// <summary>
/// The fine-tuned inference model: the original graph, untouched (inputs, outputs, opset,
/// metadata, node names), with the trained initializers' values replaced. It drops in
/// wherever the original ran.
/// </summary>
public static class ModelExport
{
    public static ModelProto WithParameters(ModelProto original, IEnumerable<Parameter> parameters)
    {
        var model = original.Clone();
        var byName = model.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var p in parameters)
        {
            if (!byName.TryGetValue(p.Name, out var t))
                throw new OnnxKfacException($"parameter '{p.Name}' is not an initializer of the model being exported (was it trained from another model?)");
            if (TensorData.ElementCount(t.Dims) != p.Value.Length || t.DataType != (int)TensorProto.Types.DataType.Float)
                throw new OnnxKfacException($"parameter '{p.Name}' has {p.Value.Length} float values but the model's initializer is {TensorData.TypeName(t.DataType)}[{string.Join(",", t.Dims)}]");
            t.FloatData.Clear();
            t.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(p.Value.AsSpan()));
        }
        return model;
    }

    /// <summary>Writes the fine-tuned model atomically.</summary>
    public static void Save(ModelProto original, IEnumerable<Parameter> parameters, string path) =>
        OnnxModelIO.Save(WithParameters(original, parameters), path);
}
