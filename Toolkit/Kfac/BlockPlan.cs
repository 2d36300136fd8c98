using OnnxKfac.Graph;
using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Toolkit.Kfac;

/// <summary>The curvature block K-FAC gives a set of parameters, and why.</summary>
public sealed record KfacBlockInfo(string Block, string Kind, IReadOnlyList<string> Parameters, string Reason)
{
    /// <summary>The training-graph layer behind a Kronecker or embedding block (null for the others).</summary>
    public LayerInfo? Layer { get; init; }
}

/// <summary>
/// Chooses a block for every trainable parameter: the table maps layer kinds to blocks
/// (dense and conv → kronecker, embedding → embedding), the user's overrides (first matching
/// glob) replace it, and every parameter in no usable layer gets the fallback, with the reason.
/// </summary>
internal static class BlockPlan
{
    private static readonly Dictionary<LayerKind, string> Table = new()
    {
        [LayerKind.Dense] = "kronecker",
        [LayerKind.Conv] = "kronecker",
        [LayerKind.Embedding] = "embedding",
    };

    private static readonly string[] ScaleAndShiftOps = ["LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization"];

    public static IReadOnlyList<KfacBlockInfo> Plan(TrainingManifest manifest, KfacOptions options, ISet<string> frozen, ModelProto? source = null)
    {
        var overrides = options.Blocks.Select(o => (Glob: new Glob(o.Pattern), o)).ToArray();
        var used = new bool[overrides.Length];
        var aliases = manifest.Parameters.ToDictionary(p => p.Name, p => p.Names ?? [], StringComparer.Ordinal);
        string? Override(string name)
        {
            for (int k = 0; k < overrides.Length; k++)
                if (overrides[k].Glob.IsMatch(name) || aliases.GetValueOrDefault(name, []).Any(overrides[k].Glob.IsMatch)) { used[k] = true; return overrides[k].o.Kind; }
            return null;
        }
        var trainable = manifest.Parameters.Select(p => p.Name).Where(n => !frozen.Contains(n)).ToList();
        var uses = new Dictionary<string, List<LayerInfo>>(StringComparer.Ordinal);
        foreach (var l in manifest.Layers)
            foreach (var p in l.Bias is null ? [l.Weight] : new[] { l.Weight, l.Bias })
                (uses.TryGetValue(p, out var list) ? list : uses[p] = []).Add(l);
        var sampled = manifest.Outputs.Where(o => o.Role == TensorRole.SampledGradient).Select(o => o.Of!).ToHashSet(StringComparer.Ordinal);

        var result = new List<KfacBlockInfo>();
        var covered = new HashSet<string>(StringComparer.Ordinal);
        foreach (var l in manifest.Layers)
        {
            if (covered.Contains(l.Weight) || frozen.Contains(l.Weight)) continue;
            var members = l.Bias is null || frozen.Contains(l.Bias) ? new[] { l.Weight } : [l.Weight, l.Bias];
            if (members.Any(m => uses[m].Count > 1)) continue;                    // tied: the fallback below says so
            string kind = Override(l.Weight) ?? Table[l.Kind];
            if (kind is "diagonal" or "identity") continue;                     // per parameter, below
            if (kind == "kronecker" && l.Kind == LayerKind.Embedding)
                throw new OnnxKfacException($"--kfac-block: layer '{l.Name}' is an embedding; a Kronecker block needs a dense or conv layer (use embedding, diagonal or identity)");
            if (kind == "embedding" && l.Kind != LayerKind.Embedding)
                throw new OnnxKfacException($"--kfac-block: layer '{l.Name}' is {l.Kind.ToString().ToLowerInvariant()}, not an embedding");
            if (l.Outputs.FactorA is null || l.Outputs.FactorG is null)
                throw new OnnxKfacException($"layer '{l.Name}': the training graph has no factor statistics; build it with KfacOptions.Configure(graphOptions)");
            string why = l.Kind switch
            {
                LayerKind.Dense when l.InputRank > 2 => $"{l.OpType} applied over {l.InputRank - 1} leading axes (every position a row: the expand form)",
                LayerKind.Dense => $"{l.OpType} layer {l.InFeatures}→{l.OutFeatures}",
                LayerKind.Conv => l.Groups > 1 ? $"Conv with {l.Groups} groups (block-diagonal KFC)" : "Conv (KFC over patches)",
                _ => $"Gather of a [{l.InFeatures}, {l.OutFeatures}] table (diagonal A: id frequencies)",
            };
            if (frozen.Contains(l.Bias ?? "")) why += $"; bias '{l.Bias}' frozen";
            result.Add(new KfacBlockInfo(l.Name, kind, members, why) { Layer = l });
            covered.UnionWith(members);
        }
        foreach (var name in trainable.Where(n => !covered.Contains(n)))
        {
            string? chosen = Override(name);
            string kind = chosen is "diagonal" or "identity" ? chosen
                : chosen is not null && uses.ContainsKey(name) ? "identity"
                : options.Fallback == FallbackBlock.Diagonal ? "diagonal" : "identity";
            string? tiedPartner = uses.TryGetValue(name, out var layers) && layers.Count == 1 && chosen is null
                ? (layers[0].Bias is { } b ? new[] { layers[0].Weight, b } : [layers[0].Weight]).FirstOrDefault(m => uses[m].Count > 1)
                : null;
            string why = layers is { Count: > 1 }
                ? $"tied: used by {layers.Count} layers ({string.Join(", ", layers.Select(l => l.Name))})"
                : tiedPartner is not null ? $"in layer '{layers![0].Name}', whose '{tiedPartner}' is tied"
                : uses.ContainsKey(name) ? $"--kfac-block chose {kind}"
                : Describe(name, source);
            if (kind == "diagonal" && !sampled.Contains(name))
                throw new OnnxKfacException($"parameter '{name}' gets a diagonal block, but the training graph has no sampled gradient for it (the diagonal block needs the true Fisher; or choose identity)");
            result.Add(new KfacBlockInfo(name, kind, [name], why));
        }
        for (int k = 0; k < overrides.Length; k++)
            if (!used[k]) throw new OnnxKfacException($"--kfac-block '{overrides[k].o.Pattern}' matches no trainable parameter");
        return result;
    }

    /// <summary>Why a parameter is in no layer: what reads it.</summary>
    private static string Describe(string name, ModelProto? source)
    {
        if (source is null) return "in no dense, conv or embedding layer";
        var index = new GraphIndex(source);
        var readers = index.Consumers(name);
        var op = readers.FirstOrDefault()?.OpType;
        if (op is not null && ScaleAndShiftOps.Contains(op)) return $"scale-and-shift ({op})";
        if (op is "Add" or "Mul" or "Sub") return $"element-wise {op} (a lone scale, bias or table)";
        return op is null ? "in no dense, conv or embedding layer" : $"read by {op}, which is no dense, conv or embedding layer";
    }
}
