using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using OnnxKfac.Cli.Tests.Support;

namespace OnnxKfac.Cli.Tests;

/// <summary>Small learnable data sets for the train/eval/export tests, written as CSV, NPY, NPZ and TensorProto files.</summary>
internal static class TrainData
{
    /// <summary>The embedded default (tools/default), copied next to the CLI and into the test output.</summary>
    public static string Default(string file) => Path.Combine(AppContext.BaseDirectory, "default", file);

    /// <summary>
    /// <paramref name="n"/> examples of <paramref name="features"/> features whose class (of
    /// <paramref name="classes"/>) is decided by a fixed linear teacher, so that Linear2 can learn it.
    /// </summary>
    public static (float[] X, long[] Y) Make(int n, int seed, int features = 4, int classes = 3)
    {
        var teacher = new Random(99);
        var w = Enumerable.Range(0, features * classes).Select(_ => teacher.NextDouble() - 0.5).ToArray();
        var rng = new Random(seed);
        var x = new float[n * features];
        var y = new long[n];
        for (int i = 0; i < n; i++)
        {
            for (int f = 0; f < features; f++) x[i * features + f] = (float)(2 * rng.NextDouble() - 1);
            int best = 0;
            double bestScore = double.NegativeInfinity;
            for (int c = 0; c < classes; c++)
            {
                double s = 0;
                for (int f = 0; f < features; f++) s += w[c * features + f] * x[i * features + f];
                if (s > bestScore) { bestScore = s; best = c; }
            }
            y[i] = best;
        }
        return (x, y);
    }

    public static string Csv(string path, float[] x, long[] y, int features = 4, Func<int, long, string>? label = null)
    {
        var sb = new StringBuilder();
        sb.AppendLine(string.Join(",", Enumerable.Range(0, features).Select(f => "f" + f)) + ",label");
        for (int i = 0; i < y.Length; i++)
        {
            for (int f = 0; f < features; f++) sb.Append(x[i * features + f].ToString("R", CultureInfo.InvariantCulture)).Append(',');
            sb.AppendLine(label?.Invoke(i, y[i]) ?? y[i].ToString(CultureInfo.InvariantCulture));
        }
        File.WriteAllText(path, sb.ToString());
        return path;
    }

    /// <summary>A learnable CSV for <see cref="Models.Linear2"/> (4 features, 3 classes).</summary>
    public static string Csv(string path, int n, int seed)
    {
        var (x, y) = Make(n, seed);
        return Csv(path, x, y);
    }

    public static byte[] Npy(float[] data, params long[] shape) => NpyBytes("<f4", shape, MemoryMarshalBytes(data));

    public static byte[] Npy(long[] data, params long[] shape) => NpyBytes("<i8", shape, MemoryMarshalBytes(data));

    private static byte[] MemoryMarshalBytes<T>(T[] data) where T : unmanaged =>
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()).ToArray();

    private static byte[] NpyBytes(string descr, long[] shape, byte[] body)
    {
        string dims = shape.Length == 1 ? $"({shape[0]},)" : "(" + string.Join(", ", shape) + ")";
        string header = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}";
        int total = 10 + header.Length + 1;
        header = header.PadRight(header.Length + (64 - total % 64) % 64) + "\n";
        var ms = new MemoryStream();
        ms.WriteByte(0x93);
        ms.Write("NUMPY"u8);
        ms.WriteByte(1);
        ms.WriteByte(0);
        ms.Write(BitConverter.GetBytes((ushort)header.Length));
        ms.Write(Encoding.ASCII.GetBytes(header));
        ms.Write(body);
        return ms.ToArray();
    }

    public static string Npz(string path, params (string Key, byte[] Npy)[] entries)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        foreach (var (key, npy) in entries)
        {
            using var s = zip.CreateEntry(key + ".npy").Open();
            s.Write(npy);
        }
        return path;
    }

    public static JsonElement Report(string path) => JsonDocument.Parse(File.ReadAllText(path)).RootElement;

    public static double[] StepLosses(JsonElement report) =>
        report.GetProperty("step_losses").EnumerateArray().Where(s => !s.GetProperty("skipped").GetBoolean()).Select(s => s.GetProperty("loss").GetDouble()).ToArray();

    /// <summary>The repository root (the folder holding OnnxKfac.sln), found from the test's output folder.</summary>
    public static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "OnnxKfac.sln"))) return d.FullName;
        throw new InvalidOperationException("OnnxKfac.sln not found above " + AppContext.BaseDirectory);
    }
}
