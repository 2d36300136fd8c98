using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Kfac.Blocks;

/// <summary>
/// A Kronecker-factored block (Toolkit/Kfac/README.md): a dense layer (2-D, or applied over
/// extra axes in the expand form) or a convolution (KFC; grouped and depthwise convs are
/// block-diagonal over their groups). Keeps Â and Ĝ ([groups, d, d], float64), their damped
/// inverses (float32, refreshed by Cholesky or the inverse program: <see cref="DampedFactor"/>) and preconditions
/// V = (Ĝ + γ/π I)⁻¹ ∇W̄ (Â + πγ I)⁻¹ in the preconditioning program.
/// </summary>
internal sealed class KroneckerBlock : FactoredBlock
{
    private readonly Slot _weight;
    private readonly Slot? _bias;
    private readonly int _groups, _dA, _dG, _perIn;
    private readonly float[] _aInv, _gInv;
    private readonly DampedFactor _a, _g;
    private readonly double[] _pi;

    public KroneckerBlock(LayerInfo layer, Slot weight, Slot? bias, string reason)
        : base(layer, "kronecker", reason, bias is null ? [weight] : [weight, bias], Size(layer, bias, a: true), Size(layer, bias, a: false))
    {
        _weight = weight;
        _bias = bias;
        _groups = checked((int)layer.Groups);
        _perIn = checked((int)layer.InFeatures);
        _dA = _perIn + (bias is null ? 0 : 1);
        _dG = checked((int)(layer.OutFeatures / layer.Groups));
        _aInv = Pinned(A.Length);
        _gInv = Pinned(G.Length);
        _a = new DampedFactor(A, _groups, _dA, _aInv);
        _g = new DampedFactor(G, _groups, _dG, _gInv);
        DampedFactors = [_a, _g];
        _pi = new double[_groups];
    }

    private static float[] Pinned(int n) => GC.AllocateArray<float>(n, pinned: true);

    private static int Size(LayerInfo layer, Slot? bias, bool a)
    {
        int d = a ? checked((int)layer.InFeatures) + (bias is null ? 0 : 1) : checked((int)(layer.OutFeatures / layer.Groups));
        return checked((int)layer.Groups * d * d);
    }

    protected override (float[] A, float[] G) Inverses => (_aInv, _gInv);

    public override double Pi => _pi[0];

    public override void PrepareInverse(double gamma, double boost)
    {
        for (int gi = 0; gi < _groups; gi++)
        {
            double trA = Trace(A, gi, _dA) / _dA, trG = Trace(G, gi, _dG) / _dG;
            double pi = trA > 0 && trG > 0 && double.IsFinite(trA) && double.IsFinite(trG) ? Math.Sqrt(trA / trG) : 1;
            pi = Math.Clamp(pi, 1e-6, 1e6);
            _pi[gi] = pi;
            _a.Shift[gi] = pi * gamma * boost;
            _g.Shift[gi] = gamma / pi * boost;
        }
        _a.Prepare();
        _g.Prepare();
    }

    private static double Trace(double[] m, int group, int d)
    {
        double t = 0;
        int o = group * d * d;
        for (int i = 0; i < d; i++) t += m[o + i * d + i];
        return t;
    }

    public override IReadOnlyList<DampedFactor> DampedFactors { get; }

    public override bool InverseIsFinite() => Valid = AllFinite(_aInv) && AllFinite(_gInv);

    public override void EmitPrecondition(ProgramBuilder pb, ProgramBindings b)
    {
        string id = $"k{b.Inputs.Count}";
        var wShape = _weight.Parameter.Shape;
        string w = pb.Input(id + "_w", wShape);
        b.Inputs.Add((w, _weight.Work, wShape));
        string ainv = pb.Input(id + "_ainv", [_groups, _dA, _dA]);
        string ginv = pb.Input(id + "_ginv", [_groups, _dG, _dG]);
        b.Inputs.Add((ainv, _aInv, [_groups, _dA, _dA]));
        b.Inputs.Add((ginv, _gInv, [_groups, _dG, _dG]));
        bool inOut = Layer.Kind == LayerKind.Dense && !Layer.WeightTransposed;   // MatMul / Gemm transB=0: [in, out]
        string wbar = inOut ? pb.Reshape(pb.Transpose(w, 1, 0), 1, _dG, _perIn) : pb.Reshape(w, _groups, _dG, _perIn);
        if (_bias is not null)
        {
            var bShape = _bias.Parameter.Shape;
            string bias = pb.Input(id + "_b", bShape);
            b.Inputs.Add((bias, _bias.Work, bShape));
            wbar = pb.Op("Concat", [wbar, pb.Reshape(bias, _groups, _dG, 1)], Attributes.Int("axis", 2));
        }
        string v = pb.MatMul(pb.MatMul(ginv, wbar), ainv);                          // [G, dG, dA]
        string vw = pb.SliceLast(v, 0, _perIn);
        vw = inOut ? pb.Transpose(pb.Reshape(vw, _dG, _perIn), 1, 0) : pb.Reshape(vw, wShape);
        pb.Output(vw, id + "_vw", wShape);
        b.Outputs.Add((id + "_vw", _weight.V, wShape));
        if (_bias is not null)
        {
            var bShape = _bias.Parameter.Shape;
            pb.Output(pb.Reshape(pb.SliceLast(v, _perIn, _perIn + 1), bShape), id + "_vb", bShape);
            b.Outputs.Add((id + "_vb", _bias.V, bShape));
        }
    }

    /// <summary>The running factors (tests, reports).</summary>
    internal (double[] A, double[] G, float[] AInverse, float[] GInverse) Factors => (A, G, _aInv, _gInv);
}
