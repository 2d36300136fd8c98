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
        CanPreconditionPerExample = PerExampleApplies(layer) && layer.Outputs.Input is not null && layer.Outputs.PreactivationGradient is not null
            && Slots.All(s => s.Settings.WeightDecay == 0);
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
            double trA = FactorMath.Trace(A.AsSpan(gi * _dA * _dA), _dA) / _dA, trG = FactorMath.Trace(G.AsSpan(gi * _dG * _dG), _dG) / _dG;
            double pi = trA > 0 && trG > 0 && double.IsFinite(trA) && double.IsFinite(trG) ? Math.Sqrt(trA / trG) : 1;
            pi = Math.Clamp(pi, 1e-6, 1e6);
            _pi[gi] = pi;
            _a.Shift[gi] = pi * gamma * boost;
            _g.Shift[gi] = gamma / pi * boost;
        }
        _a.Prepare();
        _g.Prepare();
    }

    public override IReadOnlyList<DampedFactor> DampedFactors { get; }

    public override bool InverseIsFinite() => Valid = AllFinite(_aInv) && AllFinite(_gInv);

    public override void EmitPrecondition(ProgramBuilder pb, ProgramBindings b)
    {
        string id = $"k{b.Inputs.Count}";
        var wShape = _weight.Parameter.Shape;
        string w = pb.Input(id + "_w", wShape);
        b.Inputs.Add((w, _weight.Work, wShape));
        var (ainv, ginv) = BindInverses(pb, b, id);
        string wbar = InOut ? pb.Reshape(pb.Transpose(w, 1, 0), 1, _dG, _perIn) : pb.Reshape(w, _groups, _dG, _perIn);
        if (_bias is not null)
        {
            var bShape = _bias.Parameter.Shape;
            string bias = pb.Input(id + "_b", bShape);
            b.Inputs.Add((bias, _bias.Work, bShape));
            wbar = pb.Op("Concat", [wbar, pb.Reshape(bias, _groups, _dG, 1)], Attributes.Int("axis", 2));
        }
        EmitV(pb, b, id, pb.MatMul(pb.MatMul(ginv, wbar), ainv));                   // [G, dG, dA]
    }

    /// <summary>MatMul / Gemm transB=0: the weight is stored [in, out].</summary>
    private bool InOut => Layer.Kind == LayerKind.Dense && !Layer.WeightTransposed;

    private (string AInverse, string GInverse) BindInverses(ProgramBuilder pb, ProgramBindings b, string id)
    {
        string ainv = pb.Input(id + "_ainv", [_groups, _dA, _dA]);
        string ginv = pb.Input(id + "_ginv", [_groups, _dG, _dG]);
        b.Inputs.Add((ainv, _aInv, [_groups, _dA, _dA]));
        b.Inputs.Add((ginv, _gInv, [_groups, _dG, _dG]));
        return (ainv, ginv);
    }

    /// <summary>Maps V [G, dG, dA] back to the weight's and the bias's layouts, as program outputs into their slots' V.</summary>
    private void EmitV(ProgramBuilder pb, ProgramBindings b, string id, string v)
    {
        var wShape = _weight.Parameter.Shape;
        string vw = pb.SliceLast(v, 0, _perIn);
        vw = InOut ? pb.Transpose(pb.Reshape(vw, _dG, _perIn), 1, 0) : pb.Reshape(vw, wShape);
        pb.Output(vw, id + "_vw", wShape);
        b.Outputs.Add((id + "_vw", _weight.V, wShape));
        if (_bias is not null)
        {
            var bShape = _bias.Parameter.Shape;
            pb.Output(pb.Reshape(pb.SliceLast(v, _perIn, _perIn + 1), bShape), id + "_vb", bShape);
            b.Outputs.Add((id + "_vb", _bias.V, bShape));
        }
    }

    // ---- per-example preconditioning (Toolkit/Kfac/README.md) -------------------------------------

    /// <summary>Whether a layer's kind admits the per-example form: dense (2-D or over extra axes), one group.</summary>
    internal static bool PerExampleApplies(LayerInfo layer) =>
        layer.Kind == LayerKind.Dense && layer.Groups == 1 && layer.InFeatures > 0 && layer.OutFeatures > 0;

    /// <summary>
    /// Whether V = (Ĝᵣ G⁻¹ᵀ)ᵀ (Āᵣ A⁻¹), 2R(d_A² + d_G² + d_A·d_G) flops, is cheaper than
    /// V = G⁻¹ ∇W̄ A⁻¹, 2·d_A·d_G·(d_A + d_G) flops, for R rows.
    /// </summary>
    internal static bool PerExampleIsCheaper(long dA, long dG, long rows) =>
        (double)rows * (dA * dA + dG * dG + dA * dG) < (double)dA * dG * (dA + dG);

    /// <summary>
    /// Whether this block may precondition through its layer's rows: the kind admits it, the graph
    /// has the layer's taps, and the gradient it preconditions is exactly ĜᵣᵀĀᵣ (no weight decay
    /// added to it). The caller checks the rest: the gradient is the last run's alone.
    /// </summary>
    public bool CanPreconditionPerExample { get; }

    /// <summary>The rows R of the last run's taps (N, or N·T for a dense layer over extra axes).</summary>
    public int Rows(ITrainingPass pass)
    {
        long a = Elements(pass.GetOutputShape(Layer.Outputs.Input!)) / _perIn, g = Elements(pass.GetOutputShape(Layer.Outputs.PreactivationGradient!)) / _dG;
        if (a != g)
            throw new InvalidOperationException($"layer '{Name}': the input tap has {a} rows and the pre-activation-gradient tap {g}");
        return checked((int)a);
    }

    private static long Elements(IReadOnlyList<long> shape)
    {
        long n = 1;
        for (int i = 0; i < shape.Count; i++) n *= shape[i];   // no enumerator: a step allocates nothing
        return n;
    }

    public bool PerExampleIsCheaper(int rows) => PerExampleIsCheaper(_dA, _dG, rows);

    /// <summary>The pinned rows Ā ([R, d_A]: α·a and the bias column β) and Ĝ ([R, d_G]) the per-example program reads, per R.</summary>
    private readonly Dictionary<int, (float[] A, float[] G)> _rows = [];

    private (float[] A, float[] G) RowBuffers(int rows)
    {
        if (_rows.TryGetValue(rows, out var r)) return r;
        r = (Pinned(rows * _dA), Pinned(rows * _dG));
        if (_bias is not null)
            for (int i = 0; i < rows; i++) r.A[i * _dA + _perIn] = Layer.Beta;
        _rows[rows] = r;
        return r;
    }

    /// <summary>
    /// The per-example form for <paramref name="rows"/> rows: P = Ā A⁻¹ [R, d_A], Q = Ĝ G⁻¹ᵀ [R, d_G],
    /// V = Qᵀ P, mapped back as the dense form does. <see cref="CopyRows"/> fills Ā and Ĝ before each run.
    /// </summary>
    public void EmitPreconditionPerExample(ProgramBuilder pb, ProgramBindings b, int rows)
    {
        string id = $"p{b.Inputs.Count}";
        var (ainv, ginv) = BindInverses(pb, b, id);
        var (aRows, gRows) = RowBuffers(rows);
        string a = pb.Input(id + "_a", [rows, _dA]);
        string g = pb.Input(id + "_g", [rows, _dG]);
        b.Inputs.Add((a, aRows, [rows, _dA]));
        b.Inputs.Add((g, gRows, [rows, _dG]));
        string p = pb.MatMul(a, pb.Reshape(ainv, _dA, _dA));
        string q = pb.Op("Gemm", [g, pb.Reshape(ginv, _dG, _dG)], Attributes.Int("transB", 1));
        EmitV(pb, b, id, pb.Reshape(pb.Op("Gemm", [q, p], Attributes.Int("transA", 1)), 1, _dG, _dA));
    }

    /// <summary>Copies the last run's taps into the rows of <see cref="EmitPreconditionPerExample"/> (α applied, the bias column kept).</summary>
    public void CopyRows(ITrainingPass pass, int rows)
    {
        var (aRows, gRows) = RowBuffers(rows);
        var a = pass.GetOutput(Layer.Outputs.Input!);
        pass.GetOutput(Layer.Outputs.PreactivationGradient!).CopyTo(gRows);
        float alpha = Layer.Alpha;
        if (alpha == 1 && _dA == _perIn)
        {
            a.CopyTo(aRows);
            return;
        }
        for (int i = 0; i < rows; i++)
        {
            var from = a.Slice(i * _perIn, _perIn);
            var to = aRows.AsSpan(i * _dA, _perIn);
            if (alpha == 1) from.CopyTo(to);
            else for (int j = 0; j < _perIn; j++) to[j] = alpha * from[j];
        }
    }

    /// <summary>The running factors (tests, reports).</summary>
    internal (double[] A, double[] G, float[] AInverse, float[] GInverse) Factors => (A, G, _aInv, _gInv);
}
