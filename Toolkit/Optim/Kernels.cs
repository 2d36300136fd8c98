using System.Numerics;
using System.Runtime.InteropServices;

namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// The optimizers' element-wise inner loops: one fused pass over each parameter with
/// <see cref="Vector{T}"/>, then a scalar tail that performs the same float operations in the
/// same order (so results do not depend on the vector width). The order of operations follows
/// PyTorch's single-tensor CPU kernels, each rounded to float as PyTorch rounds them.
/// </summary>
internal static class Kernels
{
    /// <summary>
    /// torch.optim.SGD for one parameter: d = g + wd·p; with momentum, b = d on the first
    /// step, else b = μ·b + (1 - dampening)·d, and d = d + μ·b (Nesterov) or d = b; p = p - lr·d.
    /// <paramref name="buffer"/> is empty when momentum is off.
    /// </summary>
    public static void Sgd(Span<float> p, ReadOnlySpan<float> g, Span<float> buffer,
        float weightDecay, float momentum, float gradScale, float negLr, bool first, bool nesterov)
    {
        bool decay = weightDecay != 0;
        bool useMomentum = !buffer.IsEmpty;
        var pv = MemoryMarshal.Cast<float, Vector<float>>(p);
        var gv = MemoryMarshal.Cast<float, Vector<float>>(g);
        var bv = MemoryMarshal.Cast<float, Vector<float>>(buffer);
        var wdV = new Vector<float>(weightDecay);
        var muV = new Vector<float>(momentum);
        var scaleV = new Vector<float>(gradScale);
        var lrV = new Vector<float>(negLr);
        int vectors = pv.Length;
        if (useMomentum && !first && !nesterov)
        {
            // Heavy ball after the first step, the case almost every step takes, without the
            // loop-invariant branches below (the JIT does not unswitch them): the same operations.
            // Five streams (g, p and b read, p and b written) make this pass memory-bound.
            if (decay)
                for (int k = 0; k < vectors; k++)
                {
                    var b = bv[k] * muV + scaleV * (gv[k] + wdV * pv[k]);
                    bv[k] = b;
                    pv[k] += lrV * b;
                }
            else
                for (int k = 0; k < vectors; k++)
                {
                    var b = bv[k] * muV + scaleV * gv[k];
                    bv[k] = b;
                    pv[k] += lrV * b;
                }
            vectors = 0;
        }
        for (int k = 0; k < vectors; k++)
        {
            var d = gv[k];
            if (decay) d += wdV * pv[k];
            if (useMomentum)
            {
                var b = first ? d : bv[k] * muV + scaleV * d;
                bv[k] = b;
                d = nesterov ? d + muV * b : b;
            }
            pv[k] += lrV * d;
        }
        for (int i = pv.Length * Vector<float>.Count; i < p.Length; i++)
        {
            float d = g[i];
            if (decay) d += weightDecay * p[i];
            if (useMomentum)
            {
                float b = first ? d : buffer[i] * momentum + gradScale * d;
                buffer[i] = b;
                d = nesterov ? d + momentum * b : b;
            }
            p[i] += negLr * d;
        }
    }

    /// <summary>
    /// torch.optim.AdamW for one parameter: p = p·decay; m = β1·m + (1-β1)·g;
    /// v = β2·v + (1-β2)·g·g; v̂ = max(vmax, v) with AMSGrad (kept in <paramref name="vmax"/>,
    /// empty otherwise) else v; p = p - stepSize·m / (sqrt(v̂)/sqrt(bc2) + eps).
    /// </summary>
    public static void AdamW(Span<float> p, ReadOnlySpan<float> g, Span<float> m, Span<float> v, Span<float> vmax,
        float decay, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2,
        float bias2Sqrt, float eps, float negStepSize, float l2 = 0)
    {
        bool coupled = l2 != 0;   // torch.optim.Adam: g = g + wd·p before the moments (then decay is 1)
        var l2V = new Vector<float>(l2);
        bool ams = !vmax.IsEmpty;
        var pv = MemoryMarshal.Cast<float, Vector<float>>(p);
        var gv = MemoryMarshal.Cast<float, Vector<float>>(g);
        var mv = MemoryMarshal.Cast<float, Vector<float>>(m);
        var vv = MemoryMarshal.Cast<float, Vector<float>>(v);
        var xv = MemoryMarshal.Cast<float, Vector<float>>(vmax);
        var decayV = new Vector<float>(decay);
        var b1 = new Vector<float>(beta1);
        var c1 = new Vector<float>(oneMinusBeta1);
        var b2 = new Vector<float>(beta2);
        var c2 = new Vector<float>(oneMinusBeta2);
        var bcV = new Vector<float>(bias2Sqrt);
        var epsV = new Vector<float>(eps);
        var stepV = new Vector<float>(negStepSize);
        for (int k = 0; k < pv.Length; k++)
        {
            var gk = coupled ? gv[k] + l2V * pv[k] : gv[k];
            var pk = pv[k] * decayV;
            var mk = mv[k] * b1 + c1 * gk;
            var vk = vv[k] * b2 + c2 * gk * gk;
            mv[k] = mk;
            vv[k] = vk;
            if (ams) xv[k] = vk = Vector.Max(xv[k], vk);
            var denom = Vector.SquareRoot(vk) / bcV + epsV;
            pv[k] = pk + stepV * mk / denom;
        }
        for (int i = pv.Length * Vector<float>.Count; i < p.Length; i++)
        {
            float gi = coupled ? g[i] + l2 * p[i] : g[i];
            float pi = p[i] * decay;
            float mi = m[i] * beta1 + oneMinusBeta1 * gi;
            float vi = v[i] * beta2 + oneMinusBeta2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            if (ams) vmax[i] = vi = MathF.Max(vmax[i], vi);
            float denom = MathF.Sqrt(vi) / bias2Sqrt + eps;
            p[i] = pi + negStepSize * mi / denom;
        }
    }

    /// <summary>Σ x² accumulated in double.</summary>
    public static double SumOfSquares(ReadOnlySpan<float> x)
    {
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var acc0 = Vector<double>.Zero;
        var acc1 = Vector<double>.Zero;
        for (int k = 0; k < xv.Length; k++)
        {
            Vector.Widen(xv[k], out var lo, out var hi);
            acc0 += lo * lo;
            acc1 += hi * hi;
        }
        double sum = Vector.Sum(acc0 + acc1);
        for (int i = xv.Length * Vector<float>.Count; i < x.Length; i++) sum += (double)x[i] * x[i];
        return sum;
    }

    /// <summary>x *= scale.</summary>
    public static void Scale(Span<float> x, float scale)
    {
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var s = new Vector<float>(scale);
        for (int k = 0; k < xv.Length; k++) xv[k] *= s;
        for (int i = xv.Length * Vector<float>.Count; i < x.Length; i++) x[i] *= scale;
    }

    /// <summary>acc = w·x (<paramref name="first"/>) or acc += w·x.</summary>
    public static void Accumulate(Span<float> acc, ReadOnlySpan<float> x, float w, bool first)
    {
        var av = MemoryMarshal.Cast<float, Vector<float>>(acc);
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var wv = new Vector<float>(w);
        for (int k = 0; k < av.Length; k++) av[k] = first ? wv * xv[k] : av[k] + wv * xv[k];
        for (int i = av.Length * Vector<float>.Count; i < acc.Length; i++) acc[i] = first ? w * x[i] : acc[i] + w * x[i];
    }

    /// <summary>x = (acc + w·x)·inv, the last micro-batch folded into the average.</summary>
    public static void FinishAverage(Span<float> x, ReadOnlySpan<float> acc, float w, float inv)
    {
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var av = MemoryMarshal.Cast<float, Vector<float>>(acc);
        var wv = new Vector<float>(w);
        var iv = new Vector<float>(inv);
        for (int k = 0; k < xv.Length; k++) xv[k] = (av[k] + wv * xv[k]) * iv;
        for (int i = xv.Length * Vector<float>.Count; i < x.Length; i++) x[i] = (acc[i] + w * x[i]) * inv;
    }
}
