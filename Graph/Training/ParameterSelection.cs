using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Training;

/// <summary>An initializer the exporter tied: read by several nodes, directly or through Identity copies.</summary>
public sealed record TiedInitializer(string Name, IReadOnlyList<string> Readers, int IdentityCopies);

/// <summary>
/// Which initializers train. Default: every floating-point initializer that reaches the
/// chosen output through a differentiable path, except single-element ones with a name the
/// exporter made up (<c>onnx::Div_12</c>: folded constants such as epsilons and exponents;
/// name them with a trainable pattern to train them). A single-element parameter with a
/// model name (the bias of a one-output head, <c>head.bias</c>) trains like any other.
/// Trainable patterns replace the default set; frozen patterns remove from it. A pattern
/// matches an initializer's name or a module-path name (<see cref="ModulePaths.Names"/>:
/// <c>encoder.layers.0.self_attn.weight</c> for <c>onnx::MatMul_262</c>). A pattern that
/// matches nothing is an error; one that takes only some tensors of a module is reported
/// in <see cref="Result.Warnings"/>.
/// </summary>
public static class ParameterSelection
{
    public sealed record Result(IReadOnlyList<TensorProto> Parameters, IReadOnlyList<ManifestExclusion> Excluded, IReadOnlyList<TiedInitializer> Ties)
    {
        /// <summary>The names a glob may select each parameter by, its own first (see <see cref="ModulePaths.Names"/>).</summary>
        public IReadOnlyDictionary<string, IReadOnlyList<string>> Names { get; init; } = new Dictionary<string, IReadOnlyList<string>>();

        /// <summary>One line per pattern and module it takes only part of, naming the tensors it leaves out.</summary>
        public IReadOnlyList<string> Warnings { get; init; } = [];
    }

    public static Result Select(GraphIndex index, string output, IReadOnlyList<string> trainable, IReadOnlyList<string> frozen, GradientRegistry registry)
    {
        var reach = DifferentiablyReaching(index, output, registry);
        var trainGlobs = trainable.Select(p => new Glob(p)).ToArray();
        var frozenGlobs = frozen.Select(p => new Glob(p)).ToArray();
        var used = new HashSet<Glob>();
        var names = ModulePaths.Names(index);
        bool Matches(Glob g, string name) => names.TryGetValue(name, out var n) ? n.Any(g.IsMatch) : g.IsMatch(name);
        var selected = new List<TensorProto>();
        var excluded = new List<ManifestExclusion>();
        foreach (var t in index.Graph.Initializer)
        {
            // Initializers also listed as graph inputs (keep_initializers_as_inputs=True exports)
            // are overridable defaults: still candidates.
            bool isFloat = TensorData.IsFloat(t.DataType);
            var matchT = trainGlobs.FirstOrDefault(g => Matches(g, t.Name));
            var matchF = frozenGlobs.FirstOrDefault(g => Matches(g, t.Name));
            if (matchT is not null) used.Add(matchT);
            if (matchF is not null) used.Add(matchF);
            string? reason =
                !isFloat ? null // integer constants are never parameters; not worth listing
                : matchF is not null ? $"frozen by '{matchF.Pattern}'"
                : trainGlobs.Length > 0 && matchT is null ? "not matched by a trainable pattern"
                : !reach.Contains(t.Name) ? "does not reach the loss through a differentiable path"
                : matchT is null && TensorData.ElementCount(t.Dims) <= 1 && ModulePaths.IsGenerated(t.Name) ? "single-element exporter constant"
                : null;
            if (!isFloat) continue;
            if (reason is null) selected.Add(t);
            else excluded.Add(new ManifestExclusion(t.Name, reason));
            if (matchT is not null && matchF is null && !reach.Contains(t.Name))
                throw new OnnxKfacException($"initializer '{t.Name}' matches trainable pattern '{matchT.Pattern}' but does not reach output '{output}' through a differentiable path");
        }
        foreach (var g in trainGlobs.Concat(frozenGlobs))
            if (!used.Contains(g))
                throw new OnnxKfacException($"pattern '{g.Pattern}' matches no floating-point initializer of the model");
        if (selected.Count == 0)
            throw new OnnxKfacException($"no trainable parameters: no initializer reaches output '{output}' through a differentiable path (or all are frozen)");
        var candidates = index.Graph.Initializer
            .Where(t => TensorData.IsFloat(t.DataType) && reach.Contains(t.Name) && !(TensorData.ElementCount(t.Dims) <= 1 && ModulePaths.IsGenerated(t.Name)))
            .Select(t => t.Name).ToList();
        var warnings = trainGlobs.Concat(frozenGlobs).SelectMany(g => PartialModules(index, g, candidates, n => Matches(g, n))).ToList();
        return new Result(selected, excluded, FindTies(index)) { Names = names, Warnings = warnings };
    }

    /// <summary>A warning for each module of which <paramref name="glob"/> takes some tensors but not all.</summary>
    private static IEnumerable<string> PartialModules(GraphIndex index, Glob glob, IReadOnlyList<string> candidates, Func<string, bool> matches)
    {
        var partial = new List<(string Module, List<string> Left)>();
        foreach (var module in candidates.GroupBy(n => ModulePaths.ModuleOf(index, n)).Where(m => !string.IsNullOrEmpty(m.Key)))
        {
            var left = module.Where(n => !matches(n)).ToList();
            if (left.Count > 0 && left.Count < module.Count()) partial.Add((module.Key!, left));
        }
        if (partial.Count is > 0 and <= 3)
            foreach (var (module, left) in partial)
                yield return $"pattern '{glob.Pattern}' matches only part of module '{module}': it leaves out {string.Join(", ", left)}";
        else if (partial.Count > 3)
            yield return $"pattern '{glob.Pattern}' matches only part of {partial.Count} modules ({string.Join(", ", partial.Take(3).Select(p => p.Module))}, ...): "
                + $"it leaves out {string.Join(", ", partial[0].Left)} of '{partial[0].Module}' and others";
    }

    /// <summary>Tensors from which <paramref name="output"/> can be reached through differentiable inputs.</summary>
    public static HashSet<string> DifferentiablyReaching(GraphIndex index, string output, GradientRegistry registry)
    {
        var reach = new HashSet<string>(StringComparer.Ordinal) { output };
        var nodes = index.Graph.Node;
        for (int k = nodes.Count - 1; k >= 0; k--)
        {
            var n = nodes[k];
            if (!n.Output.Any(reach.Contains)) continue;
            bool std = n.Domain is "" or "ai.onnx";
            if (std && registry.IsNonDifferentiable(n.OpType)) continue;
            var entry = std ? registry.Find(n.OpType) : null;
            for (int i = 0; i < n.Input.Count; i++)
                if (n.Input[i].Length > 0 && (entry is null || entry.IsDifferentiable(i))) reach.Add(n.Input[i]);
        }
        return reach;
    }

    public static IReadOnlyList<TiedInitializer> FindTies(GraphIndex index)
    {
        var ties = new List<TiedInitializer>();
        foreach (var t in index.Graph.Initializer)
        {
            if (!TensorData.IsFloat(t.DataType)) continue;
            var readers = new List<string>();
            int copies = 0;
            var stack = new Stack<string>([t.Name]);
            while (stack.Count > 0)
            {
                foreach (var c in index.Consumers(stack.Pop()))
                {
                    if (c.OpType == "Identity") { copies++; stack.Push(c.Output[0]); }
                    else readers.Add(GraphIndex.Describe(c));
                }
            }
            if (readers.Count > 1 || copies > 1) ties.Add(new TiedInitializer(t.Name, readers, copies));
        }
        return ties;
    }
}
