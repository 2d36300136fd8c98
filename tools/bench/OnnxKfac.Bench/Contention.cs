using System.Diagnostics;

namespace OnnxKfac.Bench;

/// <summary>
/// How busy the rest of the machine was during a measurement: CPU time used by all processes
/// (/proc/stat) minus this process's own, divided by the wall time, in cores. The benchmark
/// machine may be shared; a measurement taken while others used a core is retried.
/// </summary>
internal static class Contention
{
    private const double TicksPerSecond = 100; // USER_HZ on Linux

    public sealed record Measured<T>(T Value, double OtherCores, int Attempts);

    /// <summary>
    /// Runs <paramref name="measure"/> up to <paramref name="attempts"/> times until the other
    /// processes used at most <paramref name="quietCores"/> cores meanwhile; keeps the quietest attempt.
    /// </summary>
    public static Measured<T> Quietest<T>(Func<T> measure, int attempts, double quietCores)
    {
        Measured<T>? best = null;
        for (int k = 1; k <= attempts; k++)
        {
            var (value, others) = Observe(measure);
            if (best is null || others < best.OtherCores) best = new Measured<T>(value, others, k);
            else best = best with { Attempts = k };
            if (others <= quietCores) break;
        }
        return best!;
    }

    private static (T, double) Observe<T>(Func<T> measure)
    {
        var process = Process.GetCurrentProcess();
        long busy0 = BusyTicks();
        var own0 = process.TotalProcessorTime;
        long t0 = Stopwatch.GetTimestamp();
        var value = measure();
        double wall = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        process.Refresh();
        double own = (process.TotalProcessorTime - own0).TotalSeconds;
        long busy1 = BusyTicks();
        if (busy0 < 0 || busy1 < 0 || wall <= 0) return (value, -1);
        double others = ((busy1 - busy0) / TicksPerSecond - own) / wall;
        return (value, Math.Max(0, others));
    }

    /// <summary>Busy jiffies of all CPUs (user, nice, system, irq, softirq, steal), or -1 where /proc/stat is missing.</summary>
    private static long BusyTicks()
    {
        try
        {
            using var reader = new StreamReader("/proc/stat");
            var fields = reader.ReadLine()!.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            // cpu user nice system idle iowait irq softirq steal ...
            long[] v = fields.Skip(1).Select(long.Parse).ToArray();
            return v[0] + v[1] + v[2] + v[5] + v[6] + (v.Length > 7 ? v[7] : 0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or NullReferenceException)
        {
            return -1;
        }
    }
}
