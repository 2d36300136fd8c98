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

/// <summary>
/// Linear decay to 0 with optional linear warm-up from 0, as Hugging Face transformers'
/// <c>get_linear_schedule_with_warmup(num_warmup_steps = W, num_training_steps = T)</c> (the
/// Trainer's default): with s = u − 1, factor = s / W while s &lt; W, then
/// max(0, (T − s) / (T − W)). With warm-up the first update runs at rate 0, as there.
/// </summary>
public sealed record LinearSchedule : ILearningRateSchedule
{
    /// <param name="totalSteps">Updates until the rate reaches 0 (≥ 1).</param>
    /// <param name="warmupSteps">Updates of warm-up from 0 (0 ≤ W &lt; T; default 0).</param>
    public LinearSchedule(long totalSteps, long warmupSteps = 0)
    {
        TotalSteps = totalSteps >= 1 ? totalSteps : throw Checks.Error(nameof(TotalSteps), totalSteps, "must be at least 1");
        WarmupSteps = warmupSteps >= 0 && warmupSteps < totalSteps ? warmupSteps
            : throw Checks.Error(nameof(WarmupSteps), warmupSteps, $"must lie in [0, {totalSteps}) (the total updates)");
    }

    /// <summary>Updates until the rate reaches 0.</summary>
    public long TotalSteps { get; }

    /// <summary>Updates of warm-up from 0.</summary>
    public long WarmupSteps { get; }

    /// <inheritdoc/>
    public double Factor(long update)
    {
        long s = Checks.Update(update) - 1;
        if (s < WarmupSteps) return (double)s / Math.Max(1, WarmupSteps);
        return Math.Max(0.0, (double)(TotalSteps - s) / Math.Max(1, TotalSteps - WarmupSteps));
    }
}

/// <summary>
/// torch.optim.lr_scheduler.OneCycleLR with <c>anneal_strategy="cos"</c>, two phases, relative to
/// its <c>max_lr</c> (the base rate): from 1/<see cref="DivFactor"/> up to 1 over the first
/// <see cref="PctStart"/>·T updates, then down to 1/(<see cref="DivFactor"/>·<see cref="FinalDivFactor"/>)
/// at update T, each along half a cosine. Past T the factor stays at its final value (torch
/// raises). Momentum is not cycled (torch's <c>cycle_momentum</c>): the optimizer's stays.
/// </summary>
public sealed record OneCycleSchedule : ILearningRateSchedule
{
    /// <param name="totalSteps">T, the updates of the cycle (≥ 2).</param>
    /// <param name="pctStart">Fraction of T spent rising, in (0, 1) (torch's default 0.3).</param>
    /// <param name="divFactor">Initial rate = max / divFactor (&gt; 0; default 25).</param>
    /// <param name="finalDivFactor">Final rate = initial / finalDivFactor (&gt; 0; default 1e4).</param>
    public OneCycleSchedule(long totalSteps, double pctStart = 0.3, double divFactor = 25, double finalDivFactor = 1e4)
    {
        TotalSteps = totalSteps >= 2 ? totalSteps : throw Checks.Error(nameof(TotalSteps), totalSteps, "must be at least 2");
        PctStart = pctStart is > 0 and < 1 ? pctStart : throw Checks.Error(nameof(PctStart), pctStart, "must lie in (0, 1)");
        DivFactor = double.IsFinite(divFactor) && divFactor > 0 ? divFactor : throw Checks.Error(nameof(DivFactor), divFactor, "must be positive");
        FinalDivFactor = double.IsFinite(finalDivFactor) && finalDivFactor > 0 ? finalDivFactor : throw Checks.Error(nameof(FinalDivFactor), finalDivFactor, "must be positive");
    }

    public long TotalSteps { get; }
    public double PctStart { get; }
    public double DivFactor { get; }
    public double FinalDivFactor { get; }

    /// <inheritdoc/>
    public double Factor(long update)
    {
        double step = Math.Min(Checks.Update(update) - 1, TotalSteps - 1);
        double initial = 1 / DivFactor, final = initial / FinalDivFactor;
        double peak = PctStart * TotalSteps - 1;   // torch's end_step of the first phase
        return step <= peak
            ? Cos(initial, 1, step / peak)
            : Cos(1, final, (step - peak) / (TotalSteps - 1 - peak));
    }

    private static double Cos(double start, double end, double pct) => end + (start - end) / 2 * (Math.Cos(Math.PI * pct) + 1);
}

/// <summary>
/// torch.optim.lr_scheduler.ReduceLROnPlateau on a loss (<c>mode="min"</c>,
/// <c>threshold_mode="rel"</c>): after each validation (<see cref="Observe"/>), when the loss has
/// not improved on the best by more than <see cref="Threshold"/> (relative) for more than
/// <see cref="Patience"/> validations, the factor is multiplied by <see cref="ReduceBy"/> (never
/// below <see cref="MinFactor"/>), then <see cref="Cooldown"/> validations pass before bad ones
/// count again. Its state (<see cref="SaveState"/>) goes into checkpoints, so a resumed run
/// continues with the same rate and counters. The factor applies to every group's base rate.
/// </summary>
public sealed class PlateauSchedule : ILearningRateSchedule
{
    /// <param name="reduceBy">torch's <c>factor</c>, in (0, 1) (default 0.1).</param>
    /// <param name="patience">Validations without improvement tolerated (default 10).</param>
    /// <param name="threshold">Relative improvement that counts, ≥ 0 (default 1e-4).</param>
    /// <param name="cooldown">Validations after a reduction before bad ones count (default 0).</param>
    /// <param name="minFactor">Lowest factor, torch's <c>min_lr</c> / base rate, ≥ 0 (default 0).</param>
    public PlateauSchedule(double reduceBy = 0.1, int patience = 10, double threshold = 1e-4, int cooldown = 0, double minFactor = 0)
    {
        ReduceBy = reduceBy is > 0 and < 1 ? reduceBy : throw Checks.Error(nameof(ReduceBy), reduceBy, "must lie in (0, 1)");
        Patience = patience >= 0 ? patience : throw Checks.Error(nameof(Patience), patience, "must be 0 or more");
        Threshold = double.IsFinite(threshold) && threshold >= 0 ? threshold : throw Checks.Error(nameof(Threshold), threshold, "must be 0 or more");
        Cooldown = cooldown >= 0 ? cooldown : throw Checks.Error(nameof(Cooldown), cooldown, "must be 0 or more");
        MinFactor = minFactor is >= 0 and <= 1 ? minFactor : throw Checks.Error(nameof(MinFactor), minFactor, "must lie in [0, 1]");
    }

    public double ReduceBy { get; }
    public int Patience { get; }
    public double Threshold { get; }
    public int Cooldown { get; }
    public double MinFactor { get; }

    /// <summary>The current factor (1 until the first reduction).</summary>
    public double Current { get; private set; } = 1;

    /// <summary>The best loss seen (+∞ before the first validation).</summary>
    public double Best { get; private set; } = double.PositiveInfinity;

    /// <summary>Validations since the last improvement (torch's <c>num_bad_epochs</c>).</summary>
    public int BadValidations { get; private set; }

    /// <summary>Validations of cooldown left.</summary>
    public int CooldownLeft { get; private set; }

    /// <inheritdoc/>
    public double Factor(long update) => Current;

    /// <summary>Takes one validation loss; true when it lowered the factor.</summary>
    public bool Observe(double loss)
    {
        if (loss < Best * (1 - Threshold)) { Best = loss; BadValidations = 0; }
        else BadValidations++;
        if (CooldownLeft > 0) { CooldownLeft--; BadValidations = 0; }
        if (BadValidations <= Patience) return false;
        BadValidations = 0;
        CooldownLeft = Cooldown;
        double next = Math.Max(Current * ReduceBy, MinFactor);
        if (!(next < Current)) return false;
        Current = next;
        return true;
    }

    /// <summary>The state a checkpoint keeps: factor, best loss, bad validations, cooldown left.</summary>
    public double[] SaveState() => [Current, Best, BadValidations, CooldownLeft];

    /// <summary>Restores <see cref="SaveState"/>'s values.</summary>
    public void LoadState(ReadOnlySpan<double> state)
    {
        if (state.Length != 4) throw new ArgumentException($"plateau schedule state has {state.Length} values, expected 4", nameof(state));
        (Current, Best, BadValidations, CooldownLeft) = (state[0], state[1], (int)state[2], (int)state[3]);
    }
}
