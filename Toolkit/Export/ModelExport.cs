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

    /// <summary>
    /// <paramref name="model"/> taking raw inputs: the normalization training applied to data
    /// input <paramref name="input"/> (<c>y = x · Scale / Std − Mean / Std</c>, per element, as
    /// <see cref="Data.Dataset.WithNormalization"/> applies it) becomes a Mul and an Add at that
    /// input, whose name, type and shape stay; every node that read it reads the normalized tensor.
    /// </summary>
    /// <param name="featureShape">One example's shape (the input's shape without the batch axis).</param>
    public static ModelProto WithPreprocessing(ModelProto model, string input, Data.Normalization normalization, IReadOnlyList<long> featureShape)
    {
        var result = model.Clone();
        var g = result.Graph;
        var declared = g.Input.FirstOrDefault(i => i.Name == input)
            ?? throw new OnnxKfacException($"the model has no input '{input}' to normalize");
        if (declared.Type?.TensorType?.ElemType != (int)TensorProto.Types.DataType.Float)
            throw new OnnxKfacException($"input '{input}' is {TensorData.TypeName(declared.Type?.TensorType?.ElemType ?? 0)}; only a float input can take the normalization");
        var (mul, add) = normalization.Expand(featureShape, $"input '{input}'");
        string scope = $"{input}/preprocess";
        string normalized = $"{scope}/normalized";
        foreach (var node in g.Node)
            for (int k = 0; k < node.Input.Count; k++)
                if (node.Input[k] == input) node.Input[k] = normalized;
        foreach (var output in g.Output.Where(o => o.Name == input))
            throw new OnnxKfacException($"input '{input}' is also a model output; refusing to rewrite it");
        long[] dims = [.. featureShape];
        g.Initializer.Add(TensorData.FromFloats($"{scope}/mul", dims, mul));
        g.Initializer.Add(TensorData.FromFloats($"{scope}/add", dims, add));
        var scaled = new NodeProto { Name = $"{scope}/Mul", OpType = "Mul" };
        scaled.Input.Add(input);
        scaled.Input.Add($"{scope}/mul");
        scaled.Output.Add($"{scope}/scaled");
        var shifted = new NodeProto { Name = $"{scope}/Add", OpType = "Add" };
        shifted.Input.Add($"{scope}/scaled");
        shifted.Input.Add($"{scope}/add");
        shifted.Output.Add(normalized);
        g.Node.Insert(0, shifted);
        g.Node.Insert(0, scaled);
        return result;
    }
}
