using System.Diagnostics;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Toolkit.Checkpoints;
using Xunit.Abstractions;

namespace OnnxKfac.Cli.Tests;

/// <summary>
/// kill -9 at random moments of a run that checkpoints after every update: the checkpoint on
/// disk always loads (atomic writes), holds finite weights, and a run resumes from it. The
/// moments come from a logged seed (ONNXKFAC_KILL_SEED replays or explores other schedules).
/// </summary>
public sealed class TrainKillTests(ITestOutputHelper log) : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly System.Collections.Concurrent.ConcurrentDictionary<Process, System.Text.StringBuilder> _output = new();

    /// <summary>What a started process printed so far (stdout, and stderr lines marked).</summary>
    private string Output(Process p)
    {
        var b = _output[p];
        lock (b) return b.ToString();
    }

    public void Dispose() => _dir.Dispose();

    private static string Dotnet() =>
        Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";

    /// <summary>
    /// Whether this process ignores SIGINT, which its children inherit: a shell starts background jobs
    /// (`tools/test.sh &amp;`) that way, and .NET then leaves SIGINT ignored (Ctrl+C does not reach them).
    /// </summary>
    private static bool InterruptIgnored() =>
        File.Exists("/proc/self/status")
        && File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal)) is { } line
        && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << (2 - 1))) != 0;

    private Process Start(params string[] args)
    {
        // The signal test needs SIGINT to reach the run: where it is ignored here, coreutils' env restores it for the child.
        bool reset = InterruptIgnored();
        var psi = new ProcessStartInfo(reset ? "env" : Dotnet())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (reset)
        {
            psi.ArgumentList.Add("--default-signal=INT");
            psi.ArgumentList.Add(Dotnet());
        }
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "onnx-kfac.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        var process = Process.Start(psi)!;
        var output = _output[process] = new System.Text.StringBuilder();
        process.OutputDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine("stderr: " + e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    [Theory]
    [InlineData("adamw")]
    [InlineData("kfac")]   // factors, inverses, damping and momentum: a larger state written every update
    public void TheCheckpointSurvivesKillMinus9AtRandomMomentsAndTheRunResumes(string optimizer)
    {
        string ck = _dir[optimizer + ".ckpt"];
        string[] run =
        [
            "train", TrainData.Default("fashion_mlp.onnx"),
            "--train", TrainData.Default("train-images-idx3-ubyte.gz"), "--train-labels", TrainData.Default("train-labels-idx1-ubyte.gz"),
            "--scale", "255", "--epochs", "50", "--checkpoint", ck, "--checkpoint-every", "1", "--resume", "--quiet",
            "--optimizer", optimizer, .. optimizer == "kfac" ? new[] { "--lr", "0.003", "--kfac-damping", "0.01", "--kfac-inverse-every", "5" } : [],
        ];
        int seed = int.TryParse(Environment.GetEnvironmentVariable("ONNXKFAC_KILL_SEED"), out int chosen) ? chosen : 20240917;
        log.WriteLine($"kill schedule seed {seed} (replay with ONNXKFAC_KILL_SEED={seed})");
        try { KillAndResume(run, ck, new Random(seed)); }
        catch (Exception e)
        {
            throw new Xunit.Sdk.XunitException($"with kill schedule seed {seed} (replay with ONNXKFAC_KILL_SEED={seed}): {e.Message}", e);
        }
    }

    private void KillAndResume(string[] run, string ck, Random rng)
    {
        long lastStep = 0;
        int loaded = 0;
        for (int kill = 0; kill < 4; kill++)
        {
            using var p = Start(run);
            if (kill == 0)
            {
                // The first time, wait for the first checkpoint (start-up time varies with load).
                var wait = Stopwatch.StartNew();
                while (!File.Exists(ck) && wait.Elapsed < TimeSpan.FromSeconds(30) && !p.HasExited) Thread.Sleep(20);
            }
            int pause = kill == 0 ? rng.Next(1000) : 500 + rng.Next(2000);
            Thread.Sleep(pause);
            Assert.False(p.HasExited, "the run ended before it was killed");
            p.Kill(); // SIGKILL on Linux
            p.WaitForExit();
            if (!File.Exists(ck)) continue; // killed before the first update
            var c = Checkpoint.Load(ck);
            foreach (var param in c.Parameters) Assert.All(param.Value, v => Assert.True(float.IsFinite(v)));
            long step = c.Longs["step"];
            log.WriteLine($"kill {kill} after {pause} ms: checkpoint at update {step}");
            Assert.True(step >= lastStep, $"update {step} after {lastStep}");
            lastStep = step;
            loaded++;
        }
        Assert.True(loaded > 0, "no checkpoint was ever written");

        // The last checkpoint continues: a few more updates, then a clean exit.
        using var finish = Start([.. run, "--max-steps", (lastStep + 3).ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        Assert.True(finish.WaitForExit(60_000));
        Assert.Equal(0, finish.ExitCode);
        Assert.Equal(lastStep + 3, Checkpoint.Load(ck).Longs["step"]);
    }

    [Theory]
    [InlineData("INT", 130)]    // Ctrl+C
    [InlineData("TERM", 143)]   // docker stop, Kubernetes, CI cancellation
    public void ASignalStopsAfterTheCurrentUpdateWritesCheckpointAndReportAndExitsWithItsCode(string signal, int code)
    {
        string ck = _dir[signal + ".ckpt"], report = _dir[signal + ".json"];
        // 2000 epochs of the embedded default take minutes (50 took 3 s: a loaded machine could deliver the signal after the end).
        using var p = Start("train", "--epochs", "2000", "--checkpoint", ck, "--checkpoint-every", "25", "--report", report, "--quiet");
        var wait = Stopwatch.StartNew();
        while (!File.Exists(ck) && wait.Elapsed < TimeSpan.FromSeconds(30) && !p.HasExited) Thread.Sleep(20);
        Assert.False(p.HasExited, "the run ended before it was interrupted");
        using (var kill = Process.Start("kill", ["-" + signal, p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])) kill.WaitForExit();
        // The update in flight, then checkpoint, report and the test evaluation: seconds, even on a loaded machine.
        if (!p.WaitForExit(90_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"the run did not exit within 90 s of SIG{signal}; it printed:\n{Output(p)}");
        }
        Assert.Equal(code, p.ExitCode);
        var r = TrainData.Report(report);
        Assert.Equal("cancelled", r.GetProperty("stop_reason").GetString());
        Assert.Equal(r.GetProperty("steps").GetInt64(), Checkpoint.Load(ck).Longs["step"]);
        // The step log beside the report holds every update, in whole rows.
        var rows = AssertWholeRows(_dir[signal + ".steps.csv"]);
        Assert.Equal(r.GetProperty("steps").GetInt64(), rows.Count(row => row[0] == "train"));
    }

    [Fact]
    public void KillMinus9LeavesTheStepLogInWholeRows()
    {
        string log = _dir["killed.csv"];
        using var p = Start("train", "--epochs", "50", "--log-csv", log, "--quiet");
        var wait = Stopwatch.StartNew();
        while ((!File.Exists(log) || new FileInfo(log).Length < 20_000) && wait.Elapsed < TimeSpan.FromSeconds(60) && !p.HasExited) Thread.Sleep(10);
        Assert.False(p.HasExited, "the run ended before it was killed");
        p.Kill();
        Assert.True(p.WaitForExit(30_000));
        var rows = AssertWholeRows(log).Where(row => row[0] == "train").ToList();
        Assert.True(rows.Count > 100, $"{rows.Count} rows");
        Assert.Equal(Enumerable.Range(1, rows.Count).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)), rows.Select(row => row[1]));
    }

    /// <summary>Every line of a step log ends with a newline and has the header's eight fields; the rows after the header.</summary>
    private static List<string[]> AssertWholeRows(string path)
    {
        string text = File.ReadAllText(path);
        Assert.EndsWith("\n", text);
        var lines = text.TrimEnd('\n').Split('\n');
        Assert.Equal("kind,step,epoch,loss,accuracy,lr,grad_norm,wall_seconds", lines[0]);
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToList();
        Assert.All(rows, row => Assert.Equal(8, row.Length));
        Assert.All(rows.Where(row => row[0] == "train"), row => Assert.True(double.IsFinite(double.Parse(row[3], System.Globalization.CultureInfo.InvariantCulture))));
        return rows;
    }
}
