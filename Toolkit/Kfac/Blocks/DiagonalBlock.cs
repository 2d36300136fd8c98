using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Kfac.Blocks;

/// <summary>
/// A diagonal Fisher block for a parameter no layer kind covers (LayerNorm/BatchNorm scale and
/// shift, lone biases, positional tables): D ← EMA of N·ĝ⊙ĝ with ĝ the batch-mean gradient of
/// the sampled-target loss (the sampled gradients have mean zero, so N·ĝ² estimates the per-example
/// second moment), V = ∇ / (D + λ + η).
/// The square is taken after the ranks' sums meet: each micro-batch keeps N_r·ĝ_r (its gradient
/// sum) and N_r, a data-parallel run adds those up over the ranks, and <see cref="Fold"/> squares
/// (Σ N_r ĝ_r)² / Σ N_r — the statistic one process computes on the whole micro-batch (squaring
/// per rank, Σ N_r ĝ_r², would estimate the same moment with other noise, and another trajectory).
/// </summary>
internal sealed class DiagonalBlock(Slot slot, string sampledGradient, string reason) : CurvatureBlock(slot.Name, "diagonal", reason, [slot])
{
    private readonly double[] _d = new double[slot.Parameter.Value.Length];
    private readonly double[] _square = new double[slot.Parameter.Value.Length];
    /// <summary>Per observed micro-batch: N·ĝ, then N in the last entry (zeros for a dropped one: every rank keeps the same layout).</summary>
    private readonly List<double[]> _micro = [];
    private readonly Stack<double[]> _spare = new();
    private long _k;

    public override bool Observe(ITrainingPass pass, int batchSize, bool lastRun)
    {
        int n = _d.Length;
        var m = _spare.Count > 0 ? _spare.Pop() : new double[n + 1];
        _micro.Add(m);
        var g = pass.GetOutput(sampledGradient);
        if (!AllFinite(g))
        {
            Array.Clear(m);
            return false;
        }
        for (int i = 0; i < n; i++) m[i] = (double)batchSize * g[i];
        m[n] = batchSize;
        return true;
    }

    public override IReadOnlyList<double[]> StatisticSums => _micro;

    /// <summary>The micro-batches observed; the counts that matter travel inside <see cref="StatisticSums"/>.</summary>
    public override int StatisticBatches { get => _micro.Count; set { } }

    public override void Discard() => Recycle();

    public override void Fold(double decay, bool countEmpty = false)
    {
        int n = _d.Length, batches = 0;
        Array.Clear(_square);
        foreach (var m in _micro)
        {
            double count = m[n];
            if (count <= 0) continue;   // dropped on every rank
            for (int i = 0; i < n; i++) _square[i] += m[i] * m[i] / count;
            batches++;
        }
        Recycle();
        if (batches == 0) return;
        _k++;
        Fold(_d, _square, batches, Epsilon(_k, decay));
    }

    private void Recycle()
    {
        foreach (var m in _micro) _spare.Push(m);
        _micro.Clear();
    }

    public override void Precondition(double lambda, double eta)
    {
        var s = Slots[0];
        double damping = lambda + eta;
        for (int i = 0; i < s.V.Length; i++) s.V[i] = (float)(s.Work[i] / (_d[i] + damping));
    }

    public override IEnumerable<string> StateKeys => [$"D:{Name}", $"k:{Name}"];

    public override void Save(OptimizerState state)
    {
        state.DoubleTensors[$"D:{Name}"] = (double[])_d.Clone();
        state.Longs[$"k:{Name}"] = _k;
    }

    public override void Load(OptimizerState state)
    {
        Load(state, $"D:{Name}", _d.Length).CopyTo(_d, 0);
        _k = state.Longs[$"k:{Name}"];
        Recycle();
    }
}
