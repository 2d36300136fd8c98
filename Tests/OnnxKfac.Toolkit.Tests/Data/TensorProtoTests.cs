using Google.Protobuf;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Toolkit.Data;
using DT = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Toolkit.Tests.Data;

public sealed class TensorProtoTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Write(TensorProto t, string name = "t.pb")
    {
        string path = _dir.File(name);
        File.WriteAllBytes(path, t.ToByteArray());
        return path;
    }

    [Fact]
    public void FloatFromRawDataAndFromFloatData()
    {
        float[] v = [1, -2.5f, 3, 4e-3f, 5, 6];
        var raw = new TensorProto { Name = "input", DataType = (int)DT.Float, RawData = ByteString.CopyFrom(DataFiles.LittleEndian(v)) };
        raw.Dims.Add([2, 3]);
        var typed = new TensorProto { DataType = (int)DT.Float };
        typed.Dims.Add([2, 3]);
        typed.FloatData.Add(v);

        var a = TensorProtoFile.ReadTensor(Write(raw, "raw.pb"));
        var b = TensorProtoFile.ReadTensor(Write(typed, "typed.pb"));

        Assert.Equal([2L, 3], a.Shape);
        Assert.Equal(v, a.AsFloats().ToArray());
        Assert.Equal(v, b.AsFloats().ToArray());
        Assert.Contains("tensor 'input'", a.Source);
    }

    [Fact]
    public void DoubleInt64Int32Uint8AndBool()
    {
        var d = new TensorProto { DataType = (int)DT.Double };
        d.Dims.Add(2); d.DoubleData.Add([0.25, -8]);
        var l = new TensorProto { DataType = (int)DT.Int64, RawData = ByteString.CopyFrom(DataFiles.LittleEndian([-5L, 1L << 50])) };
        l.Dims.Add(2);
        var i = new TensorProto { DataType = (int)DT.Int32 };
        i.Dims.Add(3); i.Int32Data.Add([-1, 0, 7]);
        var u = new TensorProto { DataType = (int)DT.Uint8, RawData = ByteString.CopyFrom(0, 128, 255) };
        u.Dims.Add(3);
        var b = new TensorProto { DataType = (int)DT.Bool };
        b.Dims.Add(3); b.Int32Data.Add([1, 0, 1]);
        var i64typed = new TensorProto { DataType = (int)DT.Int64 };
        i64typed.Dims.Add(1); i64typed.Int64Data.Add(9);

        Assert.Equal([0.25f, -8], TensorProtoFile.FromProto(d).AsFloats().ToArray());
        Assert.Equal([-5L, 1L << 50], TensorProtoFile.FromProto(l).AsInt64s().ToArray());
        Assert.Equal([-1L, 0, 7], TensorProtoFile.FromProto(i).AsInt64s().ToArray());
        Assert.Equal([0, 128, 255], TensorProtoFile.FromProto(u).AsBytes().ToArray());
        Assert.Equal([1, 0, 1], TensorProtoFile.FromProto(b).AsBytes().ToArray());
        Assert.Equal([9L], TensorProtoFile.FromProto(i64typed).AsInt64s().ToArray());
    }

    [Fact]
    public void Float16FromRawDataAndFromBitPatterns()
    {
        Half[] h = [(Half)1.5f, (Half)(-0.25f), (Half)65504f];
        var bytes = new byte[6];
        for (int k = 0; k < 3; k++) BitConverter.TryWriteBytes(bytes.AsSpan(2 * k), BitConverter.HalfToUInt16Bits(h[k]));
        var raw = new TensorProto { DataType = (int)DT.Float16, RawData = ByteString.CopyFrom(bytes) };
        raw.Dims.Add(3);
        var typed = new TensorProto { DataType = (int)DT.Float16 };
        typed.Dims.Add(3);
        typed.Int32Data.Add(h.Select(x => (int)BitConverter.HalfToUInt16Bits(x)));

        Assert.Equal([1.5f, -0.25f, 65504f], TensorProtoFile.FromProto(raw).AsFloats().ToArray());
        Assert.Equal([1.5f, -0.25f, 65504f], TensorProtoFile.FromProto(typed).AsFloats().ToArray());
    }

    [Fact]
    public void BadTensorsAreReported()
    {
        var wrongCount = new TensorProto { Name = "w", DataType = (int)DT.Float, RawData = ByteString.CopyFrom(new byte[8]) };
        wrongCount.Dims.Add([2, 2]);
        string p1 = Write(wrongCount, "count.pb");
        Assert.Equal($"{p1} (tensor 'w'): raw_data holds 8 bytes but dims [2, 2] of Float need 16.",
            Assert.Throws<DataException>(() => TensorProtoFile.ReadTensor(p1)).Message);

        var typedCount = new TensorProto { DataType = (int)DT.Int64 };
        typedCount.Dims.Add(3); typedCount.Int64Data.Add([1, 2]);
        Assert.Contains("int64_data holds 2 values but dims [3] need 3", Assert.Throws<DataException>(() => TensorProtoFile.FromProto(typedCount, "x.pb")).Message);

        var str = new TensorProto { DataType = (int)DT.String };
        str.Dims.Add(1);
        Assert.Contains("data type String (8) is not supported", Assert.Throws<DataException>(() => TensorProtoFile.FromProto(str, "s.pb")).Message);

        var external = new TensorProto { DataType = (int)DT.Float, DataLocation = TensorProto.Types.DataLocation.External };
        external.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "weights.bin" });
        Assert.Contains("location=weights.bin", Assert.Throws<DataException>(() => TensorProtoFile.FromProto(external, "e.pb")).Message);

        string garbage = _dir.File("garbage.pb");
        File.WriteAllBytes(garbage, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        Assert.Contains($"{garbage}: not a valid ONNX TensorProto", Assert.Throws<DataException>(() => TensorProtoFile.ReadTensor(garbage)).Message);
    }
}
