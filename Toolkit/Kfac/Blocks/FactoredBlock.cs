using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Kfac.Blocks;

/// <summary>
/// What every block with two factors shares: the batch statistics A and G that the training
/// graph emits for its layer, their float64 sums over the update's (micro-)batches, the running
/// estimates they fold into, whether the last damped inverses were finite, and the state entries
/// of all that. <see cref="KroneckerBlock"/> and <see cref="EmbeddingBlock"/> add their inverses.
/// </summary>
internal abstract class FactoredBlock : CurvatureBlock
{
    protected readonly LayerInfo Layer;
    protected readonly double[] A, G;
    private readonly double[] _aSum, _gSum;
    private int _batches;
    private long _k;

    protected FactoredBlock(LayerInfo layer, string kind, string reason, Slot[] slots, int aLength, int gLength)
        : base(layer.Name, kind, reason, slots)
    {
        Layer = layer;
        A = new double[aLength];
        G = new double[gLength];
        _aSum = new double[aLength];
        _gSum = new double[gLength];
    }

    /// <summary>Whether the damped inverses of the last refresh were all finite.</summary>
    protected bool Valid { get; set; }

    public override bool Observe(ITrainingPass pass, int batchSize, bool lastRun)
    {
        var a = pass.GetOutput(Layer.Outputs.FactorA!);
        var g = pass.GetOutput(Layer.Outputs.FactorG!);
        if (a.Length != A.Length || g.Length != G.Length)
            throw new InvalidOperationException($"layer '{Name}': factor outputs hold {a.Length} and {g.Length} values, expected {A.Length} and {G.Length}");
        if (_pending is not null)
            throw new InvalidOperationException(
                $"layer '{Name}': a second batch was observed for an update said to be one run alone (StepContext.OneRunPerUpdate); its first batch's statistics are gone");
        if (lastRun && _batches == 0)
        {
            // The update is this run alone: check it now, fold it from the pass at Fold (the same
            // bits as through the sums, which would hold exactly this batch, at less than half the traffic).
            if (!FactorMath.AllFinite(a) || !FactorMath.AllFinite(g)) return false;
            _pending = pass;
            return true;
        }
        // One pass per factor: accumulate and check together. A non-finite batch poisons the
        // sums, so the whole update's statistics are dropped (the running factors stay as they were).
        bool finite = FactorMath.Accumulate(_aSum, a) & FactorMath.Accumulate(_gSum, g);
        if (finite)
        {
            _batches++;
            return true;
        }
        Array.Clear(_aSum);
        Array.Clear(_gSum);
        _batches = 0;
        return false;
    }

    /// <summary>The run whose statistics fold straight from its outputs at the next <see cref="Fold"/> (Observe's lastRun), or null.</summary>
    private ITrainingPass? _pending;

    public override void Discard()
    {
        base.Discard();
        _pending = null;
    }

    public override IReadOnlyList<double[]> StatisticSums => _sums ??= [_aSum, _gSum];

    private double[][]? _sums;

    public override int StatisticBatches { get => _batches; set => _batches = value; }

    public override IReadOnlyList<double[]> RunningFactors => _running ??= [A, G];

    private double[][]? _running;

    public override void Fold(double decay, bool countEmpty = false)
    {
        if (_pending is { } pass)
        {
            _pending = null;
            double ep = Epsilon(++_k, decay);
            FactorMath.FoldOne(A, pass.GetOutput(Layer.Outputs.FactorA!), ep);
            FactorMath.FoldOne(G, pass.GetOutput(Layer.Outputs.FactorG!), ep);
            return;
        }
        if (_batches == 0)
        {
            if (countEmpty) _k++;
            return;
        }
        _k++;
        double e = Epsilon(_k, decay);
        Fold(A, _aSum, _batches, e);
        Fold(G, _gSum, _batches, e);
        _batches = 0;
    }

    /// <summary>The float32 inverses to save with the factors (the A-side one, the G-side one).</summary>
    protected abstract (float[] A, float[] G) Inverses { get; }

    public override void Precondition(double lambda, double eta)
    {
        // The program wrote V; where the damped inverses were not finite, fall back to the gradient.
        if (Valid) return;
        foreach (var s in Slots) s.Work.AsSpan().CopyTo(s.V);
    }

    public override IEnumerable<string> StateKeys => [$"A:{Name}", $"G:{Name}", $"Ainv:{Name}", $"Ginv:{Name}", $"k:{Name}", $"valid:{Name}"];

    public override void Save(OptimizerState state)
    {
        var (ai, gi) = Inverses;
        state.DoubleTensors[$"A:{Name}"] = (double[])A.Clone();
        state.DoubleTensors[$"G:{Name}"] = (double[])G.Clone();
        state.DoubleTensors[$"Ainv:{Name}"] = [.. ai.Select(x => (double)x)];
        state.DoubleTensors[$"Ginv:{Name}"] = [.. gi.Select(x => (double)x)];
        state.Longs[$"k:{Name}"] = _k;
        state.Longs[$"valid:{Name}"] = Valid ? 1 : 0;
    }

    public override void Load(OptimizerState state)
    {
        var (ai, gi) = Inverses;
        Load(state, $"A:{Name}", A.Length).CopyTo(A, 0);
        Load(state, $"G:{Name}", G.Length).CopyTo(G, 0);
        var savedA = Load(state, $"Ainv:{Name}", ai.Length);
        var savedG = Load(state, $"Ginv:{Name}", gi.Length);
        for (int i = 0; i < ai.Length; i++) ai[i] = (float)savedA[i];
        for (int i = 0; i < gi.Length; i++) gi[i] = (float)savedG[i];
        _k = state.Longs[$"k:{Name}"];
        Valid = state.Longs[$"valid:{Name}"] != 0;
        Array.Clear(_aSum);
        Array.Clear(_gSum);
        _batches = 0;
        _pending = null;
    }
}
