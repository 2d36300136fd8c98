namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// Options of <see cref="AdamW"/>, matching torch.optim.AdamW and its defaults. Each value is
/// checked when set; invalid values throw <see cref="ArgumentException"/> naming the option.
/// </summary>
public sealed record AdamWOptions
{
    /// <summary>Base learning rate, ≥ 0. Default 1e-3.</summary>
    public double LearningRate { get; init => field = Checks.NonNegative(value, nameof(LearningRate)); } = 1e-3;

    /// <summary>Decay of the first-moment average, in [0, 1). Default 0.9.</summary>
    public double Beta1 { get; init => field = Checks.UnitInterval(value, nameof(Beta1)); } = 0.9;

    /// <summary>Decay of the second-moment average, in [0, 1). Default 0.999.</summary>
    public double Beta2 { get; init => field = Checks.UnitInterval(value, nameof(Beta2)); } = 0.999;

    /// <summary>Term added to the denominator, outside the square root, ≥ 0. Default 1e-8.</summary>
    public double Epsilon { get; init => field = Checks.NonNegative(value, nameof(Epsilon)); } = 1e-8;

    /// <summary>Decoupled weight decay: each update first scales parameters by 1 - lr·wd. ≥ 0. Default 1e-2.</summary>
    public double WeightDecay { get; init => field = Checks.NonNegative(value, nameof(WeightDecay)); } = 1e-2;

    /// <summary>
    /// True (default): AdamW's decoupled decay. False: torch.optim.Adam's coupled L2, the weight
    /// decay added to the gradient (g + wd·p) before the moments.
    /// </summary>
    public bool DecoupledWeightDecay { get; init; } = true;

    /// <summary>AMSGrad: normalise by the running maximum of the second moment. Default false.</summary>
    public bool AmsGrad { get; init; }

    /// <summary>Learning-rate schedule. Default constant.</summary>
    public ILearningRateSchedule Schedule { get; init => field = Checks.NotNull(value, nameof(Schedule)); } = ConstantSchedule.Instance;

    /// <summary>Parameter groups, first match wins; a group's Momentum is its β1. Default none.</summary>
    public IReadOnlyList<ParameterGroup> Groups { get; init => field = [.. Checks.NotNull(value, nameof(Groups))]; } = [];

    /// <summary>Checks the options' combination; called by <see cref="AdamW"/>.</summary>
    internal void Validate()
    {
        foreach (var g in Groups)
        {
            Checks.NotNull(g, nameof(Groups));
            if (g.Momentum is { } b1 && b1 >= 1)
                throw Checks.Error(nameof(ParameterGroup.Momentum), b1, $"(β1) of group '{g.Pattern}' must lie in [0, 1)");
        }
    }
}
