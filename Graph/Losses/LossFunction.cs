using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Losses;

/// <summary>A loss appended to the graph: its scalar value and dLoss/dOutput in closed form.</summary>
public sealed record LossTensors(string Loss, string OutputGradient)
{
    /// <summary>
    /// The scalar a mean reduction divided the loss (and its gradient) by (element count, or the
    /// sum of cross-entropy's row weights); null for a sum. The per-example gradients of the
    /// empirical Fisher are the output gradient times it.
    /// </summary>
    public string? Denominator { get; init; }
}

/// <summary>
/// One loss, everything about it in one place: its command-line name, which options apply,
/// the target it takes, how it is appended to a graph (value and closed-form output gradient,
/// cheaper and more accurate than differentiating the loss ops), how the true Fisher samples
/// targets from the model's own predictive distribution, and its curvature in output space
/// (the Hessian w.r.t. the model output z, which for these matching losses is the exact
/// Fisher = Gauss-Newton block). One subclass per loss, each in its own file, registered in
/// <see cref="LossFunctions"/>.
/// </summary>
public abstract class LossFunction
{
    private protected LossFunction() { }

    public abstract LossKind Kind { get; }

    /// <summary>The command-line and manifest name (e.g. <c>cross-entropy</c>).</summary>
    public abstract string Name { get; }

    /// <summary>Other spellings the command line accepts.</summary>
    public virtual IReadOnlyList<string> Aliases => [];

    /// <summary>Whether class weights, ignore_index and label smoothing apply (cross-entropy only).</summary>
    public virtual bool HasClassOptions => false;

    /// <summary>Whether targets are int64 class indices (the output without its class axis 1) rather than values shaped like the output.</summary>
    public virtual bool ClassIndexTargets => false;

    /// <summary>The distribution the sampled Fisher pass draws targets from (categorical, bernoulli, gaussian, laplace).</summary>
    public abstract string SampledDistribution { get; }

    /// <summary>The distribution of the noise input of the sampled pass (uniform or normal).</summary>
    public abstract string NoiseDistribution { get; }

    /// <summary>Checks options against this loss; errors name the option.</summary>
    public virtual void Validate(LossOptions o)
    {
        if (!HasClassOptions && (o.ClassWeights is not null || o.LabelSmoothing != 0))
            throw new OnnxKfacException($"class weights and label smoothing apply to cross-entropy only, not {Name}");
        if (o.LabelSmoothing is < 0 or > 1 || double.IsNaN(o.LabelSmoothing))
            throw new OnnxKfacException($"label smoothing must be in [0, 1], got {o.LabelSmoothing}");
        if (o.ClassWeights is { } w && w.Any(x => !float.IsFinite(x) || x < 0))
            throw new OnnxKfacException("class weights must be finite and non-negative");
    }

    // ---- the target --------------------------------------------------------------------

    /// <summary>
    /// The target's shape from the output's (entries may be -1 or any placeholder), or null when
    /// the output's shape is unknown. Throws when the output cannot carry this loss.
    /// </summary>
    public virtual T[]? TargetShape<T>(IReadOnlyList<T>? outputShape, string output) => outputShape?.ToArray();

    /// <summary>The target's element type for an output of element type <paramref name="outputType"/> (0: unknown).</summary>
    public virtual int TargetElemType(int outputType) => outputType == 0 ? (int)DataType.Float : outputType;

    /// <summary>The static type and shape of the target input the graph takes.</summary>
    public TensorInfo TargetInfo(TensorInfo? output) =>
        new(TargetElemType(output?.ElemType ?? 0), output?.Shape is { } s ? TargetShapeOrNull(s) : null);

    private long[]? TargetShapeOrNull(long[] outputShape)
    {
        try { return TargetShape(outputShape, ""); }
        catch (OnnxKfacException) { return null; } // the loss reports the bad output when it is appended
    }

    /// <summary>
    /// Checks a target tensor (type, shape and, for class indices, every label) against the
    /// output it is compared with, whose shape may hold -1 for dimensions not known yet. Errors
    /// start with <paramref name="where"/>. <paramref name="labels"/> reads integer targets.
    /// </summary>
    public virtual void CheckTarget(string where, LossOptions o, string output, int outputType, long[]? outputShape,
        int targetType, long[] targetShape, Func<long[]> labels)
    {
        string typeName = outputType == 0 ? "floating-point" : TensorData.TypeName(outputType);
        bool typeOk = outputType == 0 ? TensorData.IsFloat(targetType) : targetType == outputType;
        if (!typeOk || !Shapes.Fits(outputShape, targetShape))
            throw new OnnxKfacException($"{where}: {Name} expects a {typeName} target shaped like output '{output}' {Shapes.Format(outputShape)}, " +
                $"got {TypeText(targetType)} {Shapes.Format(targetShape)}");
    }

    private protected static string TypeText(int elemType) => elemType == 0 ? "unknown" : TensorData.TypeName(elemType);

    // ---- appending the loss ------------------------------------------------------------

    /// <summary>Appends the loss value (named <paramref name="lossName"/>) and its gradient w.r.t. the output.</summary>
    public LossTensors Append(GraphBuildContext g, LossOptions o, string output, string target, string lossName)
    {
        var e = g.Emitter("loss");
        return AppendLoss(g, e, o, output, target, lossName, ElemType(g, output));
    }

    protected abstract LossTensors AppendLoss(GraphBuildContext g, NodeEmitter e, LossOptions o, string output, string target, string lossName, int type);

    /// <summary>
    /// dL_s/dOutput for targets sampled from the model's predictive distribution, with L_s the
    /// per-example negative log-likelihood summed over outputs and averaged over the batch
    /// (scale 1/N, N = the output's first dimension). The noise is a graph input shaped like
    /// the output, distributed as <see cref="NoiseDistribution"/>.
    /// </summary>
    /// <param name="examples">The N to divide by (a [1] tensor of the output's type) when <paramref name="output"/> holds only some of the batch's examples; null: its first dimension.</param>
    public string AppendSampled(GraphBuildContext g, string output, string noise, string? examples = null)
    {
        var e = g.Emitter("fisher");
        int type = ElemType(g, output);
        string n = examples ?? e.Cast(e.Op("Gather", [e.Shape(output), e.Int64(0)]), type);
        return e.Div(SampledGradient(e, output, noise, type), n);
    }

    /// <summary>The per-example gradient of the sampled-target NLL (before the 1/N).</summary>
    protected abstract string SampledGradient(NodeEmitter e, string output, string noise, int type);

    // ---- curvature in output space -----------------------------------------------------

    /// <summary>
    /// H w with H the Hessian of the loss (with its own reduction scale) w.r.t. the output
    /// <paramref name="output"/>, block-diagonal over rows, and <paramref name="w"/> shaped
    /// like the output. Losses without curvature throw.
    /// </summary>
    protected abstract string HessianProduct(NodeEmitter e, GraphBuildContext g, LossOptions o, string output, string target, string w, int type);

    /// <summary>
    /// uᵀ H w (a scalar) with H the Hessian of the loss w.r.t. the output, summed over the
    /// batch with the loss's reduction scale: for these matching losses the exact Fisher
    /// (Gauss-Newton) in output space, so with u = J v and w = J v' it is vᵀ F v'.
    /// </summary>
    public string FisherBilinear(NodeEmitter e, GraphBuildContext g, LossOptions o, string output, string target, string u, string w)
    {
        int type = ElemType(g, output);
        return e.Op("ReduceSum", [e.Mul(u, HessianProduct(e, g, o, output, target, w, type))], Attributes.Int("keepdims", 0));
    }

    /// <summary>
    /// The [K, K] matrix Q_ij = u_iᵀ H u_j of <see cref="FisherBilinear"/> for K tensors shaped
    /// like the output (H u_j once per j; Q is symmetric by construction), named <paramref name="name"/>.
    /// </summary>
    public string FisherMatrix(NodeEmitter e, GraphBuildContext g, LossOptions o, string output, string target, IReadOnlyList<string> u, string name)
    {
        int type = ElemType(g, output);
        int k = u.Count;
        var hu = u.Select(x => HessianProduct(e, g, o, output, target, x, type)).ToArray();
        var q = new string[k, k];
        var entries = new List<string>();
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
            {
                q[i, j] = j < i ? q[j, i] : e.Op("ReduceSum", [e.Mul(u[i], hu[j])], Attributes.Int("keepdims", 0));
                entries.Add(e.Reshape(q[i, j], e.Int64s(1)));
            }
        return e.OpNamed(name, "Reshape", [e.Op("Concat", entries, Attributes.Int("axis", 0)), e.Int64s(k, k)]);
    }

    // ---- helpers shared by the losses --------------------------------------------------

    /// <summary>The floating-point element type of the output; other types are an error.</summary>
    protected static int ElemType(GraphBuildContext g, string t)
    {
        int type = g.Infos.GetValueOrDefault(t)?.ElemType ?? (int)DataType.Float;
        if (!TensorData.IsFloat(type))
            throw new OnnxKfacException($"the loss needs a floating-point model output, but '{t}' is {TensorData.TypeName(type)}");
        return type;
    }

    /// <summary>The count a mean divides by: the element count of <paramref name="t"/>, in <paramref name="type"/>.</summary>
    protected static string Count(NodeEmitter e, string t, int type) => e.Cast(e.Op("Size", [t]), type);

    /// <summary>Σ of <paramref name="perElement"/>, divided by <paramref name="count"/> for the mean, named <paramref name="lossName"/>.</summary>
    protected static string Reduce(NodeEmitter e, LossOptions o, string perElement, string count, string lossName)
    {
        string total = e.Op("ReduceSum", [perElement], Attributes.Int("keepdims", 0));
        return o.Reduction == LossReduction.Mean ? e.OpNamed(lossName, "Div", [total, count]) : e.OpNamed(lossName, "Identity", [total]);
    }

    /// <summary>
    /// A loss that is a sum (or mean) over elements of f(y − t) (mse, l1): loss and d/dy =
    /// f'(y − t), divided by the element count for the mean.
    /// </summary>
    protected static LossTensors AppendElementwise(NodeEmitter e, LossOptions o, string y, string t, string lossName, int type,
        Func<string, string> perElement, Func<string, string> slope)
    {
        string diff = e.Sub(y, t);
        string count = Count(e, y, type);
        string loss = Reduce(e, o, perElement(diff), count, lossName);
        string grad = slope(diff);
        if (o.Reduction == LossReduction.Mean) grad = e.Div(grad, count);
        return new LossTensors(loss, grad) { Denominator = o.Reduction == LossReduction.Mean ? count : null };
    }

    /// <summary>An elementwise Hessian h ⊙ w, divided by the element count for the mean.</summary>
    protected static string ElementwiseHessian(NodeEmitter e, LossOptions o, string output, string h, string w, int type)
    {
        string hw = e.Mul(h, w);
        return o.Reduction == LossReduction.Mean ? e.Div(hw, Count(e, output, type)) : hw;
    }
}

internal static class TensorProtoCast
{
    /// <summary>Re-encodes a float32 constant in another float type (float64, float16).</summary>
    public static Proto.TensorProto CastTo(this Proto.TensorProto t, int elemType)
    {
        if (elemType == t.DataType) return t;
        var values = TensorData.ToDoubles(t);
        return elemType switch
        {
            (int)DataType.Double => TensorData.FromDoubles(t.Name, t.Dims.ToArray(), values),
            (int)DataType.Float => TensorData.FromFloats(t.Name, t.Dims.ToArray(), values.Select(v => (float)v).ToArray()),
            _ => throw new OnnxKfacException($"losses support float and double outputs, not {TensorData.TypeName(elemType)}"),
        };
    }
}
