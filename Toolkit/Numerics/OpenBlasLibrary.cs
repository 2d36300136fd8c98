using System.Runtime.InteropServices;
using OnnxKfac.Graph;

namespace OnnxKfac.Toolkit.Numerics;

/// <summary>
/// The few LAPACK calls K-FAC's Cholesky inverses need (<c>?potrf</c>, <c>?potri</c> in float64 and
/// float32), from the system's OpenBLAS, found at run time (no link-time dependency: a process that
/// never inverts with Cholesky never loads it). Only OpenBLAS is bound, never a generic <c>liblapack.so.3</c>:
/// the netlib reference LAPACK would be slower than ONNX Runtime's LU. Debian and Ubuntu ship it
/// as <c>libopenblas0-pthread</c> (32-bit integers: the ILP64 <c>libopenblas64</c> is not bound).
/// </summary>
internal sealed unsafe class OpenBlasLibrary
{
    // Fortran ABI: every argument by reference, column-major, then the hidden length of each
    // character argument (OpenBLAS's C implementations ignore it; gfortran-built ones read it).
    // The matrix argument as void*: the float64 and float32 routines share one calling sequence.
    private readonly delegate* unmanaged<byte*, int*, void*, int*, int*, nuint, void> _dpotrf, _dpotri, _spotrf, _spotri;
    private readonly delegate* unmanaged<int, void> _setThreads;

    public string Path { get; }

    private OpenBlasLibrary(nint handle, string path)
    {
        Path = path;
        nint F(string name) => NativeLibrary.TryGetExport(handle, name, out nint f)
            ? f : throw new OnnxKfacException($"the library {path} lacks {name}: it is not OpenBLAS with LAPACK");
        _dpotrf = (delegate* unmanaged<byte*, int*, void*, int*, int*, nuint, void>)F("dpotrf_");
        _dpotri = (delegate* unmanaged<byte*, int*, void*, int*, int*, nuint, void>)F("dpotri_");
        _spotrf = (delegate* unmanaged<byte*, int*, void*, int*, int*, nuint, void>)F("spotrf_");
        _spotri = (delegate* unmanaged<byte*, int*, void*, int*, int*, nuint, void>)F("spotri_");
        _setThreads = (delegate* unmanaged<int, void>)F("openblas_set_num_threads");
    }

    /// <summary>The names tried, in order, unless ONNXKFAC_LIBOPENBLAS names the library.</summary>
    public static readonly string[] Candidates =
        ["libopenblas.so.0", "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0", "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0", "libopenblas.so"];

    public const string Missing =
        "OpenBLAS (libopenblas.so.0) could not be loaded: install it (apt-get install libopenblas0-pthread) or set ONNXKFAC_LIBOPENBLAS to the path of libopenblas.so.0";

    private static readonly Lazy<(OpenBlasLibrary? Library, string? Error)> Shared = new(() =>
    {
        string? forced = Environment.GetEnvironmentVariable("ONNXKFAC_LIBOPENBLAS");
        var library = TryLoad(string.IsNullOrEmpty(forced) ? Candidates : [forced], out string? error);
        return (library, error);
    });

    /// <summary>The process's OpenBLAS (loaded once), or null when there is none.</summary>
    public static OpenBlasLibrary? TryLoad() => Shared.Value.Library;

    /// <summary>The process's OpenBLAS; one clear error naming the library and its package when there is none.</summary>
    public static OpenBlasLibrary Load() => Shared.Value.Library ?? throw new OnnxKfacException(Shared.Value.Error!);

    /// <summary>The first of <paramref name="names"/> that loads and exports what is bound; else null and why.</summary>
    public static OpenBlasLibrary? TryLoad(IReadOnlyList<string> names, out string? error)
    {
        var tried = new List<string>();
        foreach (string name in names)
        {
            if (!NativeLibrary.TryLoad(name, out nint h)) { tried.Add(name); continue; }
            try { error = null; return new OpenBlasLibrary(h, name); }
            catch (OnnxKfacException e) { tried.Add($"{name} ({e.Message})"); }
        }
        error = $"{Missing} (tried {string.Join(", ", tried)})";
        return null;
    }

    /// <summary>OpenBLAS's thread count (process-wide: set before every use).</summary>
    public void SetThreads(int threads) => _setThreads(Math.Max(1, threads));

    /// <summary>
    /// In place: the inverse of the symmetric positive definite n × n matrix <paramref name="a"/>
    /// (row- or column-major alike: it is symmetric), both triangles. Returns LAPACK's info: 0 done,
    /// k &gt; 0 the leading minor of order k is not positive definite (<paramref name="a"/> is then garbage).
    /// </summary>
    public int InvertSpd(Span<double> a, int n)
    {
        Check(a.Length, n);
        int info;
        fixed (double* p = a) info = Invert(p, n, _dpotrf, _dpotri);
        return Finish(a, n, info, "dpotrf/dpotri");
    }

    /// <summary>
    /// <see cref="InvertSpd(Span{double}, int)"/> in float32 (<c>spotrf</c> + <c>spotri</c>): about twice
    /// as fast, with a relative error of about κ·2⁻²⁴ for a matrix of condition number κ.
    /// </summary>
    public int InvertSpd(Span<float> a, int n)
    {
        Check(a.Length, n);
        int info;
        fixed (float* p = a) info = Invert(p, n, _spotrf, _spotri);
        return Finish(a, n, info, "spotrf/spotri");
    }

    /// <summary>?potrf then, when it succeeded, ?potri on the lower triangle (column-major): LAPACK's info.</summary>
    private static int Invert(void* p, int n, delegate* unmanaged<byte*, int*, void*, int*, int*, nuint, void> potrf,
        delegate* unmanaged<byte*, int*, void*, int*, int*, nuint, void> potri)
    {
        int info = 0, lda = Math.Max(1, n);
        byte uplo = (byte)'L';
        potrf(&uplo, &n, p, &lda, &info, 1);
        if (info == 0) potri(&uplo, &n, p, &lda, &info, 1);
        return info;
    }

    private static void Check(int length, int n)
    {
        if (length < (long)n * n) throw new ArgumentException($"{length} values for a {n} × {n} matrix", "a");
    }

    private static int Finish<T>(Span<T> a, int n, int info, string what)
    {
        if (info < 0) throw new InvalidOperationException($"LAPACK rejected argument {-info} of {what} (n = {n})");
        if (info > 0) return info;
        MirrorUpper(a, n);
        return 0;
    }

    /// <summary>Column-major 'L' is the row-major upper triangle: copy it into the lower one, in tiles (the reads stride).</summary>
    private static void MirrorUpper<T>(Span<T> a, int n)
    {
        const int Tile = 32;
        for (int rb = 0; rb < n; rb += Tile)
            for (int cb = 0; cb <= rb; cb += Tile)
                for (int r = rb; r < Math.Min(rb + Tile, n); r++)
                    for (int c = cb; c < Math.Min(Math.Min(cb + Tile, n), r); c++) a[r * n + c] = a[c * n + r];
    }
}
