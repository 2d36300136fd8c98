using OnnxKfac.Toolkit.Kfac.Blocks;
using OnnxKfac.Toolkit.Numerics;

namespace OnnxKfac.Toolkit.Kfac;

/// <summary>
/// K-FAC's inverse refresh by Cholesky (<see cref="KfacInverseMethod.Cholesky"/>): every damped
/// factor of the given blocks inverted on the host with OpenBLAS's ?potrf + ?potri, in float32
/// where the factor is well conditioned (<see cref="KfacInversePrecision"/>) and float64 otherwise,
/// into the float32 buffers the preconditioning program binds (on any device). About n³ flops per
/// n × n factor against LU's 2n³, in LAPACK kernels that run near the machine's GEMM peak where
/// ONNX Runtime's float32 LU does not.
/// </summary>
internal sealed class CholeskyProgram : IKfacProgram
{
    private readonly OpenBlasLibrary _lapack;
    private readonly DampedFactor[] _factors;
    private readonly int _threads;
    private readonly KfacInversePrecision _precision;
    private readonly double[] _scratch;

    private CholeskyProgram(OpenBlasLibrary lapack, DampedFactor[] factors, int threads, KfacInversePrecision precision)
    {
        _lapack = lapack;
        _factors = factors;
        _threads = threads;
        _precision = precision;
        _scratch = new double[factors.Max(f => f.ScratchLength)];
    }

    /// <summary>The program over <paramref name="blocks"/>' damped factors; null when there are none.</summary>
    /// <param name="threads">OpenBLAS's threads (the session's intra-op count; set before every run, the setting is process-wide).</param>
    public static CholeskyProgram? Create(OpenBlasLibrary lapack, IEnumerable<CurvatureBlock> blocks, int threads, KfacInversePrecision precision)
    {
        DampedFactor[] factors = [.. blocks.SelectMany(b => b.DampedFactors)];
        return factors.Length == 0 ? null : new CholeskyProgram(lapack, factors, threads, precision);
    }

    public void Run()
    {
        _lapack.SetThreads(_threads);
        foreach (var f in _factors) f.InvertCholesky(_lapack, _scratch, _precision);
    }

    public void Dispose() { }
}
