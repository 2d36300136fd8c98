using OnnxKfac.Graph.Model;

namespace OnnxKfac.Graph.Autodiff.Rules;

/// <summary>
/// Reductions in their opset-18 form (axes as input 1; keepdims, noop_with_empty_axes):
/// ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceSumSquare, ReduceL1, ReduceL2,
/// ReduceLogSum, ReduceLogSumExp. Each rule brings output-shaped tensors back to the
/// keepdims form, where they broadcast against the input. ReduceProd is left out (its
/// gradient at zero inputs needs exclusive products).
/// </summary>
internal static class ReductionRules
{
    public static void Register(GradientRegistry r)
    {
        r.Add("ReduceSum", c => c.SetGrad(0, ExpandToInput(c, Kept(c, c.DY()!))), differentiableInputs: [0]);
        r.Add("ReduceMean", ReduceMean, differentiableInputs: [0]);
        r.Add("ReduceMax", ReduceExtremum, differentiableInputs: [0]);
        r.Add("ReduceMin", ReduceExtremum, differentiableInputs: [0]);
        r.Add("ReduceSumSquare", c => c.SetGrad(0, c.Emit.Mul(c.X(0), Kept(c, c.Emit.Mul(c.DY()!, c.Scalar(2, c.X(0)))))), differentiableInputs: [0]);
        r.Add("ReduceL1", c => c.SetGrad(0, c.Emit.Mul(c.Emit.Op("Sign", [c.X(0)]), Kept(c, c.DY()!))), differentiableInputs: [0]);
        r.Add("ReduceL2", ReduceL2, differentiableInputs: [0]);
        r.Add("ReduceLogSum", c => c.SetGrad(0, ExpandToInput(c, Kept(c, c.Emit.Div(c.DY()!, c.Emit.Op("Exp", [c.Y()]))))), differentiableInputs: [0]);
        r.Add("ReduceLogSumExp", c =>
        {
            var e = c.Emit;
            string softmax = e.Op("Exp", [e.Sub(c.X(0), Kept(c, c.Y()))]);
            c.SetGrad(0, e.Mul(softmax, Kept(c, c.DY()!)));
        }, differentiableInputs: [0]);
    }

    /// <summary>
    /// An output-shaped tensor in keepdims form (reduced axes present with size 1), so it
    /// broadcasts against the input. Nothing to do for keepdims=1, for a reduction over all
    /// axes (a scalar broadcasts), or for a no-op reduction.
    /// </summary>
    private static string Kept(GradientContext c, string t)
    {
        if (c.AttrInt("keepdims", 1) == 1 || !c.HasInput(1) || c.ConstInput(1) is { Length: 0 }) return t;
        return c.Emit.Op("Unsqueeze", [t, c.X(1)]); // same axes, same normalisation: the output rank is the input's
    }

    private static string ExpandToInput(GradientContext c, string kept)
    {
        var shape = ShapeRules.StaticShape(c, c.X(0));
        if (shape is not null && c.Info(kept)?.Shape is { } ks && ks.SequenceEqual(shape)) return kept;
        return c.Emit.Op("Expand", [kept, ShapeRules.ShapeOf(c, c.X(0))]);
    }

    // dX = Expand(dY) / (|X| / |Y|)
    private static void ReduceMean(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0), dy = c.DY()!;
        string count = c.Info(x)?.ElementCount is { } nx && c.Info(c.Y())?.ElementCount is { } ny && ny > 0
            ? c.Scalar((double)nx / ny, x)
            : e.Div(e.Cast(e.Op("Size", [x]), c.ElemType(x)), e.Cast(e.Op("Size", [c.Y()]), c.ElemType(x)));
        c.SetGrad(0, ExpandToInput(c, Kept(c, e.Div(dy, count))));
    }

    // dY goes to the elements equal to the extremum, shared evenly among ties.
    private static void ReduceExtremum(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0);
        string mask = e.Cast(e.Op("Equal", [x, Kept(c, c.Y())]), c.ElemType(x));
        var countInputs = c.HasInput(1) ? new[] { mask, c.X(1) } : [mask];
        string ties = e.Op("ReduceSum", countInputs, Attributes.Int("keepdims", 1),
            Attributes.Int("noop_with_empty_axes", c.AttrInt("noop_with_empty_axes", 0)));
        c.SetGrad(0, e.Mul(mask, e.Div(Kept(c, c.DY()!), ties)));
    }

    // dX = X · dY / Y, with 0 where the norm is 0 (then every X of the slice is 0 too).
    private static void ReduceL2(GradientContext c)
    {
        var e = c.Emit;
        string y = c.Y();
        string safe = e.Op("Where", [e.Op("Equal", [y, c.Scalar(0, y)]), c.Scalar(1, y), y]);
        c.SetGrad(0, e.Mul(c.X(0), Kept(c, e.Div(c.DY()!, safe))));
    }
}
