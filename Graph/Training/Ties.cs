using System.Runtime.InteropServices;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Training;

/// <summary>A tie the exporter broke: <see cref="Copy"/> is an initializer equal to <see cref="Source"/> (or, <see cref="Transposed"/>, to its transpose).</summary>
public sealed record BrokenTie(string Copy, string Source, bool Transposed);

/// <summary>
/// A tie the exporter may have invented: one initializer that feeds modules it does not
/// belong to, directly or through Identity copies (<see cref="Copies"/>: the copies' names).
/// The exporter merges initializers of equal value, so the deep-copied layers of a freshly
/// built <c>nn.TransformerEncoder</c> come out sharing one initializer.
/// </summary>
public sealed record MergedTie(string Name, string Module, IReadOnlyList<string> OtherModules, IReadOnlyList<string> Copies);

/// <summary>The ties of a model as exported, and what the toolkit does with them.</summary>
public sealed record TieReport(IReadOnlyList<BrokenTie> Broken, IReadOnlyList<MergedTie> Merged);

/// <summary>
/// Finds ties the exporter broke or invented and rewrites the model so training keeps or
/// splits them. A broken tie is kept (default): the copy becomes a Transpose (or Identity)
/// of its source, so both uses read one initializer, the gradients sum, and one update
/// moves both; the exported model keeps that node. <c>--untie GLOB</c> splits a merged
/// initializer whose name, a copy's name or a module-path name matches: every Identity copy
/// becomes an initializer of its own (named as the copy: the state-dict name of the layer
/// that reads it), trained and exported separately; it also leaves a broken tie broken.
/// The rewrite is idempotent for the same globs, so every graph built from a rewritten
/// model (training, evaluation, JVP) sees the same parameters.
/// </summary>
public static class Ties
{
    public static TieReport Detect(ModelProto model)
    {
        var index = new GraphIndex(model);
        return new TieReport(FindBroken(index), FindMerged(index));
    }

    /// <summary>What <see cref="Apply"/> does with each tie of a model.</summary>
    public sealed record Plan(IReadOnlyList<BrokenTie> Kept, IReadOnlyList<BrokenTie> KeptApart, IReadOnlyList<MergedTie> Split, IReadOnlyList<MergedTie> Merged)
    {
        /// <summary>One line per tie saying what training does with it.</summary>
        public IEnumerable<string> Describe()
        {
            foreach (var b in Kept)
                yield return $"'{b.Copy}' is {(b.Transposed ? "the transpose" : "a copy")} of '{b.Source}' (a tie the exporter broke): they train as one parameter, '{b.Source}' (--untie '{b.Copy}' trains them apart)";
            foreach (var b in KeptApart)
                yield return $"'{b.Copy}' is {(b.Transposed ? "the transpose" : "a copy")} of '{b.Source}': trained apart (--untie)";
            foreach (var m in Merged)
                yield return $"'{m.Name}' (module {(m.Module.Length == 0 ? "root" : m.Module)}) also feeds {string.Join(", ", m.OtherModules)}: "
                    + (m.Copies.Count > 0 ? $"the exporter merges equal initializers (deep-copied layers), so they train tied (--untie '{m.Name}' gives each its own copy)"
                        : "they train tied (one initializer read directly by several modules)");
            foreach (var m in Split)
                yield return $"'{m.Name}' split by --untie: {string.Join(", ", m.Copies)} train apart from it";
        }
    }

    /// <summary>Which ties <paramref name="untie"/> splits; a glob that matches no tie is an error.</summary>
    public static Plan PlanFor(ModelProto model, IReadOnlyList<string> untie)
    {
        var globs = untie.Select(p => new Glob(p)).ToArray();
        var used = new bool[globs.Length];
        var index = new GraphIndex(model);
        var names = ModulePaths.Names(index);
        bool Untied(IEnumerable<string> tensors)
        {
            bool any = false;
            var all = tensors.SelectMany(t => names.TryGetValue(t, out var n) ? n : [t]).ToArray();
            for (int k = 0; k < globs.Length; k++)
                if (all.Any(globs[k].IsMatch)) { used[k] = true; any = true; }
            return any;
        }
        // A source with several copies is untied as a whole (as a merged initializer is).
        var brokenGroups = FindBroken(index).GroupBy(b => b.Source).Select(g => (Untied: Untied([g.Key, .. g.Select(b => b.Copy)]), Ties: g.ToArray())).ToArray();
        var mergedAll = FindMerged(index).Select(m => (Untied: m.Copies.Count > 0 && Untied([m.Name, .. m.Copies]), Tie: m)).ToArray();
        for (int k = 0; k < globs.Length; k++)
            if (!used[k])
                throw new OnnxKfacException($"--untie '{globs[k].Pattern}' matches no tied initializer (an exporter-merged one with Identity copies, or a broken tie)");
        return new Plan(
            [.. brokenGroups.Where(g => !g.Untied).SelectMany(g => g.Ties)], [.. brokenGroups.Where(g => g.Untied).SelectMany(g => g.Ties)],
            [.. mergedAll.Where(m => m.Untied).Select(m => m.Tie)], [.. mergedAll.Where(m => !m.Untied).Select(m => m.Tie)]);
    }

    /// <summary>
    /// The model with broken ties kept tied and the merged ties matched by <paramref name="untie"/>
    /// split (a copy when anything changes). A glob that matches no tie is an error.
    /// </summary>
    public static ModelProto Apply(ModelProto model, IReadOnlyList<string> untie)
    {
        var plan = PlanFor(model, untie);
        var broken = plan.Kept;
        var merged = plan.Split;
        if (broken.Count == 0 && merged.Count == 0 && plan.KeptApart.Count == 0) return model;

        var result = model.Clone();
        var graph = result.Graph;
        var inits = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var b in broken)
        {
            graph.Initializer.Remove(inits[b.Copy]);
            if (graph.Input.FirstOrDefault(i => i.Name == b.Copy) is { } vi) graph.Input.Remove(vi);
            var node = new NodeProto { Name = b.Copy + "/tie", OpType = b.Transposed ? "Transpose" : "Identity" };
            node.Input.Add(b.Source);
            node.Output.Add(b.Copy);
            // Before its first reader: the node list stays topologically sorted.
            int first = graph.Node.Select((n, i) => (n, i)).First(x => x.n.Input.Contains(b.Copy)).i;
            graph.Node.Insert(first, node);
        }
        foreach (var m in merged)
        {
            var source = inits[m.Name];
            foreach (var copy in m.Copies)
            {
                var node = graph.Node.First(n => n.OpType == "Identity" && n.Output[0] == copy);
                graph.Node.Remove(node);
                var t = source.Clone();
                t.Name = copy;
                graph.Initializer.Add(t);
            }
        }
        // Split copies are equal initializers now; the mark keeps a later Apply from tying them again.
        var apart = merged.SelectMany(m => m.Copies.Prepend(m.Name)).Concat(plan.KeptApart.SelectMany(b => new[] { b.Copy, b.Source }))
            .Concat(Untied(model)).Distinct().Order(StringComparer.Ordinal).ToArray();
        if (apart.Length > 0)
        {
            var prop = result.MetadataProps.FirstOrDefault(p => p.Key == UntiedKey);
            if (prop is null) result.MetadataProps.Add(prop = new StringStringEntryProto { Key = UntiedKey });
            prop.Value = string.Join('\n', apart);
        }
        return result;
    }

    /// <summary>Model metadata: the initializers <c>--untie</c> split or kept apart, one name a line.</summary>
    public const string UntiedKey = "onnx_kfac.untied";

    private static string[] Untied(ModelProto model) =>
        model.MetadataProps.FirstOrDefault(p => p.Key == UntiedKey)?.Value.Split('\n', StringSplitOptions.RemoveEmptyEntries) ?? [];

    /// <summary>Initializers equal to another one or to its transpose (both with at least two distinct values, so zeros and ones never tie).</summary>
    private static List<BrokenTie> FindBroken(GraphIndex index)
    {
        var apart = Untied(index.Model).ToHashSet(StringComparer.Ordinal);
        var candidates = index.Graph.Initializer
            .Where(t => !apart.Contains(t.Name) && t.DataType == (int)TensorProto.Types.DataType.Float && t.Dims.Count >= 1 && TensorData.ElementCount(t.Dims) >= 2)
            .Select(t => (Tensor: t, Values: TensorData.ToFloats(t)))
            .Where(x => x.Values.AsSpan().IndexOfAnyExcept(x.Values[0]) >= 0)
            .ToList();
        var byContent = new Dictionary<(string Dims, int Hash), List<int>>();
        for (int i = 0; i < candidates.Count; i++)
        {
            var key = (Dims(candidates[i].Tensor.Dims), Hash(candidates[i].Values));
            (byContent.TryGetValue(key, out var l) ? l : byContent[key] = []).Add(i);
        }
        var ties = new List<BrokenTie>();
        var isCopy = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < candidates.Count; i++)
        {
            var (t, v) = candidates[i];
            if (isCopy.Contains(t.Name)) continue;
            // Equal copies, then transposed ones (2-D only).
            foreach (var j in byContent[(Dims(t.Dims), Hash(v))])
                if (j > i && v.AsSpan().SequenceEqual(candidates[j].Values))
                    AddTie(ties, isCopy, t.Name, candidates[j].Tensor.Name, transposed: false);
            if (t.Dims.Count != 2) continue;
            var tv = Transpose(v, t.Dims[0], t.Dims[1]);
            if (!byContent.TryGetValue((Dims([t.Dims[1], t.Dims[0]]), Hash(tv)), out var others)) continue;
            foreach (var j in others)
                if (j != i && !isCopy.Contains(candidates[j].Tensor.Name) && tv.AsSpan().SequenceEqual(candidates[j].Values))
                    AddTie(ties, isCopy, t.Name, candidates[j].Tensor.Name, transposed: true);
        }
        return ties;
    }

    /// <summary>Of two equal tensors the source is the one with the model's own (state-dict) name; the exporter names its copies.</summary>
    private static void AddTie(List<BrokenTie> ties, HashSet<string> isCopy, string a, string b, bool transposed)
    {
        var (source, copy) = ModulePaths.IsGenerated(a) && !ModulePaths.IsGenerated(b) ? (b, a) : (a, b);
        if (isCopy.Contains(source) || !isCopy.Add(copy)) return;
        ties.Add(new BrokenTie(copy, source, transposed));
    }

    /// <summary>Initializers read by nodes of modules other than their own (or an ancestor of it, which may use a child's parameter).</summary>
    private static List<MergedTie> FindMerged(GraphIndex index)
    {
        var result = new List<MergedTie>();
        foreach (var t in index.Graph.Initializer)
        {
            if (!TensorData.IsFloat(t.DataType)) continue;
            var readers = ModulePaths.Readers(index, t.Name).Select(r => ModulePaths.OfNode(r.Reader)).Where(m => m is not null).Select(m => ModulePaths.Canonical(m!)).Distinct().ToList();
            string? own = ModulePaths.OfName(t.Name) ?? readers.FirstOrDefault();
            if (own is null) continue;
            var others = readers.Where(m => m != own && !own.StartsWith(m + ".", StringComparison.Ordinal) && m.Length > 0).ToList();
            if (others.Count == 0) continue;
            var copies = new List<string>();
            var stack = new Stack<string>([t.Name]);
            while (stack.Count > 0)
                foreach (var c in index.Consumers(stack.Pop()))
                    if (c.OpType == "Identity") { copies.Add(c.Output[0]); stack.Push(c.Output[0]); }
            result.Add(new MergedTie(t.Name, own, others, copies));
        }
        return result;
    }

    private static string Dims(IEnumerable<long> dims) => string.Join(",", dims);

    private static int Hash(float[] v)
    {
        var h = new HashCode();
        h.AddBytes(MemoryMarshal.AsBytes(v.AsSpan()));
        return h.ToHashCode();
    }

    private static float[] Transpose(float[] v, long rows, long cols)
    {
        var r = new float[v.Length];
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < cols; j++) r[j * rows + i] = v[i * cols + j];
        return r;
    }
}
