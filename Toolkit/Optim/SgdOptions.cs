namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// Options of <see cref="Sgd"/>, matching torch.optim.SGD (defaults as in PyTorch ≥ 2.2,
/// where lr defaults to 1e-3). Each value is checked when set; the combination (Nesterov)
/// when the optimizer is built. Invalid values throw <see cref="ArgumentException"/> naming the option.
/// </summary>
public sealed record SgdOptions
{
    /// <summary>Base learning rate, ≥ 0. Default 1e-3.</summary>
    public double LearningRate { get; init => field = Checks.NonNegative(value, nameof(LearningRate)); } = 1e-3;

    /// <summary>Momentum factor, ≥ 0; 0 disables momentum (no buffer is kept). Default 0.</summary>
    public double Momentum { get; init => field = Checks.NonNegative(value, nameof(Momentum)); }

    /// <summary>Dampening of the momentum's gradient term, in [0, 1]. Default 0.</summary>
    public double Dampening
    {
        get;
        init => field = value is >= 0 and <= 1 ? value : throw Checks.Error(nameof(Dampening), value, "must lie in [0, 1]");
    }

    /// <summary>L2 penalty added to the gradient (coupled weight decay), ≥ 0. Default 0.</summary>
    public double WeightDecay { get; init => field = Checks.NonNegative(value, nameof(WeightDecay)); }

    /// <summary>Nesterov momentum; requires Momentum &gt; 0 and Dampening = 0 (in every group). Default false.</summary>
    public bool Nesterov { get; init; }

    /// <summary>Learning-rate schedule. Default constant.</summary>
    public ILearningRateSchedule Schedule { get; init => field = Checks.NotNull(value, nameof(Schedule)); } = ConstantSchedule.Instance;

    /// <summary>Parameter groups, first match wins. Default none (one group for all).</summary>
    public IReadOnlyList<ParameterGroup> Groups { get; init => field = [.. Checks.NotNull(value, nameof(Groups))]; } = [];

    /// <summary>Checks the options' combination; called by <see cref="Sgd"/>.</summary>
    internal void Validate()
    {
        foreach (var g in Groups) Checks.NotNull(g, nameof(Groups));
        if (!Nesterov) return;
        if (Dampening != 0)
            throw Checks.Error(nameof(Nesterov), Nesterov, "requires Dampening = 0");
        if (Momentum <= 0)
            throw Checks.Error(nameof(Nesterov), Nesterov, "requires Momentum > 0");
        foreach (var g in Groups)
            if (!g.Frozen && g.Momentum is <= 0)
                throw Checks.Error(nameof(Nesterov), Nesterov, $"requires Momentum > 0, but group '{g.Pattern}' sets 0");
    }
}
