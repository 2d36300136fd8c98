using OnnxKfac.Toolkit.Numerics;

namespace OnnxKfac.Toolkit.Kfac.Blocks;

/// <summary>
/// One running factor [groups, d, d] (float64, symmetric positive semi-definite) and its damped
/// inverse (F + s_g I)⁻¹ per group g, float32, the buffer the preconditioning program binds. The
/// inverse comes from one of two routes (<see cref="KfacInverseMethod"/>): Cholesky on the float64
/// factor through OpenBLAS's LAPACK (<see cref="InvertCholesky"/>), or ONNX Runtime's
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
    /// The Cholesky route: per group, F + s I in float64 (<paramref name="scratch"/>, ≥ d² values),
    /// dpotrf + dpotri, narrowed into <see cref="Inverse"/>. A group whose damped factor is not
    /// positive definite (possible only through rounding or non-finite statistics) gets NaNs: the
    /// optimizer then retries with more damping and, failing that, falls back to the gradient,
    /// as for any non-finite inverse (<see cref="NotPositiveDefinite"/> counts them).
    /// </summary>
    public void InvertCholesky(OpenBlasLibrary lapack, double[] scratch)
    {
        int failed = 0, dd = d * d;
        var m = scratch.AsSpan(0, dd);
        for (int g = 0; g < groups; g++)
        {
            factor.AsSpan(g * dd, dd).CopyTo(m);
            for (int i = 0; i < d; i++) m[i * d + i] += Shift[g];
            var output = Inverse.AsSpan(g * dd, dd);
            if (lapack.InvertSpd(m, d) == 0) FactorMath.Narrow(m, output);
            else
            {
                output.Fill(float.NaN);
                failed++;
            }
        }
        NotPositiveDefinite = failed;
    }

    /// <summary>Groups whose damped factor was not positive definite at this rank's last Cholesky inversion.</summary>
    public int NotPositiveDefinite { get; private set; }

    /// <summary>The scratch a Cholesky inversion needs (d² values).</summary>
    public int ScratchLength => d * d;
}
