using OnnxKfac.Graph.Model;

namespace OnnxKfac.Graph.Autodiff.Rules;

/// <summary>
/// Pointwise math and elementwise selection: Pow, Sqrt, Reciprocal, Exp, Log, Erf, Sin, Cos,
/// Abs, Max, Min, Mean, Where, Clip, Cast, CastLike, Dropout. Kinks and ties follow PyTorch
/// autograd: Abs'(0) = 0; Clip passes the gradient where min &lt;= x &lt;= max; Max/Min split
/// the gradient evenly among the inputs equal to the result; Pow's exponent gradient is 0
/// where the base is 0 and the exponent is &gt;= 0.
/// </summary>
internal static class ElementwiseRules
{
    public static void Register(GradientRegistry r)
    {
        r.Add("Pow", Pow);
        r.Add("Sqrt", c => c.SetGrad(0, c.Emit.Div(c.Emit.Mul(c.DY()!, c.Scalar(0.5, c.Y())), c.Y())));
        r.Add("Reciprocal", c => c.SetGrad(0, c.Emit.Neg(c.Emit.Mul(c.DY()!, c.Emit.Mul(c.Y(), c.Y())))));
        r.Add("Exp", c => c.SetGrad(0, c.Emit.Mul(c.DY()!, c.Y())));
        r.Add("Log", c => c.SetGrad(0, c.Emit.Div(c.DY()!, c.X(0))));
        r.Add("Erf", Erf);
        r.Add("Sin", c => c.SetGrad(0, c.Emit.Mul(c.DY()!, c.Emit.Op("Cos", [c.X(0)]))));
        r.Add("Cos", c => c.SetGrad(0, c.Emit.Neg(c.Emit.Mul(c.DY()!, c.Emit.Op("Sin", [c.X(0)])))));
        r.Add("Abs", c => c.SetGrad(0, c.Emit.Mul(c.DY()!, c.Emit.Op("Sign", [c.X(0)]))));
        r.Add("Max", MaxMin);
        r.Add("Min", MaxMin);
        r.Add("Mean", Mean);
        r.Add("Where", Where, differentiableInputs: [1, 2]);
        r.Add("Clip", Clip, differentiableInputs: [0]);
        r.Add("Cast", Cast, differentiableInputs: [0]);
        r.Add("CastLike", Cast, differentiableInputs: [0]);
        r.Add("Dropout", Dropout, differentiableInputs: [0]);
    }

    // Y = A^B: dA = dY·B·A^(B−1) (B may be an integer tensor); dB = dY·Y·log(A), set to 0 where
    // A = 0 and B >= 0 as PyTorch does (A < 0 gives NaN there too).
    private static void Pow(GradientContext c)
    {
        var e = c.Emit;
        string a = c.X(0), b = c.X(1), dy = c.DY()!;
        int ta = c.ElemType(a);
        int tb = c.Info(b)?.ElemType is > 0 and var known ? known : ta;
        string bA = tb == ta ? b : e.Cast(b, ta);
        if (c.Needs(0))
        {
            // A constant exponent (x² in exported LayerNorm and variance code) folds at build
            // time: 2x for B = 2 avoids a generic Pow kernel, which is slow in ONNX Runtime.
            string slope = c.ConstValues(1) is [double p]
                ? p switch
                {
                    1 => e.Op("Expand", [c.Scalar(1, a), e.Shape(a)]),
                    2 => e.Mul(a, c.Scalar(2, a)),
                    _ => e.Mul(e.Op("Pow", [a, c.Scalar(p - 1, a)]), c.Scalar(p, a)),
                }
                : e.Mul(bA, e.Op("Pow", [a, e.Sub(bA, c.Scalar(1, a))]));
            c.SetGrad(0, c.Unbroadcast(e.Mul(dy, slope), a));
        }
        if (c.Needs(1) && TensorData.IsFloat(tb))
        {
            string zero = c.Scalar(0, a);
            string atZero = e.Op("And", [e.Op("Equal", [a, zero]), e.Op("GreaterOrEqual", [bA, zero])]);
            string dLog = e.Op("Where", [atZero, zero, e.Mul(c.Y(), e.Op("Log", [a]))]);
            string g = c.Unbroadcast(e.Mul(dy, dLog), b);
            c.SetGrad(1, tb == ta ? g : e.Cast(g, tb));
        }
    }

    // d erf(x) = 2/√π · exp(−x²)
    private static void Erf(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0);
        string density = e.Op("Exp", [e.Neg(e.Mul(x, x))]);
        c.SetGrad(0, e.Mul(c.DY()!, e.Mul(density, c.Scalar(2 / Math.Sqrt(Math.PI), x))));
    }

    // Variadic with broadcasting. Input i gets dY·[X_i = Y] / #{j : X_j = Y}: ties share the
    // gradient evenly, which is PyTorch's rule for maximum/minimum generalised to n inputs.
    private static void MaxMin(GradientContext c)
    {
        var e = c.Emit;
        string dy = c.DY()!, y = c.Y();
        if (c.InputCount == 1)
        {
            c.SetGrad(0, dy);
            return;
        }
        int type = c.ElemType(y);
        var hits = Enumerable.Range(0, c.InputCount).Select(i => e.Cast(e.Op("Equal", [c.X(i), y]), type)).ToArray();
        string share = e.Div(dy, e.Sum(hits));
        for (int i = 0; i < c.InputCount; i++)
            if (c.Needs(i)) c.SetGrad(i, c.Unbroadcast(e.Mul(share, hits[i]), c.X(i)));
    }

    private static void Mean(GradientContext c)
    {
        string share = c.InputCount == 1 ? c.DY()! : c.Emit.Div(c.DY()!, c.Scalar(c.InputCount, c.Y()));
        for (int i = 0; i < c.InputCount; i++)
            if (c.Needs(i)) c.SetGrad(i, c.Unbroadcast(share, c.X(i)));
    }

    // Y = cond ? A : B; cond carries no gradient.
    private static void Where(GradientContext c)
    {
        var e = c.Emit;
        string dy = c.DY()!, zero = c.Scalar(0, c.Y());
        if (c.Needs(1)) c.SetGrad(1, c.Unbroadcast(e.Op("Where", [c.X(0), dy, zero]), c.X(1)));
        if (c.Needs(2)) c.SetGrad(2, c.Unbroadcast(e.Op("Where", [c.X(0), zero, dy]), c.X(2)));
    }

    // Optional min/max inputs (not differentiable); the gradient passes where min <= x <= max.
    private static void Clip(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0), dy = c.DY()!;
        string? inside = c.HasInput(1) ? e.Op("GreaterOrEqual", [x, c.X(1)]) : null;
        if (c.HasInput(2))
        {
            string below = e.Op("LessOrEqual", [x, c.X(2)]);
            inside = inside is null ? below : e.Op("And", [inside, below]);
        }
        c.SetGrad(0, inside is null ? dy : e.Op("Where", [inside, dy, c.Scalar(0, x)]));
    }

    // Between float types the gradient is cast back to the input's type. A Cast to or from an
    // integer or bool type is piecewise constant: no gradient passes (the path counts as a
    // constant), so integer casts on the way to the loss are harmless.
    private static void Cast(GradientContext c)
    {
        int to = c.Node.OpType == "Cast" ? (int)c.AttrInt("to", 0) : c.Info(c.X(1))?.ElemType ?? 0;
        int from = c.Info(c.X(0))?.ElemType ?? 0;
        if (!TensorData.IsFloat(to) || (from != 0 && !TensorData.IsFloat(from))) return;
        string dy = c.DY()!;
        c.SetGrad(0, from == to ? dy : from != 0 ? c.Emit.Cast(dy, from) : c.Emit.Op("CastLike", [dy, c.X(0)]));
    }

    // Without a training_mode input (the exporters' inference form) Dropout is the identity.
    // With one, the forward mask is requested: dX = dY·mask·(training ? 1/(1 − ratio) : 1).
    private static void Dropout(GradientContext c)
    {
        var e = c.Emit;
        if (c.DY(0) is not { } dy) return;
        if (!c.HasInput(2))
        {
            c.SetGrad(0, dy);
            return;
        }
        string x = c.X(0), one = c.Scalar(1, x);
        string mask = e.Cast(c.RequestForwardOutput(1), c.ElemType(x));
        string ratio = c.HasInput(1) ? e.Op("CastLike", [c.X(1), x]) : c.Scalar(0.5, x);
        string scale = e.Op("Where", [c.X(2), e.Div(one, e.Sub(one, ratio)), one]);
        c.SetGrad(0, e.Mul(e.Mul(dy, mask), scale));
    }
}
