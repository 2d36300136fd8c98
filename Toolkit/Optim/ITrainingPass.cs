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
}
