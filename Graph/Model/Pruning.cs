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

    /// <summary>
    /// Removes the Identity nodes that only give a graph output its name (a parameter's
    /// gradient <c>w_grad</c>, a layer tap) by naming the tensor they copy after the output
    /// instead: ONNX Runtime cannot drop an Identity that produces a graph output, so each one
    /// costs a copy of the tensor on every run (the weight gradients of a dense model: ~5% of its
    /// forward+backward). A tensor is renamed at most once (a second output of it keeps its
    /// Identity), and never when it is a graph input, an initializer, another graph output or
    /// read from inside a subgraph.
    /// </summary>
    public static void FoldOutputIdentities(GraphProto graph)
    {
        // A fold can leave an Identity naming an output (Identity → Identity → output): repeat.
        while (FoldOnce(graph)) { }
    }

    private static bool FoldOnce(GraphProto graph)
    {
        var outputs = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        var fixedNames = new HashSet<string>(graph.Input.Select(i => i.Name).Concat(graph.Initializer.Select(t => t.Name)), StringComparer.Ordinal);
        var subgraphReads = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            foreach (var a in n.Attribute)
            {
                if (a.G is not null) AddOuterReads(a.G, subgraphReads);
                foreach (var sg in a.Graphs) AddOuterReads(sg, subgraphReads);
            }
        var produced = new HashSet<string>(graph.Node.SelectMany(n => n.Output), StringComparer.Ordinal);
        var rename = new Dictionary<string, string>(StringComparer.Ordinal);
        var dropped = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        foreach (var n in graph.Node)
        {
            if (n.OpType != "Identity" || n.Domain is not ("" or "ai.onnx") || n.Input.Count != 1 || n.Output.Count != 1) continue;
            string from = n.Input[0], to = n.Output[0];
            if (!outputs.Contains(to) || outputs.Contains(from) || fixedNames.Contains(from) || subgraphReads.Contains(from)
                || !produced.Contains(from) || rename.ContainsKey(from)) continue;
            rename[from] = to;
            dropped.Add(n);
        }
        if (rename.Count == 0) return false;
        var live = graph.Node.Where(n => !dropped.Contains(n)).ToArray();
        foreach (var n in live)
        {
            for (int i = 0; i < n.Input.Count; i++) if (rename.TryGetValue(n.Input[i], out var r)) n.Input[i] = r;
            for (int o = 0; o < n.Output.Count; o++) if (rename.TryGetValue(n.Output[o], out var r)) n.Output[o] = r;
        }
        graph.Node.Clear();
        graph.Node.Add(live);
        foreach (var vi in graph.ValueInfo.Where(v => rename.ContainsKey(v.Name)).ToArray()) graph.ValueInfo.Remove(vi);
        return true;
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
