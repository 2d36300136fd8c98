namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// What an optimizer may read from, or ask of, the training session during
/// <see cref="IOptimizer.Step"/>. Plain optimizers ignore it; K-FAC reads its per-layer taps
/// (layer inputs <c>a_l</c>, pre-activation gradients <c>g_l</c>, their sampled-target
/// counterparts) and asks for extra passes (a Jacobian-vector product, the loss at a trial
/// point). The runtime implements it over the training graph's outputs; output names are
/// the ones the training manifest assigns.
/// </summary>
public interface ITrainingPass
{
    /// <summary>
    /// The values of graph output <paramref name="name"/> from the most recent run (the
    /// step's own run, or the last <see cref="RunExtra"/>). The span is valid only until the
    /// next run and must not be kept. Throws <see cref="KeyNotFoundException"/> naming the output
    /// when the graph has no such output.
    /// </summary>
    ReadOnlySpan<float> GetOutput(string name);

    /// <summary>The shape of graph output <paramref name="name"/> from the most recent run.</summary>
    IReadOnlyList<long> GetOutputShape(string name);

    /// <summary>
    /// The writable buffer of graph input <paramref name="name"/> that only extra passes
    /// read, e.g. the tangent a Jacobian-vector product pushes forward (one per parameter).
    /// Fill it before <see cref="RunExtra"/>; the span stays valid for the session.
    /// </summary>
    Span<float> GetInput(string name);

    /// <summary>
    /// Runs an extra pass over the current minibatch with the current parameter values, for
    /// the named <paramref name="purpose"/> (a role the training manifest declares, e.g. a
    /// Jacobian-vector product or a loss-only forward); its outputs are then read through
    /// <see cref="GetOutput"/>. Throws <see cref="NotSupportedException"/> naming the purpose when
    /// the training graph was built without it.
    /// </summary>
    void RunExtra(string purpose);

    /// <summary>
    /// The loss over the current minibatch at the current parameter values (a forward pass,
    /// no backward): what the Levenberg–Marquardt rule compares after an update.
    /// </summary>
    double EvaluateLoss();
}

/// <summary>
/// An optimizer that reads every (micro-)batch's run, not only the one it steps on: K-FAC
/// folds the factor statistics of each micro-batch under gradient accumulation. The trainer
/// calls <see cref="ObserveBatch"/> after each successful run, before the gradients are
/// accumulated; <see cref="StepContext.UpdateCount"/> is then the update the batch belongs to.
/// </summary>
public interface IBatchObserver
{
    void ObserveBatch(StepContext context, int batchSize);

    /// <summary>
    /// Whether the runs of update <paramref name="update"/> need the graph's statistics outputs
    /// (false lets the runtime run a cheaper graph without them: K-FAC between statistics updates).
    /// </summary>
    bool NeedsStatistics(long update) => true;

    /// <summary>Forgets the batches observed since the last update (an update that is skipped or rolled back).</summary>
    void DiscardObserved() { }

    /// <summary>
    /// Data-parallel: called on every rank before rank 0 saves a checkpoint. Returns the state the
    /// ranks hold together when part of it is kept apart per rank (K-FAC's running factors, which
    /// each rank folds on its own between inverse refreshes: their mean), for rank 0 to save; null
    /// when <see cref="IOptimizer.SaveState"/> already is that state. The ranks' own state is left
    /// as it was, so writing a checkpoint never changes the run.
    /// </summary>
    OptimizerState? SaveSharedState(Runtime.ICollectives collectives) => null;
}

/// <summary>An optimizer that can recover from a diverged step (a non-finite loss) instead of stopping the run.</summary>
public interface IRecoverable
{
    /// <summary>Returns to the last good state; false when it cannot (then the run stops). <paramref name="message"/> says what it did.</summary>
    bool TryRecover(out string message);

    /// <summary>What to change when the run diverges and recovery is off (one sentence, for the error message).</summary>
    string DivergenceAdvice { get; }
}
