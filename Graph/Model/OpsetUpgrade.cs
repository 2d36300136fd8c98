using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Model;

/// <summary>
/// Raises a model's ai.onnx opset so the backward graph can use opset-18 forms (axes as
/// inputs for every reduction, scatter with reduction), keeping the semantics of every
/// forward node: the ops whose signature changed between 13 and 18 are rewritten.
/// </summary>
public static class OpsetUpgrade
{
    public const int TrainingOpset = 18;

    private static readonly HashSet<string> ReduceAxesMovedAt18 =
    [
        "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
    ];

    /// <summary>Upgrades in place to at least <paramref name="target"/>; returns the source opset.</summary>
    public static int Apply(ModelProto model, int target = TrainingOpset)
    {
        int source = GraphIndex.OpsetOf(model);
        if (source < 13)
            throw new OnnxKfacException($"the model uses ai.onnx opset {source}; OnnxKfac supports opsets 13 to 20 (re-export with opset_version>=13)");
        if (source > 20)
            throw new OnnxKfacException($"the model uses ai.onnx opset {source}; OnnxKfac supports opsets 13 to 20");
        if (source >= target) return source;
        var g = model.Graph;
        var names = new HashSet<string>(g.Initializer.Select(t => t.Name).Concat(g.Node.SelectMany(n => n.Output)), StringComparer.Ordinal);
        foreach (var n in g.Node)
        {
            if (n.Domain is not ("" or "ai.onnx")) continue;
            if (ReduceAxesMovedAt18.Contains(n.OpType) && n.Find("axes") is { } axes)
            {
                string name = Unique(names, (n.Name.Length > 0 ? n.Name : n.OpType) + "/axes");
                g.Initializer.Add(TensorData.FromInt64s(name, [axes.Ints.Count], axes.Ints.ToArray()));
                n.Attribute.Remove(axes);
                if (n.Input.Count == 1) n.Input.Add(name);
            }
            else if (n.OpType == "Split" && (n.Input.Count < 2 || n.Input[1].Length == 0) && n.Find("num_outputs") is null)
            {
                n.SetAttribute(Attributes.Int("num_outputs", n.Output.Count));
            }
        }
        foreach (var o in model.OpsetImport)
            if (o.Domain is "" or "ai.onnx") o.Version = target;
        if (model.IrVersion < 8) model.IrVersion = 8;
        return source;
    }

    private static string Unique(HashSet<string> names, string stem)
    {
        string c = stem;
        for (int k = 1; !names.Add(c); k++) c = stem + "_" + k;
        return c;
    }
}
