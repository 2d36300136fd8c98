using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Kfac.Blocks;

/// <summary>
/// A diagonal Fisher block for a parameter no layer kind covers (LayerNorm/BatchNorm scale and
/// shift, lone biases, positional tables): D ← EMA of N·ĝ⊙ĝ with ĝ the batch-mean gradient of
/// the sampled-target loss (the sampled gradients have mean zero, so N·ĝ² estimates the per-example
/// second moment), V = ∇ / (D + λ + η).
/// </summary>
internal sealed class DiagonalBlock(Slot slot, string sampledGradient, string reason) : CurvatureBlock(slot.Name, "diagonal", reason, [slot])
{
    private readonly double[] _d = new double[slot.Parameter.Value.Length];
    private readonly double[] _sum = new double[slot.Parameter.Value.Length];
    private int _batches;
    private long _k;

    public override bool Observe(ITrainingPass pass, int batchSize)
    {
        var g = pass.GetOutput(sampledGradient);
        if (!AllFinite(g)) return false;
        for (int i = 0; i < _sum.Length; i++) _sum[i] += (double)batchSize * g[i] * g[i];
        _batches++;
        return true;
    }

    public override IReadOnlyList<double[]> StatisticSums => _sums ??= [_sum];

    private double[][]? _sums;

    public override int StatisticBatches { get => _batches; set => _batches = value; }

    public override void Fold(double decay)
    {
        if (_batches == 0) return;
        _k++;
        Fold(_d, _sum, _batches, Epsilon(_k, decay));
        _batches = 0;
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
        Array.Clear(_sum);
        _batches = 0;
    }
}
