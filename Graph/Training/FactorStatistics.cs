using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Model;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Training;

/// <summary>The names of one layer's factor-statistics outputs.</summary>
public sealed record FactorOutputs(string A, string G);

/// <summary>
/// A layer's Kronecker-factor statistics of one batch, emitted as graph outputs so that only
/// d×d matrices leave ONNX Runtime (Toolkit/Kfac/README.md has the formulas):
/// <c>A = ĀᵀĀ / R</c> and <c>G = (N²/D)(R_all / R) ĜᵀĜ</c>, per group, as [groups, d, d] tensors,
/// with Ā the layer-input rows (conv: patches) with a homogeneous column for the bias, Ĝ the
/// pre-activation-gradient rows of the sampled loss (g/N), D the real loss's mean denominator
/// (G is the Fisher of the loss being trained), R the rows the statistics see
/// (all R_all of them, or those of the first ⌈f·D⌉ entries of the layer's leading axis D;
/// with a forward pass over the first examples only, <see cref="ExampleSubset"/>, R_all/R = N/k),
/// N the batch: the first dimension of the loss's output. The leading axis of a layer need
/// not be the batch (seq-first attention), which is why N comes from the output.
/// Embedding tables get a diagonal A: id frequencies, a [V] vector.
/// </summary>
internal static class FactorStatistics
{
    /// <param name="denominator">
    /// The real loss's mean denominator D (element count, or the sum of cross-entropy's row
    /// weights), "" for a sum. G estimates the Fisher of the loss the graph trains: the sampled
    /// pass's rows are g/N, so G = (N²/D)·ĜᵀĜ; the real loss's own rows (empirical Fisher) are
    /// g/D, so G = D·ĜᵀĜ. For cross-entropy on [N, C] D = N and both are N·ĜᵀĜ.
    /// </param>
    /// <param name="subsetRatio">
    /// Set when <paramref name="layer"/>'s tensors come from a forward pass over the batch's
    /// first k examples only (<see cref="ExampleSubset"/>): N/k, the all-rows/rows-seen factor of
    /// G, whose rows are then not sliced again (<paramref name="fraction"/> is 1).
    /// </param>
    public static FactorOutputs Emit(GraphBuildContext g, LayerInfo layer, string preactivationGradient, string lossOutput, double fraction,
        string denominator, bool empirical, string? subsetRatio = null)
    {
        var e = g.Emitter(layer.Name + "/kfac/stats");
        int type = EmitterState.FloatType(g.Infos.GetValueOrDefault(layer.PreActivation)?.ElemType ?? 0);
        string aName = g.State.UniqueName(layer.Name + "/kfac/A");
        string gName = g.State.UniqueName(layer.Name + "/kfac/G");
        var gradient = preactivationGradient;
        string d = denominator.Length == 0 ? e.Scalar(1, type) : denominator;
        string n = e.Cast(e.Op("Gather", [e.Shape(lossOutput), e.Int64s(0)]), type);   // [1]: N
        string gScale = empirical ? d : e.Div(e.Mul(n, n), d);
        if (subsetRatio is not null) gScale = e.Mul(gScale, subsetRatio);
        if (fraction < 1)
        {
            string all = e.Cast(e.Op("Size", [gradient]), type);
            gradient = SliceExamples(e, gradient, fraction);
            gScale = e.Mul(gScale, e.Div(all, e.Cast(e.Op("Size", [gradient]), type)));
        }
        return layer.Kind switch
        {
            LayerKind.Dense => Dense(g, e, layer, gradient, gScale, fraction, aName, gName, type),
            LayerKind.Conv => Conv(g, e, layer, gradient, gScale, fraction, aName, gName, type),
            LayerKind.Embedding => Embedding(g, e, layer, gradient, gScale, fraction, aName, gName, type),
            _ => throw new OnnxKfacException($"layer '{layer.Name}': no factor statistics for kind {layer.Kind}"),
        };
    }

    /// <summary>⌈f·N⌉ (at least 1) as an int64 [1] tensor, N the first dimension of <paramref name="x"/>.</summary>
    internal static string FirstExamples(NodeEmitter e, string x, double fraction)
    {
        string n = e.Cast(e.Op("Gather", [e.Shape(x), e.Int64s(0)]), (int)DataType.Double);
        string k = e.Cast(e.Op("Ceil", [e.Mul(n, e.Scalar(fraction, (int)DataType.Double))]), (int)DataType.Int64);
        return e.Op("Max", [k, e.Int64s(1)]);
    }

    private static string Rows(NodeEmitter e, string x, int type) => e.Cast(e.Op("Gather", [e.Shape(x), e.Int64s(0)]), type);

    /// <summary>
    /// (sX)ᵀ(sX) = s²XᵀX per group for rows X [G, R, d] (dense layers: [R, d], G = 1) and a scale
    /// s ≥ 0 ([1]), written by the product itself as the output <paramref name="name"/> [G, d, d]
    /// (a reshape after it would copy d² values into the output). The rows are scaled, not the
    /// product: R·d multiplications instead of d², and both sides alike keep the Gram symmetric.
    /// </summary>
    private static void ScaledGram(NodeEmitter e, string name, string x, string scale, bool batched)
    {
        string rows = e.Mul(batched ? x : e.Op("Unsqueeze", [x, e.Int64s(0)]), scale);
        e.OpNamed(name, "MatMul", [e.Transpose(rows, [0, 2, 1]), rows]);
    }

    /// <summary>1/√R as a [1] tensor, R the rows of <paramref name="x"/>: the scale of a mean XᵀX/R.</summary>
    private static string MeanScale(NodeEmitter e, string x, int type) => e.Op("Sqrt", [e.Op("Reciprocal", [Rows(e, x, type)])]);

    /// <summary>Appends a column of <paramref name="value"/> to rows [.., d] (the bias's homogeneous coordinate).</summary>
    private static string WithConstantColumn(NodeEmitter e, string rows, double value, int type)
    {
        string lead = e.Op("Slice", [e.Shape(rows), e.Int64s(0), e.Int64s(-1), e.Int64s(0)]);
        string shape = e.Op("Concat", [lead, e.Int64s(1)], Attributes.Int("axis", 0));
        string column = e.Op("Expand", [e.Scalar(value, type), shape]);
        return e.Op("Concat", [rows, column], Attributes.Int("axis", -1));
    }

    private static string SliceExamples(NodeEmitter e, string x, double fraction) =>
        fraction < 1 ? e.Op("Slice", [x, e.Int64s(0), FirstExamples(e, x, fraction), e.Int64s(0)]) : x;

    private static FactorOutputs Dense(GraphBuildContext g, NodeEmitter e, LayerInfo l, string grad, string gScale, double fraction,
        string aName, string gName, int type)
    {
        string a = l.InputTransposed ? e.Transpose(l.Input, [1, 0]) : l.Input;
        a = SliceExamples(e, a, fraction);
        string rows = e.Op("Flatten", [a], Attributes.Int("axis", -1));
        if (l.Alpha != 1) rows = e.Mul(rows, e.Scalar(l.Alpha, type));
        if (l.Bias is not null) rows = WithConstantColumn(e, rows, l.Beta, type);
        ScaledGram(e, aName, rows, MeanScale(e, rows, type), batched: false);
        string gRows = e.Op("Flatten", [grad], Attributes.Int("axis", -1));
        ScaledGram(e, gName, gRows, e.Op("Sqrt", [gScale]), batched: false);
        long dA = l.InFeatures < 0 ? -1 : l.InFeatures + (l.Bias is null ? 0 : 1);
        Declare(g, aName, type, [1, dA, dA]);
        Declare(g, gName, type, [1, l.OutFeatures, l.OutFeatures]);
        return new FactorOutputs(aName, gName);
    }

    /// <summary>KFC: patch rows per output position, block-diagonal over groups ([G, R, d] then batched XᵀX).</summary>
    private static FactorOutputs Conv(GraphBuildContext g, NodeEmitter e, LayerInfo l, string grad, string gScale, double fraction,
        string aName, string gName, int type)
    {
        var geo = l.Conv!;
        long groups = geo.Group;
        string patches = Patches.Emit(g, l, g.State.UniqueName(l.Name + "/kfac/patches_for_a"));
        patches = SliceExamples(e, patches, fraction);
        int rank = g.Infos.GetValueOrDefault(l.PreActivation)?.Rank ?? geo.Kernel.Length + 2;
        var toLast = new long[rank];
        toLast[0] = 0;
        for (int k = 1; k < rank - 1; k++) toLast[k] = k + 1;
        toLast[rank - 1] = 1;
        // Patches are channel-major and InFeatures is C_in/G · Πk, so group g owns a contiguous column range.
        string aRows = e.Reshape(e.Transpose(patches, toLast), e.Int64s(-1, groups, l.InFeatures));
        if (l.Bias is not null) aRows = WithConstantColumn(e, aRows, 1, type);
        ScaledGram(e, aName, e.Transpose(aRows, [1, 0, 2]), MeanScale(e, aRows, type), batched: true);   // over [G, R, dA]
        long dG = l.OutFeatures / groups;
        string gRows = e.Reshape(e.Transpose(grad, toLast), e.Int64s(-1, groups, dG));
        ScaledGram(e, gName, e.Transpose(gRows, [1, 0, 2]), e.Op("Sqrt", [gScale]), batched: true);
        long dA = l.InFeatures + (l.Bias is null ? 0 : 1);
        Declare(g, aName, type, [groups, dA, dA]);
        Declare(g, gName, type, [groups, dG, dG]);
        return new FactorOutputs(aName, gName);
    }

    /// <summary>Embedding: A is diagonal, the frequency of each id among the rows seen.</summary>
    private static FactorOutputs Embedding(GraphBuildContext g, NodeEmitter e, LayerInfo l, string grad, string gScale, double fraction,
        string aName, string gName, int type)
    {
        string ids = e.Reshape(SliceExamples(e, l.Input, fraction), e.Int64s(-1));
        string ones = e.Op("Expand", [e.Scalar(1, type), e.Shape(ids)]);
        string zeros = e.Op("Expand", [e.Scalar(0, type), e.Int64s(l.InFeatures)]);
        string counts = e.Op("ScatterElements", [zeros, ids, ones], Attributes.Int("axis", 0), Attributes.String("reduction", "add"));
        e.OpNamed(aName, "Div", [counts, Rows(e, ids, type)]);
        string gRows = e.Op("Flatten", [grad], Attributes.Int("axis", -1));
        ScaledGram(e, gName, gRows, e.Op("Sqrt", [gScale]), batched: false);
        Declare(g, aName, type, [l.InFeatures]);
        Declare(g, gName, type, [1, l.OutFeatures, l.OutFeatures]);
        return new FactorOutputs(aName, gName);
    }

    private static void Declare(GraphBuildContext g, string name, int type, long[] shape) =>
        g.SetInfo(name, new TensorInfo(type, shape.Any(d => d < 0) ? null : shape));
}
