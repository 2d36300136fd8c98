using OnnxKfac.Cli.Tests.Support;
using Xunit.Abstractions;

namespace OnnxKfac.Cli.Tests;

/// <summary>Skipped where the NativeAOT toolchain (clang, zlib's headers) is missing; tools/test.sh installs it.</summary>
public sealed class NativeAotFactAttribute : FactAttribute
{
    public NativeAotFactAttribute()
    {
        if (!OperatingSystem.IsLinux()) Skip = "tools/publish.sh is for Linux";
        else if (!File.Exists("/usr/bin/clang") || !File.Exists("/usr/include/zlib.h")) Skip = "NativeAOT needs clang and zlib1g-dev (apt-get install clang zlib1g-dev)";
    }
}

/// <summary>
/// tools/publish.sh: the CLI as one NativeAOT executable, published outside the repository and
/// run there with no dotnet on the PATH, on the README's main job (train, no arguments) cut to a
/// few updates, with a report and a plot (ScottPlot and SkiaSharp under NativeAOT).
/// </summary>
public sealed class PublishTests(ITestOutputHelper log) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [NativeAotFact]
    public void ThePublishedNativeBinaryTrainsTheEmbeddedDefaultWithoutTheSdk()
    {
        string app = _dir["app"];
        log.WriteLine(Shell.Run(Path.Combine(TrainData.RepoRoot(), "tools", "publish.sh"), [app], TrainData.RepoRoot(), TimeSpan.FromMinutes(30)));
        string exe = Path.Combine(app, "onnx-kfac");
        Assert.False(File.Exists(Path.Combine(app, "onnx-kfac.dll")), "a NativeAOT publish has no managed entry assembly");
        Assert.True(File.Exists(Path.Combine(app, "default", "fashion_mlp.onnx")), "the embedded default travels with the binary");

        string work = Directory.CreateDirectory(_dir["work"]).FullName;
        string output = Shell.Run(exe, ["train", "--max-steps", "40", "--report", "report.json", "--plot", "loss.png"], work, TimeSpan.FromMinutes(3),
            new Dictionary<string, string?> { ["PATH"] = "/usr/bin:/bin", ["DOTNET_ROOT"] = null });
        log.WriteLine(output);
        Assert.Contains("fine-tuning the embedded default", output);
        var report = TrainData.Report(Path.Combine(work, "report.json"));
        Assert.True(report.GetProperty("default_job").GetBoolean());
        Assert.Equal(40, report.GetProperty("steps").GetInt64());
        Assert.Equal("max steps", report.GetProperty("stop_reason").GetString());
        var metrics = report.GetProperty("metrics");
        Assert.True(metrics.GetProperty("test_loss").GetDouble() < metrics.GetProperty("test_loss_before").GetDouble(), output);
        byte[] png = File.ReadAllBytes(Path.Combine(work, "loss.png"));
        Assert.True(png.Length > 1000 && png[1] == (byte)'P' && png[2] == (byte)'N' && png[3] == (byte)'G', "loss.png is a PNG");
    }
}
