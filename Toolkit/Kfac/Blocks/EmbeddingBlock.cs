using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Kfac.Blocks;

/// <summary>
/// An embedding table [V, d] (Gather of rows by ids): A is diagonal (each id's frequency),
/// G is the [d, d] factor of the gathered rows' gradients; V[j] = ∇W[j] (Ĝ + γ/π I)⁻¹ / (Â_jj + πγ).
/// </summary>
internal sealed class EmbeddingBlock : CurvatureBlock
{
    private readonly LayerInfo _layer;
    private readonly int _vocab, _d;
    private readonly double[] _a, _g, _aSum, _gSum;
    private readonly float[] _aInvDiag, _gIn, _gDamp, _gInv;
    private double _pi = 1;
    private int _batches;
    private long _k;
    private bool _valid;

    public EmbeddingBlock(LayerInfo layer, Slot weight, string reason) : base(layer.Name, "embedding", reason, [weight])
    {
        _layer = layer;
        _vocab = checked((int)layer.InFeatures);
        _d = checked((int)layer.OutFeatures);
        _a = new double[_vocab];
        _aSum = new double[_vocab];
        _g = new double[_d * _d];
        _gSum = new double[_d * _d];
        _aInvDiag = GC.AllocateArray<float>(_vocab, pinned: true);
        _gIn = GC.AllocateArray<float>(_d * _d, pinned: true);
        _gInv = GC.AllocateArray<float>(_d * _d, pinned: true);
        _gDamp = GC.AllocateArray<float>(1, pinned: true);
    }

    public override double Pi => _pi;

    public override bool Observe(ITrainingPass pass, int batchSize)
    {
        var a = pass.GetOutput(_layer.Outputs.FactorA!);
        var g = pass.GetOutput(_layer.Outputs.FactorG!);
        if (!AllFinite(a) || !AllFinite(g)) return false;
        AddFinite(_aSum, a);
        AddFinite(_gSum, g);
        _batches++;
        return true;
    }

    public override void Fold(double decay)
    {
        if (_batches == 0) return;
        _k++;
        double e = Epsilon(_k, decay);
        Fold(_a, _aSum, _batches, e);
        Fold(_g, _gSum, _batches, e);
        _batches = 0;
    }

    public override void PrepareInverse(double gamma, double boost)
    {
        double trA = _a.Sum() / _vocab, trG = 0;
        for (int i = 0; i < _d; i++) trG += _g[i * _d + i];
        trG /= _d;
        _pi = trA > 0 && trG > 0 && double.IsFinite(trA) && double.IsFinite(trG) ? Math.Clamp(Math.Sqrt(trA / trG), 1e-6, 1e6) : 1;
        for (int j = 0; j < _vocab; j++) _aInvDiag[j] = (float)(1 / (_a[j] + _pi * gamma * boost));
        _gDamp[0] = (float)(gamma / _pi * boost);
        FactorMath.Narrow(_g, _gIn);
    }

    public override void EmitInverse(ProgramBuilder pb, ProgramBindings b)
    {
        string id = $"e{b.Inputs.Count}";
        long[] shape = [1, _d, _d];
        string x = pb.Input(id, shape);
        string lambda = pb.Input(id + "_damp", [1]);
        b.Inputs.Add((x, _gIn, shape));
        b.Inputs.Add((lambda, _gDamp, [1]));
        string damped = pb.Op("Add", [x, pb.Op("Mul", [pb.Reshape(lambda, 1, 1, 1), pb.Reshape(pb.EyeOfFirst(x), 1, _d, _d)])]);
        pb.Output(pb.Op("Inverse", [damped]), id + "_inv", shape);
        b.Outputs.Add((id + "_inv", _gInv, shape));
    }

    public override bool InverseIsFinite() => _valid = AllFinite(_gInv) && AllFinite(_aInvDiag);

    public override void EmitPrecondition(ProgramBuilder pb, ProgramBindings b)
    {
        string id = $"m{b.Inputs.Count}";
        var shape = Slots[0].Parameter.Shape;
        string w = pb.Input(id + "_w", shape);
        string ainv = pb.Input(id + "_ainv", [_vocab]);
        string ginv = pb.Input(id + "_ginv", [1, _d, _d]);
        b.Inputs.Add((w, Slots[0].Work, shape));
        b.Inputs.Add((ainv, _aInvDiag, [_vocab]));
        b.Inputs.Add((ginv, _gInv, [1, _d, _d]));
        string v = pb.MatMul(pb.Op("Mul", [w, pb.Reshape(ainv, _vocab, 1)]), pb.Reshape(ginv, _d, _d));
        pb.Output(v, id + "_v", shape);
        b.Outputs.Add((id + "_v", Slots[0].V, shape));
    }

    public override void Precondition(double lambda, double eta)
    {
        if (!_valid) Slots[0].Work.AsSpan().CopyTo(Slots[0].V);
    }

    public override IEnumerable<string> StateKeys => [$"A:{Name}", $"G:{Name}", $"Ainv:{Name}", $"Ginv:{Name}", $"k:{Name}", $"valid:{Name}"];

    public override void Save(OptimizerState state)
    {
        state.DoubleTensors[$"A:{Name}"] = (double[])_a.Clone();
        state.DoubleTensors[$"G:{Name}"] = (double[])_g.Clone();
        state.DoubleTensors[$"Ainv:{Name}"] = [.. _aInvDiag.Select(x => (double)x)];
        state.DoubleTensors[$"Ginv:{Name}"] = [.. _gInv.Select(x => (double)x)];
        state.Longs[$"k:{Name}"] = _k;
        state.Longs[$"valid:{Name}"] = _valid ? 1 : 0;
    }

    public override void Load(OptimizerState state)
    {
        Load(state, $"A:{Name}", _a.Length).CopyTo(_a, 0);
        Load(state, $"G:{Name}", _g.Length).CopyTo(_g, 0);
        var ai = Load(state, $"Ainv:{Name}", _vocab);
        var gi = Load(state, $"Ginv:{Name}", _gInv.Length);
        for (int i = 0; i < ai.Length; i++) _aInvDiag[i] = (float)ai[i];
        for (int i = 0; i < gi.Length; i++) _gInv[i] = (float)gi[i];
        _k = state.Longs[$"k:{Name}"];
        _valid = state.Longs[$"valid:{Name}"] != 0;
        Array.Clear(_aSum);
        Array.Clear(_gSum);
        _batches = 0;
    }
}
