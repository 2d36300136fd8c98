using System.Diagnostics;
using OnnxKfac.Graph;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// <see cref="ICollectives"/> over MPI (the system's <c>libmpi</c>, see <see cref="MpiLibrary"/>),
/// for processes started by <c>mpirun</c>/<c>mpiexec</c>. Every collective is MPI's own
/// (non-blocking, then polled), so that a rank that dies or hangs cannot leave the others
/// waiting forever: after <see cref="Timeout"/> a waiting rank asks rank 0 which ranks never
/// reached the collective, prints one line naming them and aborts the job (MPI_Abort, which
/// makes mpirun stop every rank). A rank that exits is noticed by mpirun itself, which stops
/// the others and names it.
/// <para>Counts every call's payload and time (<see cref="Statistics"/>).</para>
/// </summary>
public sealed unsafe class MpiCollectives : ICollectives, IDisposable
{
    private const int WaitingTag = 7301, ReplyTag = 7302;
    private readonly MpiLibrary _mpi;
    private readonly Action<string> _report;
    private long _sequence;
    private bool _disposed;

    private MpiCollectives(MpiLibrary mpi, TimeSpan timeout, Action<string>? report)
    {
        _mpi = mpi;
        _report = report ?? (line => Console.Error.WriteLine(line));
        Timeout = timeout;
        int flag;
        Check(_mpi.Initialized(&flag), "MPI_Initialized");
        if (flag == 0) Check(_mpi.Init(null, null), "MPI_Init");
        // Errors come back as codes (turned into exceptions) rather than aborting inside MPI.
        Check(_mpi.CommSetErrhandler(_mpi.CommWorld, _mpi.ErrorsReturn), "MPI_Comm_set_errhandler");
        int rank, size;
        Check(_mpi.CommRank(_mpi.CommWorld, &rank), "MPI_Comm_rank");
        Check(_mpi.CommSize(_mpi.CommWorld, &size), "MPI_Comm_size");
        Rank = rank;
        Size = size;
    }

    /// <summary>The environment variables by which mpirun/mpiexec (Open MPI, MPICH/Hydra, PMIx) tell a process its rank.</summary>
    public static readonly string[] LauncherVariables = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"];

    /// <summary>Whether this process was started by an MPI launcher (one of <see cref="LauncherVariables"/> is set).</summary>
    public static bool LaunchedByMpi => LauncherVariables.Any(v => !string.IsNullOrEmpty(Environment.GetEnvironmentVariable(v)));

    /// <summary>The default timeout of one collective: ONNXKFAC_COLLECTIVE_TIMEOUT seconds, else 300 s.</summary>
    public static TimeSpan DefaultTimeout =>
        double.TryParse(Environment.GetEnvironmentVariable("ONNXKFAC_COLLECTIVE_TIMEOUT"), System.Globalization.CultureInfo.InvariantCulture, out double s) && s > 0
            ? TimeSpan.FromSeconds(s) : TimeSpan.FromSeconds(300);

    /// <summary>
    /// MPI when this process was started by mpirun/mpiexec, else <see cref="SingleProcess"/>
    /// (a plain run never loads an MPI library).
    /// </summary>
    /// <exception cref="OnnxKfacException">Started by mpirun but no MPI library loads (one line saying what to install).</exception>
    public static ICollectives FromEnvironment(TimeSpan? timeout = null, Action<string>? report = null) =>
        LaunchedByMpi ? Initialize(timeout, report) : SingleProcess.Instance;

    /// <summary>Loads the system MPI library and initialises MPI (MPI_Init).</summary>
    public static MpiCollectives Initialize(TimeSpan? timeout = null, Action<string>? report = null) =>
        new(MpiLibrary.Load(), timeout ?? DefaultTimeout, report);

    public int Rank { get; }
    public int Size { get; }

    /// <summary>How long one collective may wait for the other ranks before the job is stopped.</summary>
    public TimeSpan Timeout { get; set; }

    /// <summary>Calls, payload bytes and seconds spent in collectives so far.</summary>
    public CollectiveStatistics Statistics { get; } = new();

    /// <summary>The MPI library in use (file and flavor).</summary>
    public string Library => $"{_mpi.Flavor} ({_mpi.Path})";

    public void AllReduceSum(Span<float> values)
    {
        fixed (float* p = values) AllReduce(p, values.Length, sizeof(float), _mpi.Float);
    }

    public void AllReduceSum(Span<double> values)
    {
        fixed (double* p = values) AllReduce(p, values.Length, sizeof(double), _mpi.Double);
    }

    private void AllReduce(void* p, int count, int elementSize, nint type)
    {
        if (count == 0) return;
        long t0 = Stopwatch.GetTimestamp();
        nint request = 0;
        Check(_mpi.Iallreduce((void*)_mpi.InPlace, p, count, type, _mpi.OpSum, _mpi.CommWorld, &request), "MPI_Iallreduce");
        Wait(&request, "all-reduce");
        Statistics.Add(CollectiveKind.AllReduce, (long)count * elementSize, Stopwatch.GetTimestamp() - t0);
    }

    public void Broadcast(Span<float> values, int root)
    {
        CheckRoot(root);
        if (values.IsEmpty) return;
        long t0 = Stopwatch.GetTimestamp();
        nint request = 0;
        fixed (float* p = values)
        {
            Check(_mpi.Ibcast(p, values.Length, _mpi.Float, root, _mpi.CommWorld, &request), "MPI_Ibcast");
            Wait(&request, $"broadcast from rank {root}");
        }
        Statistics.Add(CollectiveKind.Broadcast, (long)values.Length * sizeof(float), Stopwatch.GetTimestamp() - t0);
    }

    public void AllGather(ReadOnlySpan<long> mine, Span<long> all)
    {
        if (all.Length != mine.Length * Size)
            throw new ArgumentException($"all-gather of {mine.Length} values from {Size} ranks needs {mine.Length * Size} values, got {all.Length}", nameof(all));
        long t0 = Stopwatch.GetTimestamp();
        nint request = 0;
        fixed (long* s = mine)
        fixed (long* r = all)
        {
            Check(_mpi.Iallgather(s, mine.Length, _mpi.LongLong, r, mine.Length, _mpi.LongLong, _mpi.CommWorld, &request), "MPI_Iallgather");
            Wait(&request, "all-gather");
        }
        Statistics.Add(CollectiveKind.AllGather, (long)all.Length * sizeof(long), Stopwatch.GetTimestamp() - t0);
    }

    public void Barrier()
    {
        long t0 = Stopwatch.GetTimestamp();
        nint request = 0;
        Check(_mpi.Ibarrier(_mpi.CommWorld, &request), "MPI_Ibarrier");
        Wait(&request, "barrier");
        Statistics.Add(CollectiveKind.Barrier, 0, Stopwatch.GetTimestamp() - t0);
    }

    /// <summary>Prints <paramref name="message"/> (this rank's) and stops every rank of the job (MPI_Abort).</summary>
    public void Abort(string message, int exitCode = 1)
    {
        _report(message);
        Console.Error.Flush();
        _mpi.Abort(_mpi.CommWorld, exitCode);
        Environment.Exit(exitCode);   // MPI_Abort does not return; in case it does
    }

    /// <summary>MPI_Finalize (every rank must reach it).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        int finalized;
        if (_mpi.Finalized(&finalized) == MpiLibrary.Success && finalized == 0) _mpi.Finalize();
    }

    private void CheckRoot(int root)
    {
        if ((uint)root >= (uint)Size) throw new ArgumentOutOfRangeException(nameof(root), root, $"rank {root} is not one of the {Size} ranks");
    }

    private void Check(int code, string call)
    {
        if (code != MpiLibrary.Success) throw new OnnxKfacException($"rank {Rank}: {call} failed: {_mpi.Describe(code)}");
    }

    /// <summary>Polls a request until it completes; past <see cref="Timeout"/>, finds and names the ranks that never came, then aborts.</summary>
    private void Wait(nint* request, string what)
    {
        long seq = ++_sequence;
        long start = Stopwatch.GetTimestamp();
        long deadline = start + (long)(Timeout.TotalSeconds * Stopwatch.Frequency);
        for (int spins = 0; ; spins++)
        {
            int done;
            Check(_mpi.Test(request, &done, null), "MPI_Test");
            if (done != 0) return;
            if (spins < 64) continue;
            if (spins < 2048) Thread.Yield();
            else Thread.Sleep(1);
            if ((spins & 15) == 0 && Stopwatch.GetTimestamp() > deadline) TimedOut(seq, what);
        }
    }

    private void TimedOut(long seq, string what)
    {
        var grace = TimeSpan.FromSeconds(Math.Clamp(Timeout.TotalSeconds / 4, 2, 30));
        string head = $"rank {Rank} of {Size}: collective #{seq} ({what}) waited {Timeout.TotalSeconds:G4} s for the other ranks";
        if (Rank == 0)
        {
            // Who else is waiting? Every rank that times out tells rank 0; the silent ones are named.
            var notices = new long[Size * 2];
            var requests = new nint[Size];
            var arrived = new long[Size];
            arrived[0] = 1;
            fixed (long* n = notices)
            fixed (nint* r = requests)
            {
                for (int k = 1; k < Size; k++)
                    Check(_mpi.Irecv(n + 2 * k, 2, _mpi.LongLong, k, WaitingTag, _mpi.CommWorld, r + k), "MPI_Irecv");
                PollAll(r, 1, Size, arrived, grace);
                var missing = Enumerable.Range(0, Size).Where(k => arrived[k] == 0).ToArray();
                fixed (long* a = arrived)
                {
                    var replies = new nint[Size];
                    fixed (nint* q = replies)
                    {
                        for (int k = 1; k < Size; k++)
                            if (arrived[k] != 0) _mpi.Isend(a, Size, _mpi.LongLong, k, ReplyTag, _mpi.CommWorld, q + k);
                        PollAll(q, 1, Size, new long[Size], TimeSpan.FromSeconds(1));
                    }
                }
                Abort(Say(head, missing));
            }
        }
        else
        {
            long[] notice = [Rank, seq];
            var reply = new long[Size];
            nint send = 0, receive = 0;
            fixed (long* n = notice)
            fixed (long* r = reply)
            {
                Check(_mpi.Isend(n, 2, _mpi.LongLong, 0, WaitingTag, _mpi.CommWorld, &send), "MPI_Isend");
                Check(_mpi.Irecv(r, Size, _mpi.LongLong, 0, ReplyTag, _mpi.CommWorld, &receive), "MPI_Irecv");
                var got = new long[1];
                PollAll(&receive, 0, 1, got, grace + grace);
                if (got[0] != 0) Abort(Say(head, [.. Enumerable.Range(0, Size).Where(k => reply[k] == 0)]));
                Abort($"{head}; rank 0 did not answer either: rank 0 died or hangs. Stopping every rank.");
            }
        }
    }

    private static string Say(string head, int[] missing) => missing.Length == 0
        ? $"{head}; every rank is waiting (mismatched collectives?). Stopping every rank."
        : $"{head}; rank{(missing.Length > 1 ? "s" : "")} {string.Join(", ", missing)} never reached it (died or hangs). Stopping every rank.";

    private void PollAll(nint* requests, int from, int to, long[] done, TimeSpan limit)
    {
        long end = Stopwatch.GetTimestamp() + (long)(limit.TotalSeconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < end)
        {
            bool all = true;
            for (int k = from; k < to; k++)
            {
                if (done[k] != 0 || requests[k] == 0) continue;
                int flag;
                if (_mpi.Test(requests + k, &flag, null) == MpiLibrary.Success && flag != 0) done[k] = 1;
                else all = false;
            }
            if (all) return;
            Thread.Sleep(1);
        }
    }
}

/// <summary>The kinds of collective call <see cref="CollectiveStatistics"/> counts.</summary>
public enum CollectiveKind { AllReduce, Broadcast, AllGather, Barrier }

/// <summary>Calls, payload bytes (the buffer each rank passes) and wall time per kind of collective.</summary>
public sealed class CollectiveStatistics
{
    private readonly long[] _calls = new long[4], _bytes = new long[4], _ticks = new long[4];

    internal void Add(CollectiveKind kind, long bytes, long ticks)
    {
        _calls[(int)kind]++;
        _bytes[(int)kind] += bytes;
        _ticks[(int)kind] += ticks;
    }

    public long Calls(CollectiveKind kind) => _calls[(int)kind];
    public long Bytes(CollectiveKind kind) => _bytes[(int)kind];
    public double Seconds(CollectiveKind kind) => (double)_ticks[(int)kind] / Stopwatch.Frequency;
    public long TotalCalls => _calls.Sum();
    public long TotalBytes => _bytes.Sum();
    public double TotalSeconds => (double)_ticks.Sum() / Stopwatch.Frequency;

    public void Reset()
    {
        Array.Clear(_calls);
        Array.Clear(_bytes);
        Array.Clear(_ticks);
    }

    public override string ToString() =>
        string.Join(", ", Enum.GetValues<CollectiveKind>().Where(k => Calls(k) > 0)
            .Select(k => $"{k}: {Calls(k)} calls, {Bytes(k) / 1e6:F3} MB, {Seconds(k):F3} s"));
}
