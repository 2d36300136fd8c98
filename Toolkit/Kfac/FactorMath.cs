using System.Numerics;
using System.Runtime.InteropServices;

namespace OnnxKfac.Toolkit.Kfac;

/// <summary>
/// The element-wise loops of K-FAC's statistics and updates, with <see cref="Vector{T}"/>:
/// float32 graph outputs widened into float64 running sums, finiteness checks, dot products.
/// </summary>
internal static class FactorMath
{
    /// <summary>True when every value is finite (a NaN or infinity anywhere makes the sum non-finite).</summary>
    public static bool AllFinite(ReadOnlySpan<float> x)
    {
        var v = MemoryMarshal.Cast<float, Vector<float>>(x);
        var acc = Vector<float>.Zero;
        for (int i = 0; i < v.Length; i++) acc += v[i] * Vector<float>.Zero;   // 0·x is NaN exactly for NaN and ±∞
        float tail = 0;
        for (int i = v.Length * Vector<float>.Count; i < x.Length; i++) tail += x[i] * 0f;
        return float.IsFinite(Vector.Sum(acc) + tail);
    }

    /// <summary>sum += x, widening to float64; false when x holds a NaN or infinity (the sum is then poisoned).</summary>
    public static bool Accumulate(Span<double> sum, ReadOnlySpan<float> x)
    {
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var sv = MemoryMarshal.Cast<double, Vector<double>>(sum);
        var probe = Vector<float>.Zero;
        for (int i = 0; i < xv.Length; i++)
        {
            var v = xv[i];
            probe += v * Vector<float>.Zero;   // 0·x is NaN exactly for NaN and ±∞
            Vector.Widen(v, out var lo, out var hi);
            sv[2 * i] += lo;
            sv[2 * i + 1] += hi;
        }
        float tail = 0;
        for (int i = xv.Length * Vector<float>.Count; i < x.Length; i++)
        {
            tail += x[i] * 0f;
            sum[i] += x[i];
        }
        return float.IsFinite(Vector.Sum(probe) + tail);
    }

    /// <summary>ema = e·ema + w·sum, then sum = 0.</summary>
    public static void Fold(Span<double> ema, Span<double> sum, double e, double w)
    {
        var ev = MemoryMarshal.Cast<double, Vector<double>>(ema);
        var sv = MemoryMarshal.Cast<double, Vector<double>>(sum);
        var eV = new Vector<double>(e);
        var wV = new Vector<double>(w);
        for (int i = 0; i < ev.Length; i++)
        {
            ev[i] = eV * ev[i] + wV * sv[i];
            sv[i] = Vector<double>.Zero;
        }
        for (int i = ev.Length * Vector<double>.Count; i < ema.Length; i++)
        {
            ema[i] = e * ema[i] + w * sum[i];
            sum[i] = 0;
        }
    }

    /// <summary>
    /// ema = e·ema + (1 − e)·x with x widened to float64: <see cref="Fold"/> of a sum that holds one
    /// batch (sum = (double)x exactly, w = (1 − e)/1), in the same bits, without the sum.
    /// </summary>
    public static void FoldOne(Span<double> ema, ReadOnlySpan<float> x, double e)
    {
        var ev = MemoryMarshal.Cast<double, Vector<double>>(ema);
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var eV = new Vector<double>(e);
        double w = 1 - e;
        var wV = new Vector<double>(w);
        int n = Math.Min(xv.Length, ev.Length / 2);
        for (int i = 0; i < n; i++)
        {
            Vector.Widen(xv[i], out var lo, out var hi);
            ev[2 * i] = eV * ev[2 * i] + wV * lo;
            ev[2 * i + 1] = eV * ev[2 * i + 1] + wV * hi;
        }
        for (int i = n * Vector<float>.Count; i < ema.Length; i++) ema[i] = e * ema[i] + w * x[i];
    }

    /// <summary>y = x + a·z element-wise (float32, the scalar expression's bits; a = 0: a copy of x, whatever z holds).</summary>
    public static void AddScaled(Span<float> y, ReadOnlySpan<float> x, float a, ReadOnlySpan<float> z)
    {
        if (a == 0)
        {
            x.CopyTo(y);
            return;
        }
        var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var zv = MemoryMarshal.Cast<float, Vector<float>>(z);
        var aV = new Vector<float>(a);
        for (int i = 0; i < yv.Length; i++) yv[i] = xv[i] + aV * zv[i];
        for (int i = yv.Length * Vector<float>.Count; i < y.Length; i++) y[i] = x[i] + a * z[i];
    }

    /// <summary>y = a·y + b·x element-wise (a = 0: y = b·x, whatever y held).</summary>
    public static void Combine(Span<float> y, float a, float b, ReadOnlySpan<float> x)
    {
        var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var aV = new Vector<float>(a);
        var bV = new Vector<float>(b);
        if (a == 0)
        {
            for (int i = 0; i < yv.Length; i++) yv[i] = bV * xv[i];
            for (int i = yv.Length * Vector<float>.Count; i < y.Length; i++) y[i] = b * x[i];
            return;
        }
        for (int i = 0; i < yv.Length; i++) yv[i] = aV * yv[i] + bV * xv[i];
        for (int i = yv.Length * Vector<float>.Count; i < y.Length; i++) y[i] = a * y[i] + b * x[i];
    }

    /// <summary>
    /// p += r·d, returning Σp² before and after in float64 when <paramref name="norms"/> (else zeros:
    /// one pass fewer over nothing the caller needs).
    /// </summary>
    public static (double Before, double After) Step(Span<float> p, float r, ReadOnlySpan<float> d, bool norms)
    {
        var pv = MemoryMarshal.Cast<float, Vector<float>>(p);
        var dv = MemoryMarshal.Cast<float, Vector<float>>(d);
        var rV = new Vector<float>(r);
        if (!norms)
        {
            for (int i = 0; i < pv.Length; i++) pv[i] += rV * dv[i];
            for (int i = pv.Length * Vector<float>.Count; i < p.Length; i++) p[i] += r * d[i];
            return (0, 0);
        }
        var before = Vector<double>.Zero;
        var after = Vector<double>.Zero;
        for (int i = 0; i < pv.Length; i++)
        {
            var x = pv[i];
            Vector.Widen(x, out var b0, out var b1);
            before += b0 * b0 + b1 * b1;
            x += rV * dv[i];
            pv[i] = x;
            Vector.Widen(x, out var a0, out var a1);
            after += a0 * a0 + a1 * a1;
        }
        double sb = Vector.Sum(before), sa = Vector.Sum(after);
        for (int i = pv.Length * Vector<float>.Count; i < p.Length; i++)
        {
            sb += (double)p[i] * p[i];
            p[i] += r * d[i];
            sa += (double)p[i] * p[i];
        }
        return (sb, sa);
    }

    /// <summary>The trace of the d × d row-major matrix <paramref name="m"/> (its first d² values).</summary>
    public static double Trace(ReadOnlySpan<double> m, int d)
    {
        double t = 0;
        for (int i = 0; i < d; i++) t += m[i * d + i];
        return t;
    }

    /// <summary>Narrows float64 to float32.</summary>
    public static void Narrow(ReadOnlySpan<double> x, Span<float> y)
    {
        var xv = MemoryMarshal.Cast<double, Vector<double>>(x);
        var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
        int n = Math.Min(xv.Length / 2, yv.Length);
        for (int i = 0; i < n; i++) yv[i] = Vector.Narrow(xv[2 * i], xv[2 * i + 1]);
        for (int i = n * Vector<float>.Count; i < x.Length; i++) y[i] = (float)x[i];
    }

    /// <summary>Σ a·b in float64.</summary>
    public static double Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        var av = MemoryMarshal.Cast<float, Vector<float>>(a);
        var bv = MemoryMarshal.Cast<float, Vector<float>>(b);
        var acc = Vector<double>.Zero;
        for (int i = 0; i < av.Length; i++)
        {
            Vector.Widen(av[i], out var a0, out var a1);
            Vector.Widen(bv[i], out var b0, out var b1);
            acc += a0 * b0 + a1 * b1;
        }
        double s = Vector.Sum(acc);
        for (int i = av.Length * Vector<float>.Count; i < a.Length; i++) s += (double)a[i] * b[i];
        return s;
    }

    /// <summary>
    /// The float64 Gram of three vectors in one pass over them (the quadratic rule reads Δ, ∇ and δ₀
    /// once instead of five times): [x·x, x·y, x·z, y·y, y·z, z·z] into <paramref name="gram"/>.
    /// </summary>
    public static void Gram(ReadOnlySpan<float> x, ReadOnlySpan<float> y, ReadOnlySpan<float> z, Span<double> gram)
    {
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
        var zv = MemoryMarshal.Cast<float, Vector<float>>(z);
        Vector<double> xx = default, xy = default, xz = default, yy = default, yz = default, zz = default;
        for (int i = 0; i < xv.Length; i++)
        {
            Vector.Widen(xv[i], out var x0, out var x1);
            Vector.Widen(yv[i], out var y0, out var y1);
            Vector.Widen(zv[i], out var z0, out var z1);
            xx += x0 * x0 + x1 * x1;
            xy += x0 * y0 + x1 * y1;
            xz += x0 * z0 + x1 * z1;
            yy += y0 * y0 + y1 * y1;
            yz += y0 * z0 + y1 * z1;
            zz += z0 * z0 + z1 * z1;
        }
        gram[0] = Vector.Sum(xx); gram[1] = Vector.Sum(xy); gram[2] = Vector.Sum(xz);
        gram[3] = Vector.Sum(yy); gram[4] = Vector.Sum(yz); gram[5] = Vector.Sum(zz);
        for (int i = xv.Length * Vector<float>.Count; i < x.Length; i++)
        {
            double a = x[i], b = y[i], c = z[i];
            gram[0] += a * a; gram[1] += a * b; gram[2] += a * c;
            gram[3] += b * b; gram[4] += b * c; gram[5] += c * c;
        }
    }
}
