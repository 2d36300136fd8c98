using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Text.RegularExpressions;
using OnnxKfac.Cli.Tests.Support;
using Xunit.Abstractions;

namespace OnnxKfac.Cli.Tests;

/// <summary>
/// tools/pack.sh, run once for the class, into a folder outside the repository; the tests then
/// use the packages as a user would: a new project in another temporary folder whose
/// nuget.config adds that folder to the machine's usual NuGet sources (its package cache serves
/// as a fallback folder, so nothing is downloaded twice and our packages never enter it).
/// </summary>
public sealed class PackagesFixture : IDisposable
{
    private readonly TempDir _dir = new();

    public PackagesFixture()
    {
        Packages = Path.Combine(_dir.Path, "packages");
        PackLog = Shell.Run(Path.Combine(TrainData.RepoRoot(), "tools", "pack.sh"), [Packages], TrainData.RepoRoot(), TimeSpan.FromMinutes(25));
        Version = Regex.Match(Path.GetFileName(Directory.GetFiles(Packages, "OnnxKfac.Toolkit.*.nupkg").Single(f => !f.Contains(".Gpu."))),
            @"^OnnxKfac\.Toolkit\.(.+)\.nupkg$").Groups[1].Value;
    }

    public string Packages { get; }
    public string PackLog { get; }
    public string Version { get; }

    /// <summary>A new, empty folder outside the repository with a nuget.config that adds <see cref="Packages"/>.</summary>
    internal TempDir NewConsumer()
    {
        var dir = new TempDir();
        Assert.False(dir.Path.StartsWith(TrainData.RepoRoot(), StringComparison.Ordinal), "the consumer must sit outside the repository");
        string cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p ? p
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        File.WriteAllText(dir["nuget.config"], $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <config><add key="globalPackagesFolder" value="{dir["nuget-packages"]}" /></config>
              <packageSources><add key="onnx-kfac-local" value="{Packages}" /></packageSources>
              <fallbackPackageFolders><add key="machine-cache" value="{cache}" /></fallbackPackageFolders>
            </configuration>
            """);
        return dir;
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>The NuGet packages and the .NET tool, used from outside the repository as the README says.</summary>
public sealed class PackagingTests(PackagesFixture packages, ITestOutputHelper log) : IClassFixture<PackagesFixture>
{
    private static string Nuspec(string nupkg)
    {
        using var zip = ZipFile.OpenRead(nupkg);
        using var reader = new StreamReader(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open());
        return reader.ReadToEnd();
    }

    [Fact]
    public void TheToolkitPackageBringsOnnxRuntimesCpuBuildAndTheGpuPackageItsCudaBuild()
    {
        string cpu = Nuspec(Path.Combine(packages.Packages, $"OnnxKfac.Toolkit.{packages.Version}.nupkg"));
        string gpu = Nuspec(Path.Combine(packages.Packages, $"OnnxKfac.Toolkit.Gpu.{packages.Version}.nupkg"));
        Assert.Contains("<dependency id=\"Microsoft.ML.OnnxRuntime\" ", cpu);
        Assert.DoesNotContain("Microsoft.ML.OnnxRuntime.Gpu", cpu);
        Assert.Contains("<dependency id=\"Microsoft.ML.OnnxRuntime.Gpu\" ", gpu);
        Assert.DoesNotContain("<dependency id=\"Microsoft.ML.OnnxRuntime\" ", gpu);
        foreach (string nuspec in new[] { cpu, gpu }) Assert.Contains($"<dependency id=\"OnnxKfac.Graph\" version=\"{packages.Version}\"", nuspec);
        Assert.Contains("<dependency id=\"Google.Protobuf\" ", Nuspec(Path.Combine(packages.Packages, $"OnnxKfac.Graph.{packages.Version}.nupkg")));
    }

    [Fact]
    public void TheReadmeExampleBuildsAndTrainsInANewProjectThatReferencesOnlyTheToolkitPackage()
    {
        using var dir = packages.NewConsumer();
        string app = Directory.CreateDirectory(dir["app"]).FullName;
        File.WriteAllText(Path.Combine(app, "app.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="OnnxKfac.Toolkit" Version="{packages.Version}" />
              </ItemGroup>
            </Project>
            """);
        // The README's block itself (not the test project's copy of it), and a Main that calls it.
        File.WriteAllText(Path.Combine(app, "FineTune.cs"), ReadmeExample.Block("TrainReadmeExample.cs"));
        File.WriteAllText(Path.Combine(app, "Program.cs"),
            "double accuracy = FineTune.Run(args[0], args[1]);\n" +
            "Console.WriteLine(\"returned accuracy \" + accuracy.ToString(System.Globalization.CultureInfo.InvariantCulture));\n");
        log.WriteLine(Shell.Run("dotnet", ["build", app, "-c", "Release", "-o", dir["out"], "--nologo"], dir.Path, TimeSpan.FromMinutes(10)));

        string defaults = Path.GetDirectoryName(TrainData.Default("fashion_mlp.onnx"))!;
        string output = Shell.Run("dotnet", [dir["out/app.dll"], defaults, dir["tuned.onnx"]], dir.Path, TimeSpan.FromMinutes(5));
        log.WriteLine(output);
        Assert.Contains("test accuracy before:", output);
        Assert.Contains("test accuracy after:", output);
        double accuracy = double.Parse(Regex.Match(output, @"returned accuracy ([0-9.]+)").Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.True(accuracy > 0.75, $"test accuracy {accuracy} (72.8% before)");
        Assert.True(new FileInfo(dir["tuned.onnx"]).Length > 100_000, "the exported model");
        // The native runtime came with the package (the bug this guards against: DllNotFoundException: onnxruntime).
        Assert.True(File.Exists(dir["out/runtimes/linux-x64/native/libonnxruntime.so"]) || !OperatingSystem.IsLinux());
    }

    [Fact]
    public void TheToolInstallsFromThePackagesAndTrainsTheDefault()
    {
        using var dir = packages.NewConsumer();
        log.WriteLine(Shell.Run("dotnet", ["tool", "install", "OnnxKfac.Cli", "--version", packages.Version, "--tool-path", dir["bin"],
            "--configfile", dir["nuget.config"]], dir.Path, TimeSpan.FromMinutes(5)));
        string tool = dir["bin/onnx-kfac"];
        Assert.Contains("onnx-kfac [command] [options]", Shell.Run(tool, ["--help"], dir.Path, TimeSpan.FromMinutes(1)));
        string output = Shell.Run(tool, ["train", "--max-steps", "30", "--report", dir["report.json"]], dir.Path, TimeSpan.FromMinutes(3));
        log.WriteLine(output);
        var report = TrainData.Report(dir["report.json"]);
        Assert.True(report.GetProperty("default_job").GetBoolean());
        Assert.Equal(30, report.GetProperty("steps").GetInt64());
        var metrics = report.GetProperty("metrics");
        Assert.True(metrics.GetProperty("test_loss").GetDouble() < metrics.GetProperty("test_loss_before").GetDouble(), output);
    }
}

/// <summary>Runs a program to completion; its output (stdout and stderr), or a failed assertion showing it.</summary>
internal static class Shell
{
    /// <param name="exitCode">The exit status expected (default 0).</param>
    public static string Run(string file, IEnumerable<string> args, string workingDirectory, TimeSpan timeout, IDictionary<string, string?>? env = null, int exitCode = 0)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = workingDirectory };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        // A nested dotnet must not inherit the test host's MSBuild settings.
        foreach (string key in new[] { "MSBuildSDKsPath", "MSBUILD_EXE_PATH", "MSBuildExtensionsPath", "DOTNET_HOST_PATH" }) psi.Environment.Remove(key);
        foreach (var (key, value) in env ?? new Dictionary<string, string?>())
            if (value is null) psi.Environment.Remove(key); else psi.Environment[key] = value;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{file} {string.Join(' ', args)}: still running after {timeout}");
        }
        string output = stdout.Result + stderr.Result;
        Assert.True(p.ExitCode == exitCode, $"{file} {string.Join(' ', args)}: exit {p.ExitCode}, expected {exitCode}\n{output}");
        return output;
    }
}
