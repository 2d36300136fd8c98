using System.Diagnostics;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Toolkit.Checkpoints;
using Xunit.Abstractions;

namespace OnnxKfac.Cli.Tests;

/// <summary>Skipped where no <c>mpirun</c> is installed (tools/test.sh installs Open MPI).</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute() { if (MpiTests.MpiRun is null) Skip = "mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)"; }
}

/// <inheritdoc cref="MpiFactAttribute"/>
public sealed class MpiTheoryAttribute : TheoryAttribute
{
    public MpiTheoryAttribute() { if (MpiTests.MpiRun is null) Skip = "mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)"; }
}

/// <summary>
/// `mpirun -np K onnx-kfac train` on this machine (loopback): K ranks with batch B follow one
/// process with batch K·B; a rank that hangs or dies stops the job within a bounded time,
/// naming it; a launch variable without an MPI library is one line. Tiny runs (a few updates).
/// </summary>
[Collection("mpi")]   // never two jobs at once on 2 cores
public sealed class MpiTests(ITestOutputHelper log) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    public static string? MpiRun { get; } = new[] { "/usr/bin/mpirun", "/usr/local/bin/mpirun" }.FirstOrDefault(File.Exists);

    private static string Dotnet() =>
        Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";

    private static string Cli => Path.Combine(AppContext.BaseDirectory, "onnx-kfac.dll");

    private static string[] Train(string optimizer, int batch, int steps, params string[] more) =>
    [
        "train", TrainData.Default("fashion_mlp.onnx"),
        "--train", TrainData.Default("train-images-idx3-ubyte.gz"), "--train-labels", TrainData.Default("train-labels-idx1-ubyte.gz"),
        "--test", TrainData.Default("test-images-idx3-ubyte.gz"), "--test-labels", TrainData.Default("test-labels-idx1-ubyte.gz"),
        "--scale", "255", "--batch-size", $"{batch}", "--max-steps", $"{steps}", "--drop-last", "--threads", "1", "--quiet",
        "--optimizer", optimizer, .. optimizer switch
        {
            "kfac" => new[] { "--lr", "0.003", "--kfac-damping", "0.01", "--kfac-inverse-every", "3" },
            "sgd" => ["--lr", "0.05", "--momentum", "0.9"],
            _ => [],
        },
        .. more,
    ];

    private static ProcessStartInfo Info(string file, IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        // Open MPI on a container: as root, more ranks than cores, loopback TCP only.
        psi.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        psi.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        psi.Environment["OMPI_MCA_rmaps_base_oversubscribe"] = "1";
        psi.Environment["OMPI_MCA_btl"] = "self,tcp";
        psi.Environment["OMPI_MCA_btl_tcp_if_include"] = "lo";
        psi.Environment["OMPI_MCA_oob_tcp_if_include"] = "lo";
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        return psi;
    }

    private static IEnumerable<string> MpiArgs(int ranks, string[] train) => ["-np", $"{ranks}", Dotnet(), Cli, .. train];

    private (int Code, string Out, string Err) Run(ProcessStartInfo psi, TimeSpan limit)
    {
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(limit))
        {
            p.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"{psi.FileName} did not finish within {limit.TotalSeconds} s");
        }
        p.WaitForExit();
        log.WriteLine($"exit {p.ExitCode}\n{stdout.Result}\n{stderr.Result}");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [MpiTheory]
    [InlineData("sgd", 2)]
    [InlineData("adamw", 2)]
    [InlineData("kfac", 2)]
    [InlineData("kfac", 4)]
    public void RanksWithBatchBFollowOneProcessWithBatchKB(string optimizer, int ranks)
    {
        const int b = 8, steps = 6;
        string one = _dir["one.json"], many = _dir["many.json"];
        var single = Run(Info(Dotnet(), [Cli, .. Train(optimizer, ranks * b, steps, "--report", one)]), TimeSpan.FromMinutes(2));
        Assert.Equal(0, single.Code);
        var mpi = Run(Info(MpiRun!, MpiArgs(ranks, Train(optimizer, b, steps, "--report", many))), TimeSpan.FromMinutes(3));
        Assert.Equal(0, mpi.Code);
        double[] l1 = TrainData.StepLosses(TrainData.Report(one)), lk = TrainData.StepLosses(TrainData.Report(many));
        Assert.Equal(steps, l1.Length);
        Assert.Equal(steps, lk.Length);
        for (int i = 0; i < steps; i++)
            Assert.True(Math.Abs(l1[i] - lk[i]) <= 1e-5 * Math.Abs(l1[i]), $"update {i + 1}: one process {l1[i]:R}, {ranks} ranks {lk[i]:R}");
        // The test set is measured by all ranks, each on its share, and reduced.
        var m1 = TrainData.Report(one).GetProperty("metrics");
        var mk = TrainData.Report(many).GetProperty("metrics");
        Assert.Equal(m1.GetProperty("test_loss").GetDouble(), mk.GetProperty("test_loss").GetDouble(), 1e-4);
        Assert.Equal(m1.GetProperty("test_accuracy").GetDouble(), mk.GetProperty("test_accuracy").GetDouble(), 1e-9);
    }

    /// <summary>
    /// An epoch under K ranks has the updates of one process with batch K·B, so a schedule over the
    /// planned updates (cosine) follows the same rates: the losses agree to the last update.
    /// </summary>
    [MpiFact]
    public void AScheduleOverEpochsPlansTheGlobalBatches()
    {
        string one = _dir["one.json"], many = _dir["many.json"];
        string[] Args(int batch, string report) => Train("sgd", batch, 100_000, "--epochs", "1", "--schedule", "cosine", "--report", report);
        Assert.Equal(0, Run(Info(Dotnet(), [Cli, .. Args(32, one)]), TimeSpan.FromMinutes(2)).Code);
        Assert.Equal(0, Run(Info(MpiRun!, MpiArgs(2, Args(16, many))), TimeSpan.FromMinutes(3)).Code);
        double[] l1 = TrainData.StepLosses(TrainData.Report(one)), lk = TrainData.StepLosses(TrainData.Report(many));
        Assert.Equal(l1.Length, lk.Length);
        Assert.True(l1.Length > 50, $"{l1.Length} updates");
        for (int i = 0; i < l1.Length; i++)
            Assert.True(Math.Abs(l1[i] - lk[i]) <= 1e-4 * Math.Abs(l1[i]), $"update {i + 1}: one process {l1[i]:R}, 2 ranks {lk[i]:R}");
    }

    /// <summary>The report's losses with the update each belongs to (a resumed run's report holds only its own updates).</summary>
    private static Dictionary<long, double> LossesByStep(string report) =>
        TrainData.Report(report).GetProperty("step_losses").EnumerateArray().Where(s => !s.GetProperty("skipped").GetBoolean())
            .ToDictionary(s => s.GetProperty("step").GetInt64(), s => s.GetProperty("loss").GetDouble());

    /// <summary>
    /// K-FAC under 2 ranks, stopped at update 5 (between inverse refreshes, so the ranks' running
    /// factors differ and the checkpoint holds their mean) and resumed to 8, follows the straight
    /// 8-update run: with the same world size up to rounding (the straight run averages its ranks'
    /// factors at update 7, the resumed one also at 5: the same sum in another order), with another
    /// world size but the same global batch (one process with batch 16, or 4 ranks with batch 4)
    /// within the data-parallel tolerance (the same examples, summed in another order).
    /// </summary>
    [MpiFact]
    public void ResumeContinuesTheTrajectoryWithTheSameOrAnotherWorldSize()
    {
        const int b = 8;
        string[] Kfac(int batch, int steps, params string[] more) => Train("kfac", batch, steps, ["--kfac-damping-adapt", "lm", "--kfac-adapt-every", "2", .. more]);
        var straight = Run(Info(MpiRun!, MpiArgs(2, Kfac(b, 8, "--report", _dir["straight.json"]))), TimeSpan.FromMinutes(3));
        Assert.Equal(0, straight.Code);
        var expected = LossesByStep(_dir["straight.json"]);
        Assert.Equal(8, expected.Count);
        string ck = _dir["half.ckpt"];
        var half = Run(Info(MpiRun!, MpiArgs(2, Kfac(b, 5, "--checkpoint", ck))), TimeSpan.FromMinutes(3));
        Assert.Equal(0, half.Code);
        Assert.Equal(5, Checkpoint.Load(ck).Longs["step"]);
        foreach (var (ranks, batch, tolerance) in new[] { (2, b, 1e-6), (1, 2 * b, 1e-5), (4, b / 2, 1e-5) })
        {
            string copy = _dir[$"resume{ranks}.ckpt"], report = _dir[$"resume{ranks}.json"];
            File.Copy(ck, copy, overwrite: true);
            string[] args = Kfac(batch, 8, "--checkpoint", copy, "--resume", "--report", report);
            var resumed = ranks == 1 ? Run(Info(Dotnet(), [Cli, .. args]), TimeSpan.FromMinutes(2)) : Run(Info(MpiRun!, MpiArgs(ranks, args)), TimeSpan.FromMinutes(3));
            Assert.Equal(0, resumed.Code);
            var got = LossesByStep(report);
            Assert.Equal([6L, 7, 8], got.Keys.Order());
            foreach (var (step, loss) in got)
                Assert.True(Math.Abs(expected[step] - loss) <= tolerance * Math.Abs(expected[step]),
                    $"{ranks} rank(s) × batch {batch}, update {step}: {loss:R} against {expected[step]:R} straight");
        }
    }

    private static int? RankPid(int mpirunPid, int rank)
    {
        foreach (var dir in Directory.GetDirectories("/proc").Where(d => int.TryParse(Path.GetFileName(d), out _)))
        {
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                int ppid = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
                if (ppid != mpirunPid) continue;
                var env = File.ReadAllText(Path.Combine(dir, "environ")).Split('\0');
                if (env.Contains($"OMPI_COMM_WORLD_RANK={rank}")) return int.Parse(Path.GetFileName(dir));
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return null;
    }

    /// <summary>Starts a long 2-rank run with a checkpoint every update, waits for it, then does <paramref name="fault"/> to rank 1.</summary>
    private (int Code, string Err, TimeSpan Stopped) Fault(string signal, string ck)
    {
        var psi = Info(MpiRun!, MpiArgs(2, Train("sgd", 8, 100_000, "--checkpoint", ck, "--checkpoint-every", "1")),
            new Dictionary<string, string> { ["ONNXKFAC_COLLECTIVE_TIMEOUT"] = "4" });
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            var wait = Stopwatch.StartNew();
            while (!File.Exists(ck) && wait.Elapsed < TimeSpan.FromSeconds(60) && !p.HasExited) Thread.Sleep(50);
            Assert.True(File.Exists(ck), "no checkpoint within 60 s");
            int pid = RankPid(p.Id, 1) ?? throw new Xunit.Sdk.XunitException("rank 1's process was not found");
            Process.Start("kill", [$"-{signal}", $"{pid}"])!.WaitForExit();
            var clock = Stopwatch.StartNew();
            bool ended = p.WaitForExit(TimeSpan.FromSeconds(40));
            var stopped = clock.Elapsed;
            if (!ended) p.Kill(entireProcessTree: true);
            p.WaitForExit();
            if (signal == "STOP") Process.Start("kill", ["-KILL", $"{pid}"])!.WaitForExit();
            Assert.True(ended, $"the job still ran 40 s after rank 1 got SIG{signal}");
            log.WriteLine($"SIG{signal}: stopped after {stopped.TotalSeconds:F1} s, exit {p.ExitCode}\n{stdout.Result}\n{stderr.Result}");
            return (p.ExitCode, stdout.Result + stderr.Result, stopped);
        }
        finally { if (!p.HasExited) p.Kill(entireProcessTree: true); }
    }

    [MpiFact]
    public void ARankThatHangsStopsTheJobNamingItAndTheCheckpointStillLoads()
    {
        string ck = _dir["hang.ckpt"];
        var (code, err, stopped) = Fault("STOP", ck);
        Assert.NotEqual(0, code);
        Assert.Contains("rank 1 never reached it", err);
        Assert.True(stopped < TimeSpan.FromSeconds(30), $"stopped after {stopped}");
        Assert.True(Checkpoint.Load(ck).Longs["step"] > 0);
    }

    [MpiFact]
    public void ARankThatDiesStopsTheJobNamingItAndTheCheckpointStillLoads()
    {
        string ck = _dir["die.ckpt"];
        var (code, err, _) = Fault("KILL", ck);
        Assert.NotEqual(0, code);
        Assert.Matches("rank 1 .*exited on signal 9", err.ReplaceLineEndings(" "));
        Assert.True(Checkpoint.Load(ck).Longs["step"] > 0);
    }

    [Fact]
    public void AnMpiLaunchWithoutAnMpiLibraryIsOneLine()
    {
        var psi = Info(Dotnet(), [Cli, .. Train("sgd", 8, 1)],
            new Dictionary<string, string> { ["OMPI_COMM_WORLD_RANK"] = "0", ["ONNXKFAC_LIBMPI"] = "/nonexistent/libmpi.so.40" });
        var (code, stdout, stderr) = Run(psi, TimeSpan.FromMinutes(1));
        Assert.Equal(2, code);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: no MPI library could be loaded (tried /nonexistent/libmpi.so.40)", lines[0]);
        Assert.Equal("", stdout.Trim());
    }
}
