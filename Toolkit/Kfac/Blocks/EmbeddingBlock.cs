using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Kfac.Blocks;

/// <summary>
/// An embedding table [V, d] (Gather of rows by ids): A is diagonal (each id's frequency),
/// G is the [d, d] factor of the gathered rows' gradients; V[j] = ∇W[j] (Ĝ + γ/π I)⁻¹ / (Â_jj + πγ).
/// </summary>
internal sealed class EmbeddingBlock : FactoredBlock
{
    private readonly int _vocab, _d;
    private readonly float[] _aInvDiag, _gInv;
    private readonly DampedFactor _g;
    private double _pi = 1;

    public EmbeddingBlock(LayerInfo layer, Slot weight, string reason)
        : base(layer, "embedding", reason, [weight], checked((int)layer.InFeatures), checked((int)(layer.OutFeatures * layer.OutFeatures)))
    {
        _vocab = checked((int)layer.InFeatures);
        _d = checked((int)layer.OutFeatures);
        _aInvDiag = GC.AllocateArray<float>(_vocab, pinned: true);
        _gInv = GC.AllocateArray<float>(_d * _d, pinned: true);
        _g = new DampedFactor(G, 1, _d, _gInv);
        DampedFactors = [_g];
    }

    public override double Pi => _pi;

    public override void PrepareInverse(double gamma, double boost)
    {
        double trA = A.Sum() / _vocab, trG = FactorMath.Trace(G, _d) / _d;
        _pi = trA > 0 && trG > 0 && double.IsFinite(trA) && double.IsFinite(trG) ? Math.Clamp(Math.Sqrt(trA / trG), 1e-6, 1e6) : 1;
        for (int j = 0; j < _vocab; j++) _aInvDiag[j] = (float)(1 / (A[j] + _pi * gamma * boost));
        _g.Shift[0] = gamma / _pi * boost;
        _g.Prepare();
    }

    public override bool InverseIsFinite() => Valid = AllFinite(_gInv) && AllFinite(_aInvDiag);

    // The diagonal A side is computed on every rank (PrepareInverse); only G's inverse is shared.
    public override IReadOnlyList<DampedFactor> DampedFactors { get; }

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

    protected override (float[] A, float[] G) Inverses => (_aInvDiag, _gInv);
}
