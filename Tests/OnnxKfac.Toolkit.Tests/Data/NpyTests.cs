using System.IO.Compression;
using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Tests.Data;

public sealed class NpyTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Write(string name, byte[] bytes)
    {
        string path = _dir.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void ReadsFloat32InEveryHeaderVersion(int major)
    {
        float[] v = [1.5f, -2, 0, 3.25f, 1e-7f, 65504];
        string path = Write($"f4-v{major}.npy", DataFiles.Npy("<f4", [2, 3], DataFiles.LittleEndian(v), major));

        var t = Npy.ReadTensor(path);

        Assert.Equal(DataElementType.Float32, t.ElementType);
        Assert.Equal([2L, 3], t.Shape);
        Assert.Equal(v, t.AsFloats().ToArray());
    }

    [Fact]
    public void ReadsFloat64AsFloat32()
    {
        double[] v = [0.1, -1e10, 2.5];
        var t = Npy.ReadTensor(Write("f8.npy", DataFiles.Npy("<f8", [3], DataFiles.LittleEndian(v))));
        Assert.Equal(DataElementType.Float32, t.ElementType);
        Assert.Equal([0.1f, -1e10f, 2.5f], t.AsFloats().ToArray());
    }

    [Fact]
    public void ReadsIntegerTypesAsInt64()
    {
        var i8 = Npy.ReadTensor(Write("i8.npy", DataFiles.Npy("<i8", [2], DataFiles.LittleEndian([long.MinValue, 1L << 40]))));
        var i4 = Npy.ReadTensor(Write("i4.npy", DataFiles.Npy("<i4", [3], DataFiles.LittleEndian([-7, 0, int.MaxValue]))));
        var i2 = Npy.ReadTensor(Write("i2.npy", DataFiles.Npy("<i2", [2], DataFiles.LittleEndian(new short[] { -300, 300 }))));

        Assert.Equal([long.MinValue, 1L << 40], i8.AsInt64s().ToArray());
        Assert.Equal([-7L, 0, int.MaxValue], i4.AsInt64s().ToArray());
        Assert.Equal([-300L, 300], i2.AsInt64s().ToArray());
        Assert.Equal(DataElementType.Int64, i2.ElementType);
    }

    [Fact]
    public void ReadsUint8AndBoolAsBytes()
    {
        var u1 = Npy.ReadTensor(Write("u1.npy", DataFiles.Npy("|u1", [2, 2], [0, 1, 200, 255])));
        var b1 = Npy.ReadTensor(Write("b1.npy", DataFiles.Npy("|b1", [4], [1, 0, 0, 1])));

        Assert.Equal(DataElementType.UInt8, u1.ElementType);
        Assert.Equal([0, 1, 200, 255], u1.AsBytes().ToArray());
        Assert.Equal([2L, 2], u1.Shape);
        Assert.Equal([1, 0, 0, 1], b1.AsBytes().ToArray());
    }

    [Fact]
    public void ReadsBigEndianAndScalars()
    {
        var be = Npy.ReadTensor(Write("be.npy", DataFiles.Npy(">i4", [2], [0, 0, 1, 2, 0xFF, 0xFF, 0xFF, 0xFE])));
        Assert.Equal([258L, -2], be.AsInt64s().ToArray());

        var scalar = Npy.ReadTensor(Write("scalar.npy", DataFiles.Npy("<f4", [], DataFiles.LittleEndian([42f]))));
        Assert.Empty(scalar.Shape);
        Assert.Equal([42f], scalar.AsFloats().ToArray());
    }

    [Theory]
    [InlineData(CompressionLevel.NoCompression)]
    [InlineData(CompressionLevel.Optimal)]
    public void ReadsNpzStoredAndDeflated(CompressionLevel level)
    {
        float[] x = [1, 2, 3, 4, 5, 6];
        long[] y = [1, 0, 2];
        string path = DataFiles.WriteNpz(_dir, $"d{level}.npz", level,
            ("x", DataFiles.Npy("<f4", [3, 2], DataFiles.LittleEndian(x))),
            ("y", DataFiles.Npy("<i8", [3], DataFiles.LittleEndian(y))));

        var tensors = Npz.ReadTensors(path);

        Assert.Equal(["x", "y"], tensors.Keys.Order());
        Assert.Equal(x, tensors["x"].AsFloats().ToArray());
        Assert.Equal(y, tensors["y"].AsInt64s().ToArray());
        Assert.Equal($"{path}:x.npy", tensors["x"].Source);

        using var ds = Dataset.FromTensors(tensors["x"], tensors["y"], new DataOptions { ClassCount = 3 });
        var f = new float[2];
        var l = new long[1];
        ds.CopyExample(2, f, l);
        Assert.Equal([5f, 6], f);
        Assert.Equal(2, l[0]);
    }

    // ---- bad input ----

    [Fact]
    public void FortranOrderIsRefused()
    {
        string path = Write("fortran.npy", DataFiles.Npy("<f4", [2, 2], new byte[16], fortran: true));

        var e = Assert.Throws<DataException>(() => Npy.ReadTensor(path));

        Assert.Contains(path, e.Message);
        Assert.Contains("Fortran (column-major) order, which is not supported", e.Message);
    }

    [Fact]
    public void WrongMagicUnsupportedDtypeAndTruncationAreReported()
    {
        string notNpy = Write("text.npy", "hello world, not numpy"u8.ToArray());
        Assert.Contains($"{notNpy}: not an NPY file", Assert.Throws<DataException>(() => Npy.ReadTensor(notNpy)).Message);

        string complex = Write("c8.npy", DataFiles.Npy("<c8", [1], new byte[8]));
        Assert.Contains($"{complex}: NPY dtype '<c8' is not supported", Assert.Throws<DataException>(() => Npy.ReadTensor(complex)).Message);

        var shortBytes = DataFiles.Npy("<f4", [10], new byte[24]);
        string truncated = Write("short.npy", shortBytes);
        var e = Assert.Throws<DataException>(() => Npy.ReadTensor(truncated));
        Assert.Equal(128, shortBytes.Length - 24); // header padded to a multiple of 64, as NumPy writes it
        Assert.Equal($"{truncated}: truncated: the header declares shape (10) of 40 data bytes from offset 128, but the data ends early.", e.Message);
    }

    [Fact]
    public void BadNpzIsReported()
    {
        string notZip = Write("bad.npz", [1, 2, 3, 4, 5, 6, 7, 8]);
        Assert.Contains($"{notZip}: not a valid NPZ (zip) archive", Assert.Throws<DataException>(() => Npz.ReadTensors(notZip)).Message);

        string badEntry = DataFiles.WriteNpz(_dir, "entry.npz", CompressionLevel.Optimal, ("x", [0x93, (byte)'N']));
        Assert.Contains($"{badEntry}:x.npy: not an NPY file", Assert.Throws<DataException>(() => Npz.ReadTensors(badEntry)).Message);
    }
}

/// <summary><see cref="Npy.Write"/>: what it writes reads back, header and all.</summary>
public sealed class NpyWriteTests
{
    [Fact]
    public void FloatAndInt64ArraysRoundTripWithTheirShapes()
    {
        var ms = new MemoryStream();
        Npy.Write(ms, DataTensor.FromFloat([1.5f, -2, 3, float.MaxValue, 0, 6], 2, 3));
        Assert.Equal(0, (ms.Length - 6 * 4) % 64);   // magic, version and header padded to 64 bytes
        ms.Position = 0;
        var f = Npy.ReadTensor(ms, "mem.npy");
        Assert.Equal([2L, 3], f.Shape);
        Assert.Equal([1.5f, -2, 3, float.MaxValue, 0, 6], f.AsFloats().ToArray());

        ms = new MemoryStream();
        Npy.Write(ms, DataTensor.FromInt64([7, -1, long.MaxValue], 3));
        ms.Position = 0;
        var l = Npy.ReadTensor(ms, "mem.npy");
        Assert.Equal([3L], l.Shape);
        Assert.Equal([7L, -1, long.MaxValue], l.AsInt64s().ToArray());
        Assert.Contains("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", System.Text.Encoding.ASCII.GetString(ms.ToArray()));
    }
}
