namespace OnnxKfac.Graph.Autodiff.Rules;

/// <summary>
/// Activations: Relu, LeakyRelu, PRelu, Elu, Selu, Celu, ThresholdedRelu, Sigmoid, HardSigmoid,
/// Tanh, Softplus, Softsign, Gelu, HardSwish, Mish. Forward outputs are reused where the
/// derivative is a function of them. Kinks follow PyTorch autograd: the x &gt; 0 branch is taken
/// only for x &gt; 0 (Relu'(0) = 0, LeakyRelu'(0) = PRelu'(0) = slope, Elu'(0) = α,
/// Selu'(0) = γα, Celu'(0) = 1), HardSigmoid's gradient is 0 at both corners, HardSwish'(±3)
/// = x/3 + ½.
/// </summary>
internal static class ActivationRules
{
    public static void Register(GradientRegistry r)
    {
        r.Add("Relu", c => c.SetGrad(0, c.Emit.Op("Where", [Positive(c), c.DY()!, c.Scalar(0, c.X(0))])));
        r.Add("LeakyRelu", c =>
            c.SetGrad(0, c.Emit.Op("Where", [Positive(c), c.DY()!, c.Emit.Mul(c.DY()!, c.Scalar(c.AttrFloat("alpha", 0.01f), c.X(0)))])));
        r.Add("PRelu", PRelu);
        r.Add("Elu", c => NegativeBranch(c, 1, c.AttrFloat("alpha", 1f)));
        r.Add("Selu", c =>
        {
            double gamma = c.AttrFloat("gamma", 1.05070102214813232421875f);
            NegativeBranch(c, gamma, gamma * c.AttrFloat("alpha", 1.67326319217681884765625f));
        });
        r.Add("Celu", Celu);
        r.Add("ThresholdedRelu", c =>
        {
            string above = c.Emit.Op("Greater", [c.X(0), c.Scalar(c.AttrFloat("alpha", 1f), c.X(0))]);
            c.SetGrad(0, c.Emit.Op("Where", [above, c.DY()!, c.Scalar(0, c.X(0))]));
        });
        r.Add("Sigmoid", c =>
        {
            var e = c.Emit;
            c.SetGrad(0, e.Mul(c.DY()!, e.Mul(c.Y(), e.Sub(c.Scalar(1, c.Y()), c.Y()))));
        });
        r.Add("HardSigmoid", HardSigmoid);
        r.Add("Tanh", c => c.SetGrad(0, c.Emit.Mul(c.DY()!, OneMinusSquare(c, c.Y()))));
        r.Add("Softplus", c => c.SetGrad(0, c.Emit.Mul(c.DY()!, c.Emit.Op("Sigmoid", [c.X(0)]))));
        r.Add("Softsign", c =>
        {
            var e = c.Emit;
            string d = e.Add(c.Scalar(1, c.X(0)), e.Op("Abs", [c.X(0)]));
            c.SetGrad(0, e.Div(c.DY()!, e.Mul(d, d)));
        });
        r.Add("Gelu", Gelu);
        r.Add("HardSwish", HardSwish);
        r.Add("Mish", Mish);
    }

    private static string Positive(GradientContext c) => c.Emit.Op("Greater", [c.X(0), c.Scalar(0, c.X(0))]);

    private static string OneMinusSquare(GradientContext c, string t) => c.Emit.Sub(c.Scalar(1, t), c.Emit.Mul(t, t));

    // Elu and Selu: y = scale·x for x > 0, y = k·(exp(x) − 1) otherwise, so y' = scale or y + k.
    private static void NegativeBranch(GradientContext c, double scale, double k)
    {
        var e = c.Emit;
        string dy = c.DY()!, x = c.X(0);
        string pos = scale == 1 ? dy : e.Mul(dy, c.Scalar(scale, x));
        c.SetGrad(0, e.Op("Where", [Positive(c), pos, e.Mul(dy, e.Add(c.Y(), c.Scalar(k, x)))]));
    }

    // y = max(0, x) + min(0, α(exp(x/α) − 1)): y' = 1 for x > 0, exp(x/α) = y/α + 1 otherwise.
    private static void Celu(GradientContext c)
    {
        var e = c.Emit;
        string dy = c.DY()!, x = c.X(0);
        string neg = e.Add(e.Div(c.Y(), c.Scalar(c.AttrFloat("alpha", 1f), x)), c.Scalar(1, x));
        c.SetGrad(0, e.Op("Where", [Positive(c), dy, e.Mul(dy, neg)]));
    }

    // y = x for x > 0, slope·x otherwise (slope broadcasts to x): dX = x > 0 ? dY : slope·dY,
    // dSlope = Σ_broadcast (x > 0 ? 0 : x·dY).
    private static void PRelu(GradientContext c)
    {
        var e = c.Emit;
        string dy = c.DY()!, x = c.X(0), zero = c.Scalar(0, x), pos = Positive(c);
        if (c.Needs(0)) c.SetGrad(0, e.Op("Where", [pos, dy, e.Mul(dy, c.X(1))]));
        if (c.Needs(1)) c.SetGrad(1, c.Unbroadcast(e.Op("Where", [pos, zero, e.Mul(dy, x)]), c.X(1)));
    }

    // y = max(0, min(1, αx + β)): y' = α where 0 < y < 1 (strictly, as PyTorch).
    private static void HardSigmoid(GradientContext c)
    {
        var e = c.Emit;
        string y = c.Y();
        string inside = e.Op("And", [e.Op("Greater", [y, c.Scalar(0, y)]), e.Op("Less", [y, c.Scalar(1, y)])]);
        string scaled = e.Mul(c.DY()!, c.Scalar(c.AttrFloat("alpha", 0.2f), y));
        c.SetGrad(0, e.Op("Where", [inside, scaled, c.Scalar(0, y)]));
    }

    // y = x·max(0, min(1, x/6 + ½)): y' = 0 for x < −3, x/3 + ½ for −3 <= x <= 3, 1 above (PyTorch's branches).
    private static void HardSwish(GradientContext c)
    {
        var e = c.Emit;
        string dy = c.DY()!, x = c.X(0);
        string middle = e.Mul(dy, e.Add(e.Div(x, c.Scalar(3, x)), c.Scalar(0.5, x)));
        string upper = e.Op("Where", [e.Op("LessOrEqual", [x, c.Scalar(3, x)]), middle, dy]);
        c.SetGrad(0, e.Op("Where", [e.Op("Less", [x, c.Scalar(-3, x)]), c.Scalar(0, x), upper]));
    }

    // approximate="none": y' = Φ(x) + x·φ(x). approximate="tanh": with u = k(x + 0.044715x³),
    // k = √(2/π), t = tanh(u): y' = ½(1 + t) + ½x(1 − t²)·k(1 + 3·0.044715x²).
    private static void Gelu(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0), x2 = e.Mul(x, x), half = c.Scalar(0.5, x), one = c.Scalar(1, x);
        string slope;
        switch (c.AttrString("approximate", "none"))
        {
            case "none":
                string cdf = e.Mul(half, e.Add(one, e.Op("Erf", [e.Mul(x, c.Scalar(1 / Math.Sqrt(2), x))])));
                string pdf = e.Mul(e.Op("Exp", [e.Mul(x2, c.Scalar(-0.5, x))]), c.Scalar(1 / Math.Sqrt(2 * Math.PI), x));
                slope = e.Add(cdf, e.Mul(x, pdf));
                break;
            case "tanh":
                const double Cubic = 0.044715;
                string k = c.Scalar(Math.Sqrt(2 / Math.PI), x);
                string t = e.Op("Tanh", [e.Mul(k, e.Add(x, e.Mul(c.Scalar(Cubic, x), e.Mul(x2, x))))]);
                string du = e.Mul(k, e.Add(one, e.Mul(c.Scalar(3 * Cubic, x), x2)));
                slope = e.Mul(half, e.Add(e.Add(one, t), e.Mul(e.Mul(x, OneMinusSquare(c, t)), du)));
                break;
            default:
                throw c.Unsupported($"Gelu approximate=\"{c.AttrString("approximate", "none")}\" is not a known form (expected \"none\" or \"tanh\")");
        }
        c.SetGrad(0, e.Mul(c.DY()!, slope));
    }

    // y = x·tanh(softplus(x)): y' = t + x·σ(x)·(1 − t²) with t = tanh(softplus(x)).
    private static void Mish(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0);
        string t = e.Op("Tanh", [e.Op("Softplus", [x])]);
        string slope = e.Add(t, e.Mul(e.Mul(x, e.Op("Sigmoid", [x])), OneMinusSquare(c, t)));
        c.SetGrad(0, e.Mul(c.DY()!, slope));
    }
}
