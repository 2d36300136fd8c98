using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace OnnxKfac.Toolkit.Tests.Data;

/// <summary>A temporary folder, deleted on dispose, and writers for small test files in each format.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "onnxkfac-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

internal static class DataFiles
{
    /// <summary>IDX bytes: magic 0x0000TTNN, big-endian dims, big-endian elements.</summary>
    public static byte[] Idx(byte typeCode, int[] dims, double[] values)
    {
        int size = typeCode switch { 0x08 or 0x09 => 1, 0x0B => 2, 0x0C or 0x0D => 4, 0x0E => 8, _ => 1 };
        var bytes = new byte[4 + 4 * dims.Length + size * values.Length];
        bytes[2] = typeCode;
        bytes[3] = (byte)dims.Length;
        for (int i = 0; i < dims.Length; i++) BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4 + 4 * i), dims[i]);
        var data = bytes.AsSpan(4 + 4 * dims.Length);
        for (int i = 0; i < values.Length; i++)
        {
            var at = data[(i * size)..];
            switch (typeCode)
            {
                case 0x08: at[0] = (byte)values[i]; break;
                case 0x09: at[0] = (byte)(sbyte)values[i]; break;
                case 0x0B: BinaryPrimitives.WriteInt16BigEndian(at, (short)values[i]); break;
                case 0x0C: BinaryPrimitives.WriteInt32BigEndian(at, (int)values[i]); break;
                case 0x0D: BinaryPrimitives.WriteSingleBigEndian(at, (float)values[i]); break;
                case 0x0E: BinaryPrimitives.WriteDoubleBigEndian(at, values[i]); break;
            }
        }
        return bytes;
    }

    public static byte[] Gzip(byte[] bytes)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest)) gz.Write(bytes);
        return ms.ToArray();
    }

    public static string WriteIdx(TempDir dir, string name, byte typeCode, int[] dims, double[] values, bool gzip = false)
    {
        var bytes = Idx(typeCode, dims, values);
        string path = dir.File(name);
        System.IO.File.WriteAllBytes(path, gzip ? Gzip(bytes) : bytes);
        return path;
    }

    /// <summary>
    /// A small image/label pair: example i has pixels (i * 7 + k) % 256 and label i % classes.
    /// </summary>
    public static (string Images, string Labels) WriteImageSet(TempDir dir, int count, int rows, int cols, int classes = 10, bool gzip = false, string prefix = "set")
    {
        int pixels = rows * cols;
        var images = new double[count * pixels];
        for (int i = 0; i < count; i++)
            for (int k = 0; k < pixels; k++) images[i * pixels + k] = Pixel(i, k);
        var labels = new double[count];
        for (int i = 0; i < count; i++) labels[i] = i % classes;
        string suffix = gzip ? ".gz" : "";
        return (WriteIdx(dir, $"{prefix}-images{suffix}", 0x08, [count, rows, cols], images, gzip),
                WriteIdx(dir, $"{prefix}-labels{suffix}", 0x08, [count], labels, gzip));
    }

    public static byte Pixel(int example, int k) => (byte)((example * 7 + k) % 256);

    /// <summary>NPY bytes with the header padded to a multiple of 64 as NumPy does.</summary>
    public static byte[] Npy(string descr, long[] shape, byte[] data, int major = 1, bool fortran = false)
    {
        string shapeText = shape.Length == 1 ? $"({shape[0]},)" : $"({string.Join(", ", shape)})";
        string dict = $"{{'descr': '{descr}', 'fortran_order': {(fortran ? "True" : "False")}, 'shape': {shapeText}, }}";
        int prefix = major == 1 ? 10 : 12;
        int total = prefix + dict.Length + 1;
        int padded = (total + 63) / 64 * 64;
        string header = dict + new string(' ', padded - total) + "\n";
        var headerBytes = Encoding.Latin1.GetBytes(header);
        var ms = new MemoryStream();
        ms.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)major, 0]);
        var len = new byte[major == 1 ? 2 : 4];
        if (major == 1) BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)headerBytes.Length);
        else BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)headerBytes.Length);
        ms.Write(len);
        ms.Write(headerBytes);
        ms.Write(data);
        return ms.ToArray();
    }

    public static byte[] LittleEndian(float[] v)
    {
        var b = new byte[v.Length * 4];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(4 * i), v[i]);
        return b;
    }

    public static byte[] LittleEndian(double[] v)
    {
        var b = new byte[v.Length * 8];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteDoubleLittleEndian(b.AsSpan(8 * i), v[i]);
        return b;
    }

    public static byte[] LittleEndian(long[] v)
    {
        var b = new byte[v.Length * 8];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(8 * i), v[i]);
        return b;
    }

    public static byte[] LittleEndian(int[] v)
    {
        var b = new byte[v.Length * 4];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(4 * i), v[i]);
        return b;
    }

    public static byte[] LittleEndian(short[] v)
    {
        var b = new byte[v.Length * 2];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteInt16LittleEndian(b.AsSpan(2 * i), v[i]);
        return b;
    }

    public static string WriteNpz(TempDir dir, string name, CompressionLevel level, params (string Key, byte[] Npy)[] entries)
    {
        string path = dir.File(name);
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        {
            foreach (var (key, npy) in entries)
            {
                var entry = zip.CreateEntry(key + ".npy", level);
                using var s = entry.Open();
                s.Write(npy);
            }
        }
        return path;
    }

    public static string WriteText(TempDir dir, string name, string text)
    {
        string path = dir.File(name);
        System.IO.File.WriteAllText(path, text, new UTF8Encoding(false));
        return path;
    }
}
