namespace OnnxKfac.Graph.Losses;

/// <summary>The registration table: one line per loss, looked up by kind or by command-line name.</summary>
public static class LossFunctions
{
    private static readonly LossFunction[] Registered =
    [
        new CrossEntropyLoss(),
        new MseLoss(),
        new L1Loss(),
        new BceWithLogitsLoss(),
    ];

    private static readonly Dictionary<LossKind, LossFunction> ByKind = Registered.ToDictionary(f => f.Kind);

    private static readonly Dictionary<string, LossFunction> ByName = Registered
        .SelectMany(f => f.Aliases.Prepend(f.Name).Select(n => (Name: n, Function: f)))
        .ToDictionary(x => x.Name, x => x.Function, StringComparer.Ordinal);

    /// <summary>Every registered loss, in table order.</summary>
    public static IReadOnlyList<LossFunction> All => Registered;

    public static LossFunction For(LossKind kind) =>
        ByKind.TryGetValue(kind, out var f) ? f : throw new ArgumentOutOfRangeException(nameof(kind), kind, "no loss is registered for this kind");

    /// <summary>The loss a command-line name or alias (case-insensitive) names; an error listing the names otherwise.</summary>
    public static LossFunction Parse(string text) =>
        ByName.TryGetValue(text.Trim().ToLowerInvariant(), out var f) ? f
            : throw new OnnxKfacException($"unknown loss '{text}'; expected one of: {string.Join(", ", Registered.Select(r => r.Name))}");
}
