namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// Hyperparameters for the parameters whose names match <see cref="Pattern"/>, a glob over
/// ONNX initializer names (see <see cref="OnnxKfac.Graph.Model.Glob"/>: <c>*</c> spans dots).
/// An optimizer's groups are tried in order and the first match wins; a parameter that no
/// group matches uses the optimizer's own options (the default group). A null setting falls
/// back to the optimizer's option of the same name. Every group must match at least one
/// trainable parameter, so that a mistyped pattern fails instead of silently doing nothing.
/// </summary>
public sealed record ParameterGroup
{
    /// <param name="pattern">Glob over parameter names, e.g. <c>backbone.*</c> or <c>*.bias</c>.</param>
    public ParameterGroup(string pattern) => Pattern = pattern;

    /// <summary>Glob over parameter names.</summary>
    public string Pattern
    {
        get;
        init
        {
            ArgumentException.ThrowIfNullOrEmpty(value, nameof(Pattern));
            field = value;
        }
    }

    /// <summary>Base learning rate (≥ 0) for the group; the schedule multiplies it. Null: the optimizer's.</summary>
    public double? LearningRate { get; init => field = Checks.NonNegative(value, nameof(LearningRate)); }

    /// <summary>Weight decay (≥ 0) for the group (L2 for SGD, decoupled for AdamW). Null: the optimizer's.</summary>
    public double? WeightDecay { get; init => field = Checks.NonNegative(value, nameof(WeightDecay)); }

    /// <summary>
    /// Momentum for the group: SGD's momentum (≥ 0), AdamW's first-moment decay β1 (in [0, 1)).
    /// Null: the optimizer's.
    /// </summary>
    public double? Momentum { get; init => field = Checks.NonNegative(value, nameof(Momentum)); }

    /// <summary>When true the group's parameters are never updated and keep no optimizer state. Default false.</summary>
    public bool Frozen { get; init; }
}
