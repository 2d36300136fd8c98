using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Model;

/// <summary>
/// Structural checks that separate an ONNX model from arbitrary bytes that happen to
/// parse as protobuf: a graph, an opset, named nodes' inputs defined before use.
/// </summary>
internal static class ModelValidator
{
    public static void Validate(ModelProto model, string source)
    {
        if (model.Graph is null) throw new OnnxKfacException($"{source}: not an ONNX model (no graph)");
        if (!model.HasIrVersion || model.IrVersion < 3 || model.IrVersion > 64)
            throw new OnnxKfacException($"{source}: not an ONNX model (ir_version {(model.HasIrVersion ? model.IrVersion : "missing")})");
        if (model.OpsetImport.Count == 0) throw new OnnxKfacException($"{source}: not an ONNX model (no opset_import)");
        foreach (var o in model.OpsetImport)
            if (o.Version is < 1 or > int.MaxValue)
                throw new OnnxKfacException($"{source}: not an ONNX model (opset_import version {o.Version} for domain '{o.Domain}')");
        var g = model.Graph;
        var defined = new HashSet<string>(StringComparer.Ordinal) { "" };
        foreach (var i in g.Input) defined.Add(i.Name);
        foreach (var t in g.Initializer)
        {
            if (string.IsNullOrEmpty(t.Name)) throw new OnnxKfacException($"{source}: an initializer has no name");
            CheckDims(t, source);
            defined.Add(t.Name);
        }
        foreach (var s in g.SparseInitializer) if (s.Values is not null) defined.Add(s.Values.Name);
        for (int k = 0; k < g.Node.Count; k++)
        {
            var n = g.Node[k];
            string where = string.IsNullOrEmpty(n.Name) ? $"node #{k}" : $"node '{n.Name}'";
            if (string.IsNullOrEmpty(n.OpType)) throw new OnnxKfacException($"{source}: {where} has no op_type");
            foreach (var input in n.Input)
                if (!defined.Contains(input))
                    throw new OnnxKfacException($"{source}: {where} ({n.OpType}) reads '{input}', which nothing before it defines (graph not topologically sorted, or a dangling input)");
            foreach (var output in n.Output) defined.Add(output);
        }
        foreach (var o in g.Output)
            if (!defined.Contains(o.Name))
                throw new OnnxKfacException($"{source}: graph output '{o.Name}' is not produced by any node, input or initializer");
    }

    private static void CheckDims(TensorProto t, string source)
    {
        long n = 1;
        foreach (long d in t.Dims)
        {
            if (d < 0 || (d > 0 && n > long.MaxValue / d))
                throw new OnnxKfacException($"{source}: initializer '{t.Name}' has an invalid shape [{string.Join(",", t.Dims)}]");
            n *= d;
        }
    }
}
