using OnnxKfac.Cli.Tests.Support;

namespace OnnxKfac.Cli.Tests;

/// <summary>
/// --kfac-inverse in a process of its own, where ONNXKFAC_LIBOPENBLAS can hide OpenBLAS (the test
/// host loads it once): auto falls back to ONNX Runtime's LU, cholesky is one user error.
/// </summary>
public sealed class KfacInverseTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string Dotnet() =>
        Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";

    private string Train(string inverse, int exitCode) =>
        Shell.Run(Dotnet(), [Path.Combine(AppContext.BaseDirectory, "onnx-kfac.dll"), "train", "--optimizer", "kfac", "--max-steps", "2", "--threads", "1", "--kfac-inverse", inverse],
            _dir.Path, TimeSpan.FromMinutes(3), new Dictionary<string, string?> { ["ONNXKFAC_LIBOPENBLAS"] = _dir["missing/libopenblas.so.0"] }, exitCode);

    [Fact]
    public void WithoutOpenBlasAutoUsesOnnxRuntimeAndCholeskyIsOneUserError()
    {
        Assert.Contains("kfac: inverses by onnxruntime (com.microsoft.Inverse, LU, float32)", Train("auto", 0));
        string error = Train("cholesky", 2);
        var line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.Contains("--kfac-inverse", StringComparison.Ordinal));
        Assert.Contains("K-FAC's Cholesky inverses need OpenBLAS", line);
        Assert.Contains("apt-get install libopenblas0-pthread", line);
        Assert.Contains(_dir["missing/libopenblas.so.0"], line);
    }
}
