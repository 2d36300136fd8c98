using OnnxKfac.Graph.Model;

namespace OnnxKfac.Graph.Autodiff.Rules;

/// <summary>
/// Normalisation: BatchNormalization (inference form), LayerNormalization,
/// InstanceNormalization. Running statistics are constants, not differentiated.
/// </summary>
internal static class NormalizationRules
{
    public static void Register(GradientRegistry r)
    {
        r.Add("BatchNormalization", BatchNormalization, differentiableInputs: [0, 1, 2]);
        r.Add("LayerNormalization", LayerNormalization, differentiableInputs: [0, 1, 2]);
        r.Add("InstanceNormalization", InstanceNormalization);
    }

    // Y = (X − mean)·r·scale + B per channel (axis 1), r = 1/√(var + ε):
    // dX = dY·scale·r, dScale = Σ dY·x̂, dB = Σ dY over every axis but the channel one.
    private static void BatchNormalization(GradientContext c)
    {
        if (c.AttrInt("training_mode", 0) != 0 || c.Node.Output.Skip(1).Any(o => o.Length > 0))
            throw c.Unsupported("training_mode=1 (batch statistics) is not supported; export the model in eval mode");
        var e = c.Emit;
        string x = c.X(0), scale = c.X(1), mean = c.X(3), dy = c.DY()!;
        int rank = c.Rank(x);
        var sumAxes = Spatial.AllButChannel(rank - 2);
        string r = e.Op("Reciprocal", [e.Op("Sqrt", [e.Add(c.X(4), c.Scalar(c.AttrFloat("epsilon", 1e-5f), c.X(4)))])]);
        string PerChannel(string v) => rank == 2 ? v : e.Reshape(v, e.Int64s([-1, .. Enumerable.Repeat(1L, rank - 2)]));
        if (c.Needs(0)) c.SetGrad(0, e.Mul(dy, PerChannel(e.Mul(scale, r))));
        if (c.Needs(1))
        {
            string xhat = e.Mul(e.Sub(x, PerChannel(mean)), PerChannel(r));
            c.SetGrad(1, e.ReduceSum(e.Mul(dy, xhat), sumAxes, keepDims: false));
        }
        if (c.Needs(2)) c.SetGrad(2, e.ReduceSum(dy, sumAxes, keepDims: false));
    }

    // Normalises over axes [axis, rank). With x̂ = (X − μ)·r and g = dY·scale:
    // dX = r·(g − mean(g) − x̂·mean(g·x̂)); dScale = Σ dY·x̂ and dB = Σ dY over the leading axes.
    // Mean and InvStdDev come from the forward node when they are in X's precision
    // (stash_type), else they are recomputed in X's precision.
    private static void LayerNormalization(GradientContext c)
    {
        if (c.DY(1) is not null || c.DY(2) is not null)
            throw c.Unsupported("a gradient flows into the Mean or InvStdDev output, which is not supported");
        var e = c.Emit;
        string x = c.X(0), dy = c.DY()!;
        int rank = c.Rank(x);
        int axis = c.Axis(c.AttrInt("axis", -1), rank);
        long[] normAxes = Enumerable.Range(axis, rank - axis).Select(k => (long)k).ToArray();
        long[] leadAxes = Enumerable.Range(0, axis).Select(k => (long)k).ToArray();
        float eps = c.AttrFloat("epsilon", 1e-5f);

        string xhat;
        string r;
        if (c.ElemType(x) == (int)c.AttrInt("stash_type", 1))
        {
            r = c.RequestForwardOutput(2);
            xhat = e.Mul(e.Sub(x, c.RequestForwardOutput(1)), r);
        }
        else (xhat, r) = Standardize(c, x, normAxes, eps);

        if (c.Needs(0))
        {
            string g = e.Mul(dy, c.X(1));
            string gMean = e.ReduceMean(g, normAxes, keepDims: true);
            string gxMean = e.ReduceMean(e.Mul(g, xhat), normAxes, keepDims: true);
            c.SetGrad(0, e.Mul(r, e.Sub(e.Sub(g, gMean), e.Mul(xhat, gxMean))));
        }
        if (c.Needs(1)) c.SetGrad(1, ToParameter(c, e.Mul(dy, xhat), leadAxes, rank, c.X(1)));
        if (c.HasInput(2) && c.Needs(2)) c.SetGrad(2, ToParameter(c, dy, leadAxes, rank, c.X(2)));
    }

    // Per (n, c) over the spatial axes; scale and B per channel. Statistics are recomputed
    // (the op has no outputs for them).
    private static void InstanceNormalization(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0), dy = c.DY()!;
        int rank = c.Rank(x);
        long[] spatial = Enumerable.Range(2, rank - 2).Select(k => (long)k).ToArray();
        var (xhat, r) = Standardize(c, x, spatial, c.AttrFloat("epsilon", 1e-5f));
        if (c.Needs(0))
        {
            string g = e.Mul(dy, e.Reshape(c.X(1), e.Int64s([-1, .. Enumerable.Repeat(1L, rank - 2)])));
            string gMean = e.ReduceMean(g, spatial, keepDims: true);
            string gxMean = e.ReduceMean(e.Mul(g, xhat), spatial, keepDims: true);
            c.SetGrad(0, e.Mul(r, e.Sub(e.Sub(g, gMean), e.Mul(xhat, gxMean))));
        }
        var sumAxes = Spatial.AllButChannel(rank - 2);
        if (c.Needs(1)) c.SetGrad(1, e.ReduceSum(e.Mul(dy, xhat), sumAxes, keepDims: false));
        if (c.Needs(2)) c.SetGrad(2, e.ReduceSum(dy, sumAxes, keepDims: false));
    }

    /// <summary>x̂ = (X − mean)·r and r = 1/√(var + ε) over <paramref name="axes"/> (biased variance, as the ops use).</summary>
    private static (string XHat, string R) Standardize(GradientContext c, string x, long[] axes, float eps)
    {
        var e = c.Emit;
        string centered = e.Sub(x, e.ReduceMean(x, axes, keepDims: true));
        string variance = e.ReduceMean(e.Mul(centered, centered), axes, keepDims: true);
        string r = e.Op("Reciprocal", [e.Op("Sqrt", [e.Add(variance, c.Scalar(eps, x))])]);
        return (e.Mul(centered, r), r);
    }

    /// <summary>
    /// Sums <paramref name="grad"/> (shaped like X) over the leading axes; when the parameter
    /// is not exactly X's normalised shape (it broadcasts), the shared unbroadcast helper does it.
    /// </summary>
    private static string ToParameter(GradientContext c, string grad, long[] leadAxes, int rank, string parameter)
    {
        var xs = c.Info(c.X(0))?.Shape;
        var ps = c.Info(parameter)?.Shape;
        bool exact = xs is not null && ps is not null && ps.Length == rank - leadAxes.Length
            && ps.Select((d, k) => d >= 0 && d == xs[leadAxes.Length + k]).All(b => b);
        if (!exact) return c.Unbroadcast(grad, parameter);
        return leadAxes.Length == 0 ? grad : c.Emit.ReduceSum(grad, leadAxes, keepDims: false);
    }
}
