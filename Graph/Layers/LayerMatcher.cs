using OnnxKfac.Graph.Model;

namespace OnnxKfac.Graph.Layers;

/// <summary>
/// Finds the layers K-FAC can factor: each node whose op type has a pattern in the table
/// (<see cref="LayerPatterns"/>) is matched against it → a <see cref="LayerInfo"/>, or a
/// rejection that says which check failed. Layer names are made unique.
/// </summary>
public static class LayerMatcher
{
    public static (IReadOnlyList<LayerInfo> Layers, IReadOnlyList<LayerRejection> Rejected) Match(
        GraphIndex index, IReadOnlyDictionary<string, TensorInfo> infos, ISet<string> parameters, LayerPatterns? patterns = null)
    {
        patterns ??= LayerPatterns.Default;
        var context = new LayerMatchContext(index, infos, parameters);
        var layers = new List<LayerInfo>();
        var rejected = new List<LayerRejection>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in index.Graph.Node)
        {
            if (n.Domain is not ("" or "ai.onnx")) continue;
            if (n.Input.Count < 2 || n.Output.Count < 1 || n.Output[0].Length == 0) continue; // malformed: the gradient rule reports it
            if (patterns.Find(n.OpType) is not { } pattern) continue;
            var match = pattern(n, context);
            if (match.Layer is { } layer) layers.Add(layer with { Name = Unique(names, layer.Name) });
            else if (match.Rejection is { } why) rejected.Add(new LayerRejection(GraphIndex.Describe(n), n.OpType, why));
        }
        return (layers, rejected);
    }

    private static string Unique(HashSet<string> names, string stem)
    {
        string c = stem;
        for (int k = 1; !names.Add(c); k++) c = $"{stem}#{k}";
        return c;
    }
}
