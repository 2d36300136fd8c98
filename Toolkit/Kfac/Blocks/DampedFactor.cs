using OnnxKfac.Toolkit.Numerics;

namespace OnnxKfac.Toolkit.Kfac.Blocks;

/// <summary>
/// One running factor [groups, d, d] (float64, symmetric positive semi-definite) and its damped
/// inverse (F + s_g I)⁻¹ per group g, float32, the buffer the preconditioning program binds. The
/// inverse comes from one of two routes (<see cref="KfacInverseMethod"/>): Cholesky on the factor
/// through OpenBLAS's LAPACK, float32 or float64 (<see cref="InvertCholesky"/>), or ONNX Runtime's
/// <c>com.microsoft.Inverse</c> (LU, float32) in the inverse program (<see cref="Emit"/>).
/// </summary>
internal sealed class DampedFactor(double[] factor, int groups, int d, float[] inverse)
{
    /// <summary>The damping s_g added to each group's diagonal (set by the block before a refresh).</summary>
    public double[] Shift { get; } = new double[groups];

    public float[] Inverse { get; } = inverse;

    public double Cost => groups * Math.Pow(d, 3);

    // The ONNX Runtime route's float32 inputs, made when the inverse program is built (never under Cholesky).
    private float[]? _input, _damp;

    /// <summary>Before a refresh: the ONNX Runtime route's inputs from the running factor and <see cref="Shift"/>.</summary>
    public void Prepare()
    {
        if (_input is null) return;
        FactorMath.Narrow(factor, _input);
        for (int g = 0; g < groups; g++) _damp![g] = (float)Shift[g];
    }

    /// <summary>The ONNX Runtime route: F + s I, then <c>com.microsoft.Inverse</c>, into <see cref="Inverse"/>.</summary>
    public void Emit(ProgramBuilder pb, ProgramBindings b)
    {
        _input ??= GC.AllocateArray<float>(factor.Length, pinned: true);
        _damp ??= GC.AllocateArray<float>(groups, pinned: true);
        Prepare();
        string id = $"f{b.Inputs.Count}";
        long[] shape = [groups, d, d];
        string x = pb.Input(id, shape);
        string lambda = pb.Input(id + "_damp", [groups]);
        b.Inputs.Add((x, _input, shape));
        b.Inputs.Add((lambda, _damp, [groups]));
        string damped = pb.Op("Add", [x, pb.Op("Mul", [pb.Reshape(lambda, groups, 1, 1), pb.Reshape(pb.EyeOfFirst(x), 1, d, d)])]);
        pb.Output(pb.Op("Inverse", [damped]), id + "_inv", shape);
        b.Outputs.Add((id + "_inv", Inverse, shape));
    }

    /// <summary>
    /// Auto's bound on κ(F + sI) for float32: (tr F + s) / s ≥ (λ_max + s) / (λ_min + s) for a
    /// positive semi-definite F, so a float32 inverse is good to about 10⁴ · 2⁻²⁴ ≈ 6·10⁻⁴ relative.
    /// </summary>
    public const double SingleConditionBound = 1e4;

    /// <summary>
    /// The Cholesky route: per group, F + s I, <c>?potrf</c> + <c>?potri</c>, into <see cref="Inverse"/>.
    /// In float32 (straight in <see cref="Inverse"/>, about twice as fast) where <paramref name="precision"/>
    /// says so, for Auto where <see cref="SingleConditionBound"/> holds; else in float64
    /// (<paramref name="scratch"/>, ≥ d² values), narrowed. Auto redoes a failed float32
    /// factorization in float64. A group whose damped factor is not positive definite (possible only
    /// through rounding or non-finite statistics) gets NaNs: the optimizer then retries with more
    /// damping and, failing that, falls back to the gradient, as for any non-finite inverse
    /// (<see cref="NotPositiveDefinite"/> counts them).
    /// </summary>
    public void InvertCholesky(OpenBlasLibrary lapack, double[] scratch, KfacInversePrecision precision = KfacInversePrecision.Auto)
    {
        int failed = 0, single = 0, dd = d * d;
        var m = scratch.AsSpan(0, dd);
        for (int g = 0; g < groups; g++)
        {
            var f = factor.AsSpan(g * dd, dd);
            var output = Inverse.AsSpan(g * dd, dd);
            double s = Shift[g];
            if (precision == KfacInversePrecision.Float32 || (precision == KfacInversePrecision.Auto && WellConditioned(f, d, s)))
            {
                FactorMath.Narrow(f, output);
                for (int i = 0; i < d; i++) output[i * d + i] = (float)(f[i * d + i] + s);
                if (lapack.InvertSpd(output, d) == 0)
                {
                    single++;
                    continue;
                }
                if (precision == KfacInversePrecision.Float32)
                {
                    output.Fill(float.NaN);
                    failed++;
                    continue;
                }
            }
            f.CopyTo(m);
            for (int i = 0; i < d; i++) m[i * d + i] += s;
            if (lapack.InvertSpd(m, d) == 0) FactorMath.Narrow(m, output);
            else
            {
                output.Fill(float.NaN);
                failed++;
            }
        }
        NotPositiveDefinite = failed;
        SinglePrecisionGroups = single;
    }

    /// <summary>Whether (tr F + s) / s ≤ <see cref="SingleConditionBound"/> (false for a non-finite trace or s ≤ 0).</summary>
    internal static bool WellConditioned(ReadOnlySpan<double> f, int d, double s)
    {
        double trace = FactorMath.Trace(f, d);
        return s > 0 && double.IsFinite(trace) && trace >= 0 && (trace + s) / s <= SingleConditionBound;
    }

    /// <summary>Groups inverted in float32 at this rank's last Cholesky inversion (the rest went float64).</summary>
    public int SinglePrecisionGroups { get; private set; }

    /// <summary>The factor's groups.</summary>
    public int Groups => groups;

    /// <summary>Groups whose damped factor was not positive definite at this rank's last Cholesky inversion.</summary>
    public int NotPositiveDefinite { get; private set; }

    /// <summary>The scratch a Cholesky inversion needs (d² values).</summary>
    public int ScratchLength => d * d;
}
