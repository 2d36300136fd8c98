using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Training;

/// <summary>An initializer the exporter tied: read by several nodes, directly or through Identity copies.</summary>
public sealed record TiedInitializer(string Name, IReadOnlyList<string> Readers, int IdentityCopies);

/// <summary>
/// Which initializers train. Default: every floating-point initializer with more than
/// one element that reaches the chosen output through a differentiable path
/// (single-element initializers are exporter constants such as epsilons and exponents;
/// name them with a trainable pattern to train them). Trainable patterns replace the
/// default set; frozen patterns remove from it. A pattern that matches nothing is an error.
/// </summary>
public static class ParameterSelection
{
    public sealed record Result(IReadOnlyList<TensorProto> Parameters, IReadOnlyList<ManifestExclusion> Excluded, IReadOnlyList<TiedInitializer> Ties);

    public static Result Select(GraphIndex index, string output, IReadOnlyList<string> trainable, IReadOnlyList<string> frozen, GradientRegistry registry)
    {
        var reach = DifferentiablyReaching(index, output, registry);
        var trainGlobs = trainable.Select(p => new Glob(p)).ToArray();
        var frozenGlobs = frozen.Select(p => new Glob(p)).ToArray();
        var used = new HashSet<Glob>();
        var selected = new List<TensorProto>();
        var excluded = new List<ManifestExclusion>();
        foreach (var t in index.Graph.Initializer)
        {
            // Initializers also listed as graph inputs (keep_initializers_as_inputs=True exports)
            // are overridable defaults: still candidates.
            bool isFloat = TensorData.IsFloat(t.DataType);
            var matchT = trainGlobs.FirstOrDefault(g => g.IsMatch(t.Name));
            var matchF = frozenGlobs.FirstOrDefault(g => g.IsMatch(t.Name));
            if (matchT is not null) used.Add(matchT);
            if (matchF is not null) used.Add(matchF);
            string? reason =
                !isFloat ? null // integer constants are never parameters; not worth listing
                : matchF is not null ? $"frozen by '{matchF.Pattern}'"
                : trainGlobs.Length > 0 && matchT is null ? "not matched by a trainable pattern"
                : !reach.Contains(t.Name) ? "does not reach the loss through a differentiable path"
                : matchT is null && TensorData.ElementCount(t.Dims) <= 1 ? "single-element constant"
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
        return new Result(selected, excluded, FindTies(index));
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
