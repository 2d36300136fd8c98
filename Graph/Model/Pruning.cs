using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Model;

/// <summary>Removes nodes and initializers that no graph output depends on.</summary>
public static class Pruning
{
    public static void RemoveDeadNodes(GraphProto graph)
    {
        var needed = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        var keep = new bool[graph.Node.Count];
        for (int k = graph.Node.Count - 1; k >= 0; k--)
        {
            var n = graph.Node[k];
            if (!n.Output.Any(needed.Contains) && !HasSubgraph(n)) continue;
            keep[k] = true;
            foreach (var i in n.Input) if (i.Length > 0) needed.Add(i);
            foreach (var a in n.Attribute) if (a.G is not null) AddOuterReads(a.G, needed);
        }
        var live = graph.Node.Where((_, k) => keep[k]).ToArray();
        graph.Node.Clear();
        graph.Node.Add(live);
        var inputs = new HashSet<string>(graph.Input.Select(i => i.Name), StringComparer.Ordinal);
        var inits = graph.Initializer.Where(t => needed.Contains(t.Name) || inputs.Contains(t.Name)).ToArray();
        graph.Initializer.Clear();
        graph.Initializer.Add(inits);
    }

    // Control-flow nodes read outer tensors from inside their bodies: keep them and what they read.
    private static bool HasSubgraph(NodeProto n) => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0);

    private static void AddOuterReads(GraphProto g, HashSet<string> needed)
    {
        foreach (var n in g.Node)
        {
            foreach (var i in n.Input) if (i.Length > 0) needed.Add(i);
            foreach (var a in n.Attribute) if (a.G is not null) AddOuterReads(a.G, needed);
        }
    }
}
