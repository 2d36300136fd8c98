namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// Everything one <see cref="IOptimizer.Step"/> sees. The runtime creates one context per
/// training session and reuses it, advancing <see cref="UpdateCount"/> and <see cref="Loss"/>
/// before each update, so a step allocates nothing.
/// </summary>
public sealed class StepContext
{
    /// <param name="parameters">The model's parameters, the same list the optimizer was built over.</param>
    /// <param name="pass">The session's extra outputs and passes, for optimizers that need them (K-FAC); null when none.</param>
    public StepContext(IReadOnlyList<Parameter> parameters, ITrainingPass? pass = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        Parameters = parameters;
        Pass = pass;
    }

    /// <summary>The model's parameters; their <see cref="Parameter.Grad"/> holds this update's gradient.</summary>
    public IReadOnlyList<Parameter> Parameters { get; }

    /// <summary>
    /// The 1-based index of the update about to be applied (1 for the first update, counting
    /// updates, not micro-batches). Learning-rate schedules are evaluated at it. Default 1.
    /// </summary>
    public long UpdateCount
    {
        get;
        set => field = value >= 1 ? value
            : throw new ArgumentOutOfRangeException(nameof(UpdateCount), value, "The update count is 1-based.");
    } = 1;

    /// <summary>The minibatch loss of the run that produced the gradients (NaN when unknown).</summary>
    public double Loss { get; set; } = double.NaN;

    /// <summary>
    /// Whether every <see cref="Parameter.Grad"/> is exactly the gradient of the session's last run:
    /// no accumulation over micro-batches, no all-reduce over ranks, no clipping. K-FAC may then
    /// precondition through that run's per-example rows. The trainer sets it per update; default false.
    /// </summary>
    public bool GradientIsLastRun { get; set; }

    /// <summary>
    /// Whether every update is made of one run of this session alone: no gradient accumulation over
    /// micro-batches, no data-parallel ranks, and no run between <see cref="IBatchObserver.ObserveBatch"/>
    /// and <see cref="IOptimizer.Step"/>. An observer may then read the run's outputs at the step instead
    /// of copying them when it observes (K-FAC folds its factor statistics straight from them), and a
    /// second observation before the step is an error. The trainer sets it; default false.
    /// </summary>
    public bool OneRunPerUpdate { get; set; }

    /// <summary>The session's extra outputs and passes, or null when the runtime offers none.</summary>
    public ITrainingPass? Pass { get; }

    /// <summary>How the ranks of a data-parallel run combine what they computed (K-FAC: the factor statistics). Default one process.</summary>
    public Runtime.ICollectives Collectives { get; init; } = Runtime.SingleProcess.Instance;

    /// <summary>Moves to the next update: increments <see cref="UpdateCount"/> and records <paramref name="loss"/>.</summary>
    public void Advance(double loss)
    {
        UpdateCount++;
        Loss = loss;
    }
}
