namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// An optimizer over a fixed list of <see cref="Parameter"/>s, given at construction.
/// </summary>
public interface IOptimizer
{
    /// <summary>
    /// Applies one update, in place, to every trainable parameter's <see cref="Parameter.Value"/>
    /// from its <see cref="Parameter.Grad"/>. <paramref name="context"/>'s parameters must be the
    /// list the optimizer was built over. Allocates nothing in steady state.
    /// </summary>
    void Step(StepContext context);

    /// <summary>A snapshot of the optimizer's state (buffers are copied), for a checkpoint.</summary>
    OptimizerState SaveState();

    /// <summary>
    /// Restores a snapshot taken by <see cref="SaveState"/>. Throws <see cref="ArgumentException"/>
    /// naming the first mismatch (another optimizer kind, another model's parameters, a buffer
    /// of the wrong size) and then leaves the current state untouched. Hyperparameters come
    /// from the options the optimizer was built with, not from the snapshot.
    /// </summary>
    void LoadState(OptimizerState state);
}
