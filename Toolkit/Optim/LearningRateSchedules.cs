namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// A learning-rate schedule: the factor by which every group's base learning rate is
/// multiplied for a given update. <c>Factor(u)</c> for the 1-based update <c>u</c> equals the
/// factor PyTorch's scheduler gives at <c>last_epoch = u - 1</c> when <c>scheduler.step()</c> is
/// called once after every <c>optimizer.step()</c>: update 1 uses the schedule's starting rate.
/// </summary>
public interface ILearningRateSchedule
{
    /// <summary>The multiplier for the 1-based update <paramref name="update"/>.</summary>
    double Factor(long update);
}

/// <summary>The rate stays at its base value (factor 1).</summary>
public sealed record ConstantSchedule : ILearningRateSchedule
{
    /// <summary>The shared instance.</summary>
    public static ConstantSchedule Instance { get; } = new();

    /// <inheritdoc/>
    public double Factor(long update) => 1.0;
}

/// <summary>
/// torch.optim.lr_scheduler.StepLR: the rate is multiplied by <see cref="Gamma"/> every
/// <see cref="StepSize"/> updates; factor(u) = Gamma^floor((u - 1) / StepSize).
/// </summary>
public sealed record StepSchedule : ILearningRateSchedule
{
    /// <param name="stepSize">Updates between decays (≥ 1).</param>
    /// <param name="gamma">Decay factor (&gt; 0; torch's default 0.1).</param>
    public StepSchedule(long stepSize, double gamma = 0.1)
    {
        StepSize = stepSize >= 1 ? stepSize : throw Checks.Error(nameof(StepSize), stepSize, "must be at least 1");
        Gamma = double.IsFinite(gamma) && gamma > 0 ? gamma : throw Checks.Error(nameof(Gamma), gamma, "must be positive");
    }

    /// <summary>Updates between decays.</summary>
    public long StepSize { get; }

    /// <summary>Decay factor applied every <see cref="StepSize"/> updates.</summary>
    public double Gamma { get; }

    /// <inheritdoc/>
    public double Factor(long update) => Math.Pow(Gamma, (Checks.Update(update) - 1) / StepSize);
}

/// <summary>
/// torch.optim.lr_scheduler.CosineAnnealingLR with <c>T_max = TotalSteps</c> and
/// <c>eta_min = MinFactor × base rate</c>: factor(u) = MinFactor + (1 - MinFactor)(1 + cos(π (u - 1) / TotalSteps)) / 2,
/// so update 1 runs at the base rate and update TotalSteps + 1 at the minimum. Past that
/// point the factor stays at <see cref="MinFactor"/> (PyTorch's would rise again along the cosine).
/// </summary>
public sealed record CosineSchedule : ILearningRateSchedule
{
    /// <param name="totalSteps">Updates over which the rate anneals (≥ 1).</param>
    /// <param name="minFactor">Final rate as a fraction of the base rate, in [0, 1] (default 0).</param>
    public CosineSchedule(long totalSteps, double minFactor = 0.0)
    {
        TotalSteps = totalSteps >= 1 ? totalSteps : throw Checks.Error(nameof(TotalSteps), totalSteps, "must be at least 1");
        MinFactor = minFactor is >= 0 and <= 1 ? minFactor : throw Checks.Error(nameof(MinFactor), minFactor, "must lie in [0, 1]");
    }

    /// <summary>Updates over which the rate anneals.</summary>
    public long TotalSteps { get; }

    /// <summary>Final rate as a fraction of the base rate.</summary>
    public double MinFactor { get; }

    /// <inheritdoc/>
    public double Factor(long update)
    {
        long e = Math.Min(Checks.Update(update) - 1, TotalSteps);
        return MinFactor + (1 - MinFactor) * (1 + Math.Cos(Math.PI * e / TotalSteps)) / 2;
    }
}

/// <summary>
/// Linear warm-up followed by another schedule, as PyTorch's
/// <c>SequentialLR([LinearLR(start_factor, total_iters=W), inner], milestones=[W])</c>:
/// for u ≤ W, factor(u) = StartFactor + (1 - StartFactor)(u - 1) / W; afterwards
/// factor(u) = Inner.Factor(u - W), so the inner schedule starts from its own update 1 once
/// warm-up ends (a cosine's TotalSteps counts the updates after warm-up).
/// </summary>
public sealed record WarmupSchedule : ILearningRateSchedule
{
    /// <param name="warmupSteps">Updates of warm-up (≥ 1).</param>
    /// <param name="inner">The schedule after warm-up (default constant).</param>
    /// <param name="startFactor">Factor of update 1, in (0, 1] (torch LinearLR's default 1/3).</param>
    public WarmupSchedule(long warmupSteps, ILearningRateSchedule? inner = null, double startFactor = 1.0 / 3)
    {
        WarmupSteps = warmupSteps >= 1 ? warmupSteps : throw Checks.Error(nameof(WarmupSteps), warmupSteps, "must be at least 1");
        StartFactor = startFactor is > 0 and <= 1 ? startFactor : throw Checks.Error(nameof(StartFactor), startFactor, "must lie in (0, 1]");
        Inner = inner ?? ConstantSchedule.Instance;
    }

    /// <summary>Updates of warm-up.</summary>
    public long WarmupSteps { get; }

    /// <summary>The schedule after warm-up.</summary>
    public ILearningRateSchedule Inner { get; }

    /// <summary>Factor of the first update.</summary>
    public double StartFactor { get; }

    /// <inheritdoc/>
    public double Factor(long update)
    {
        Checks.Update(update);
        return update <= WarmupSteps
            ? StartFactor + (1 - StartFactor) * (update - 1) / WarmupSteps
            : Inner.Factor(update - WarmupSteps);
    }
}
