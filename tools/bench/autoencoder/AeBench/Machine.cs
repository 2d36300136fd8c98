using System.Diagnostics;

namespace OnnxKfac.AeBench;

/// <summary>What the machine was doing: other processes' cores (/proc/stat minus ours), load, ISA, peak RSS.</summary>
internal sealed class Machine
{
    private readonly long _busy0 = BusyTicks();
    private readonly TimeSpan _own0 = Process.GetCurrentProcess().TotalProcessorTime;
    private readonly long _t0 = Stopwatch.GetTimestamp();

    /// <summary>Cores other processes kept busy since this object was made (-1 if /proc/stat is missing).</summary>
    public double OtherCores()
    {
        var p = Process.GetCurrentProcess();
        double wall = Stopwatch.GetElapsedTime(_t0).TotalSeconds;
        long busy = BusyTicks();
        if (busy < 0 || _busy0 < 0 || wall <= 0) return -1;
        double own = (p.TotalProcessorTime - _own0).TotalSeconds;
        return Math.Max(0, ((busy - _busy0) / 100.0 - own) / wall);
    }

    public static double LoadAverage()
    {
        try { return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture); }
        catch (IOException) { return double.NaN; }
    }

    /// <summary>Peak resident set size of this process (VmHWM), MiB.</summary>
    public static double PeakRssMiB()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0;
        return double.NaN;
    }

    public static string Isa()
    {
        var flags = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal))?.Split(':')[1].Split(' ') ?? [];
        string[] want = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"];
        return string.Join(' ', want.Where(w => flags.Contains(w)));
    }

    private static long BusyTicks()
    {
        try
        {
            using var reader = new StreamReader("/proc/stat");
            long[] v = reader.ReadLine()!.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(long.Parse).ToArray();
            return v[0] + v[1] + v[2] + v[5] + v[6] + (v.Length > 7 ? v[7] : 0);
        }
        catch (IOException) { return -1; }
    }
}
