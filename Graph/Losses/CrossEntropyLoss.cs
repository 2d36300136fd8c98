using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Losses;

/// <summary>
/// torch.nn.CrossEntropyLoss on class indices: logits [N, C] or [N, C, d...] (class axis 1),
/// int64 targets [N] or [N, d...], with class weights, ignore_index and label smoothing.
/// True Fisher: categorical targets (Gumbel-max). Curvature per row: diag(p) − p pᵀ.
/// </summary>
internal sealed class CrossEntropyLoss : LossFunction
{
    public override LossKind Kind => LossKind.CrossEntropy;
    public override string Name => "cross-entropy";
    public override IReadOnlyList<string> Aliases => ["crossentropy", "ce"];
    public override bool HasClassOptions => true;
    public override bool ClassIndexTargets => true;
    public override string SampledDistribution => "categorical";
    public override string NoiseDistribution => "uniform";

    // ---- the target: the output without its class axis, int64 class indices --------------

    public override T[]? TargetShape<T>(IReadOnlyList<T>? outputShape, string output) where T : default
    {
        if (outputShape is null) return null;
        if (outputShape.Count < 2)
            throw new OnnxKfacException($"cross-entropy needs logits of shape [N, C] or [N, C, d...], but output '{output}' has rank {outputShape.Count}");
        return [outputShape[0], .. outputShape.Skip(2)];
    }

    public override int TargetElemType(int outputType) => (int)DataType.Int64;

    public override void CheckTarget(string where, LossOptions o, string output, int outputType, long[]? outputShape,
        int targetType, long[] targetShape, Func<long[]> labels)
    {
        long[]? expected = outputShape is { Length: >= 2 } s ? [s[0], .. s[2..]] : null;
        string expectedText = expected is null ? "" : $" of shape {Shapes.Format(expected)} (output '{output}' {Shapes.Format(outputShape)} without the class axis)";
        if (!IsInteger(targetType))
            throw new OnnxKfacException($"{where}: cross-entropy expects integer class indices (int64){expectedText}, got {TypeText(targetType)} {Shapes.Format(targetShape)}");
        if (expected is not null && !Shapes.Fits(expected, targetShape))
            throw new OnnxKfacException($"{where}: cross-entropy expects int64 class indices{expectedText}, got {TypeText(targetType)} {Shapes.Format(targetShape)}");
        var values = labels();
        long classes = outputShape is { Length: >= 2 } ? outputShape[1] : -1;
        for (int i = 0; i < values.Length; i++)
        {
            long v = values[i];
            if (v == o.IgnoreIndex) continue;
            if (v < 0 || (classes >= 0 && v >= classes))
                throw new OnnxKfacException($"{where}: label {v} at flat index {i} is outside [0, {(classes >= 0 ? classes.ToString() : "C")})" +
                    $"{(classes >= 0 ? $" (output '{output}' has {classes} classes)" : "")} and is not the ignore index {o.IgnoreIndex}");
        }
    }

    private static bool IsInteger(int elemType) => (DataType)elemType is
        DataType.Int64 or DataType.Int32 or DataType.Int16 or DataType.Int8 or
        DataType.Uint64 or DataType.Uint32 or DataType.Uint16 or DataType.Uint8;

    // ---- the loss ------------------------------------------------------------------------

    /// <summary>
    /// With weights, the mean divides both terms by Σ w[t] over kept rows; without, the
    /// smoothing term is a plain mean over all rows (torch's own quirk).
    /// </summary>
    protected override LossTensors AppendLoss(GraphBuildContext g, NodeEmitter e, LossOptions o, string z, string t, string lossName, int type)
    {
        var (z2, t2, restore) = FlattenClasses(g, e, z, t);
        string logp = e.Op("LogSoftmax", [z2], Attributes.Int("axis", 1));
        string p = e.Op("Exp", [logp]);
        var (ignore, keep, tSafe) = Kept(e, o, t2, type);
        string classes = e.Op("Gather", [e.Shape(z2), e.Int64s(1)]);
        string onehot = e.Op("OneHot", [tSafe, classes, OneHotValues(e, type)], Attributes.Int("axis", 1));
        string? weights = Weights(e, o, type);
        string coeff = weights is null ? keep : e.Mul(keep, e.Op("Gather", [weights, tSafe]));    // [R]
        string nll = e.Neg(e.ReduceSum(e.Mul(onehot, logp), [1], keepDims: false));                 // [R]
        string sumCoeff = e.Op("ReduceSum", [coeff], Attributes.Int("keepdims", 0));
        string rows = e.Cast(e.Op("Gather", [e.Shape(z2), e.Int64(0)]), type);
        bool mean = o.Reduction == LossReduction.Mean;
        string nllTotal = e.Op("ReduceSum", [e.Mul(coeff, nll)], Attributes.Int("keepdims", 0));
        string loss1 = mean ? e.Div(nllTotal, sumCoeff) : nllTotal;
        string pMinusY = e.Sub(p, onehot);
        string coeffCol = e.Op("Unsqueeze", [coeff, e.Int64s(1)]);
        string grad = e.Mul(pMinusY, coeffCol);
        if (mean) grad = e.Div(grad, sumCoeff);
        string loss;
        double eps = o.LabelSmoothing;
        if (eps > 0)
        {
            string classCount = e.Cast(classes, type);
            string keepCol = e.Op("Unsqueeze", [keep, e.Int64s(1)]);
            // smooth_i = -Σ_c w_c log p_ic (masked); its gradient m_i (Σw · p_i - w).
            string smoothRows = weights is null
                ? e.Neg(e.ReduceSum(logp, [1], keepDims: false))
                : e.Neg(e.ReduceSum(e.Mul(logp, weights), [1], keepDims: false));
            string smoothTotal = e.Op("ReduceSum", [e.Mul(smoothRows, keep)], Attributes.Int("keepdims", 0));
            string smoothDen = !mean ? "" : weights is null ? rows : sumCoeff;
            string smooth = mean ? e.Div(smoothTotal, smoothDen) : smoothTotal;
            string smoothGrad = weights is null
                ? e.Sub(e.Mul(p, classCount), e.Op("Expand", [e.Scalar(1, type), e.Shape(p)]))
                : e.Sub(e.Mul(p, e.Op("ReduceSum", [weights], Attributes.Int("keepdims", 0))), weights);
            smoothGrad = e.Mul(smoothGrad, keepCol);
            if (mean) smoothGrad = e.Div(smoothGrad, smoothDen);
            string a = e.Scalar(1 - eps, type);
            string b = e.Div(e.Scalar(eps, type), classCount);
            loss = e.OpNamed(lossName, "Add", [e.Mul(loss1, a), e.Mul(smooth, b)]);
            grad = e.Add(e.Mul(grad, a), e.Mul(smoothGrad, b));
        }
        else loss = e.OpNamed(lossName, "Identity", [loss1]);
        return new LossTensors(loss, restore(grad)) { Denominator = mean ? sumCoeff : null };
    }

    /// <summary>Which targets count: ignore (bool), keep (1/0 in <paramref name="type"/>), and targets with ignored ones set to 0.</summary>
    private static (string Ignore, string Keep, string TSafe) Kept(NodeEmitter e, LossOptions o, string t, int type)
    {
        string ignore = e.Op("Equal", [t, e.Int64(o.IgnoreIndex)]);
        string keep = e.Cast(e.Op("Not", [ignore]), type);
        string tSafe = e.Op("Where", [ignore, e.Int64(0), t]);
        return (ignore, keep, tSafe);
    }

    private static string? Weights(NodeEmitter e, LossOptions o, int type) =>
        o.ClassWeights is { } w ? e.Constant(TensorData.FromFloats("class_weights", [w.Count], w.ToArray()).CastTo(type)) : null;

    private static string OneHotValues(NodeEmitter e, int type) =>
        e.Constant(TensorData.FromFloats("onehot_values", [2], [0f, 1f]).CastTo(type));

    /// <summary>
    /// Logits [N, C, d...] become rows [N·d..., C] (targets [N, d...] become [N·d...]);
    /// returns a function that maps a row gradient back to the logits' layout.
    /// </summary>
    private static (string Z, string T, Func<string, string> Restore) FlattenClasses(GraphBuildContext g, NodeEmitter e, string z, string t)
    {
        int rank = g.Infos.GetValueOrDefault(z)?.Rank
            ?? throw new OnnxKfacException($"cross-entropy needs the rank of output '{z}', which is unknown (give the output a shape in the model)");
        if (rank < 2) throw new OnnxKfacException($"cross-entropy needs logits of shape [N, C] or [N, C, d...], but output '{z}' has rank {rank}");
        if (rank == 2) return (z, e.Reshape(t, e.Int64s(-1)), grad => grad);
        var perm = new long[rank];
        perm[0] = 0;
        for (int k = 1; k < rank - 1; k++) perm[k] = k + 1;
        perm[rank - 1] = 1;
        var inverse = new long[rank];
        for (int k = 0; k < rank; k++) inverse[perm[k]] = k;
        string moved = e.Transpose(z, perm);
        string movedShape = e.Shape(moved);
        string rows = e.Reshape(moved, e.Op("Concat", [e.Int64s(-1), e.Op("Gather", [e.Shape(z), e.Int64s(1)])], Attributes.Int("axis", 0)));
        return (rows, e.Reshape(t, e.Int64s(-1)), grad => e.Transpose(e.Reshape(grad, movedShape), inverse));
    }

    // ---- true Fisher: categorical samples ---------------------------------------------------

    // Gumbel-max: argmax(z - log(-log U)) is a categorical sample of softmax(z); axis 1 is the
    // class axis for [N, C] and [N, C, d...] alike.
    protected override string SampledGradient(NodeEmitter e, string output, string noise, int type)
    {
        string gumbel = e.Neg(e.Op("Log", [e.Neg(e.Op("Log", [noise]))]));
        string sample = e.Op("ArgMax", [e.Add(output, gumbel)], Attributes.Int("axis", 1), Attributes.Int("keepdims", 0));
        string classes = e.Op("Gather", [e.Shape(output), e.Int64s(1)]);
        string onehot = e.Op("OneHot", [sample, classes, OneHotValues(e, type)], Attributes.Int("axis", 1));
        return e.Sub(e.Op("Softmax", [output], Attributes.Int("axis", 1)), onehot);
    }

    // ---- curvature ---------------------------------------------------------------------------

    /// <summary>
    /// Per row (position of the class axis 1) with p = softmax(z): (diag p − p pᵀ) w = p⊙w −
    /// p Σ p⊙w, times the row's weight in the loss: coeff_r / Σcoeff (mean) or coeff_r (sum),
    /// coeff_r = 0 for ignored rows, w[t_r] with class weights, 1 otherwise. Label smoothing
    /// ε adds the smoothing term's Hessian, (ε/C)·Σ_c w_c·(diag p − p pᵀ) per kept row over its
    /// own denominator (rows without weights, Σcoeff with), so the row weight becomes
    /// (1 − ε)·coeff_r/den + (ε/C)·Σw·keep_r/den_s, which is coeff_r/den again when no row is
    /// ignored and there are no class weights.
    /// </summary>
    protected override string HessianProduct(NodeEmitter e, GraphBuildContext g, LossOptions o, string z, string t, string w, int type)
    {
        if ((g.Infos.GetValueOrDefault(z)?.Rank ?? 2) < 2)
            throw new OnnxKfacException($"cross-entropy needs logits of shape [N, C] or [N, C, d...], but output '{z}' has rank {g.Infos[z].Rank}");
        string p = e.Op("Softmax", [z], Attributes.Int("axis", 1));
        string pw = e.Mul(p, w);
        string hw = e.Sub(pw, e.Mul(p, e.ReduceSum(pw, [1], keepDims: true)));
        var (_, keep, tSafe) = Kept(e, o, t, type);
        string? weights = Weights(e, o, type);
        string coeff = weights is null ? keep : e.Mul(keep, e.Op("Gather", [weights, tSafe]));    // shaped like t
        bool mean = o.Reduction == LossReduction.Mean;
        string sumCoeff = e.Op("ReduceSum", [coeff], Attributes.Int("keepdims", 0));
        string row = mean ? e.Div(coeff, sumCoeff) : coeff;
        double eps = o.LabelSmoothing;
        if (eps > 0)
        {
            string classes = e.Cast(e.Op("Gather", [e.Shape(z), e.Int64s(1)]), type);
            string total = weights is null ? classes : e.Op("ReduceSum", [weights], Attributes.Int("keepdims", 0));
            string smooth = e.Mul(keep, e.Div(e.Mul(e.Scalar(eps, type), total), classes));
            if (mean) smooth = e.Div(smooth, weights is null ? Count(e, t, type) : sumCoeff);
            row = e.Add(e.Mul(row, e.Scalar(1 - eps, type)), smooth);
        }
        return e.Mul(hw, e.Op("Unsqueeze", [row, e.Int64s(1)]));
    }
}
