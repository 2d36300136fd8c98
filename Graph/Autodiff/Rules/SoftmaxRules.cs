namespace OnnxKfac.Graph.Autodiff.Rules;

/// <summary>
/// Softmax and LogSoftmax with opset-13 semantics (one axis, default −1). Both reuse the
/// forward output, so large logits give no overflow: Softmax's Y is in [0, 1] and
/// LogSoftmax's Exp(Y) is too.
/// </summary>
internal static class SoftmaxRules
{
    public static void Register(GradientRegistry r)
    {
        r.Add("Softmax", Softmax);
        r.Add("LogSoftmax", LogSoftmax);
    }

    // dX = Y·(dY − Σ_axis dY·Y)
    private static void Softmax(GradientContext c)
    {
        var e = c.Emit;
        string y = c.Y(), dy = c.DY()!;
        string dot = e.ReduceSum(e.Mul(dy, y), [c.AttrInt("axis", -1)], keepDims: true);
        c.SetGrad(0, e.Mul(y, e.Sub(dy, dot)));
    }

    // dX = dY − Exp(Y)·Σ_axis dY
    private static void LogSoftmax(GradientContext c)
    {
        var e = c.Emit;
        string y = c.Y(), dy = c.DY()!;
        string total = e.ReduceSum(dy, [c.AttrInt("axis", -1)], keepDims: true);
        c.SetGrad(0, e.Sub(dy, e.Mul(e.Op("Exp", [y]), total)));
    }
}
