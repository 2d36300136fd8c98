namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// Gradient accumulation over micro-batches: the runtime runs a micro-batch, which writes
/// <see cref="Parameter.Grad"/>, then calls <see cref="Add"/>; when that returns true the grads
/// hold the whole batch's gradient and the optimizer should step.
/// <para>
/// Semantics: the graph's loss is a mean over its micro-batch, so the gradient of the mean
/// loss over the whole batch is the example-weighted average of the micro-batch gradients,
/// Σ nᵢ gᵢ / Σ nᵢ; with equal micro-batches that is their plain average. (A summed loss
/// would instead need the plain sum: pass examples = 1 and multiply by the count.)
/// </para>
/// Buffers are allocated once; <see cref="Add"/> allocates nothing.
/// </summary>
public sealed class GradientAccumulator
{
    private readonly Parameter[] _parameters;
    private readonly float[][] _sums;
    private long _examples;

    /// <param name="parameters">The model's parameters; only trainable ones are accumulated.</param>
    /// <param name="microBatches">Micro-batches per update, ≥ 1 (1: every batch steps, nothing is buffered).</param>
    public GradientAccumulator(IReadOnlyList<Parameter> parameters, int microBatches)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (microBatches < 1) throw Checks.Error(nameof(microBatches), microBatches, "must be at least 1");
        MicroBatches = microBatches;
        _parameters = [.. parameters.Where(p => p.Trainable)];
        _sums = microBatches == 1 ? [] : [.. _parameters.Select(p => new float[p.Grad.Length])];
    }

    /// <summary>Micro-batches per update.</summary>
    public int MicroBatches { get; }

    /// <summary>Micro-batches added since the last completed update.</summary>
    public int Pending { get; private set; }

    /// <summary>
    /// Adds the gradients now in <see cref="Parameter.Grad"/>, from a micro-batch of
    /// <paramref name="examples"/> examples (its loss a mean over them). Returns true when
    /// <see cref="MicroBatches"/> micro-batches are in: the grads then hold their weighted
    /// average and the accumulator starts over. Returns false otherwise (the grads may then
    /// be overwritten by the next micro-batch).
    /// </summary>
    public bool Add(int examples = 1)
    {
        if (examples < 1) throw Checks.Error(nameof(examples), examples, "must be at least 1");
        if (MicroBatches == 1) return true;
        if (Pending + 1 < MicroBatches)
        {
            for (int i = 0; i < _parameters.Length; i++)
                Kernels.Accumulate(_sums[i], _parameters[i].Grad, examples, first: Pending == 0);
            _examples += examples;
            Pending++;
            return false;
        }
        float inv = (float)(1.0 / (_examples + examples));
        for (int i = 0; i < _parameters.Length; i++)
            Kernels.FinishAverage(_parameters[i].Grad, _sums[i], examples, inv);
        Reset();
        return true;
    }

    /// <summary>
    /// Completes a partial accumulation (the end of an epoch whose batch count is not a
    /// multiple of <see cref="MicroBatches"/>): writes the weighted average of the pending
    /// micro-batches into the grads and returns true, or returns false when none is pending.
    /// </summary>
    public bool Flush()
    {
        if (Pending == 0) return false;
        float inv = (float)(1.0 / _examples);
        for (int i = 0; i < _parameters.Length; i++)
        {
            _sums[i].AsSpan().CopyTo(_parameters[i].Grad);
            Kernels.Scale(_parameters[i].Grad, inv);
        }
        Reset();
        return true;
    }

    /// <summary>Drops any pending micro-batches.</summary>
    public void Reset()
    {
        Pending = 0;
        _examples = 0;
    }
}
