using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Cli.Common;

/// <summary>
/// A tensor read from an ONNX TensorProto file: element type, shape and its values as
/// little-endian bytes in the layout ONNX Runtime expects.
/// </summary>
internal sealed record TensorFile(string Path, string Name, int ElemType, long[] Shape, byte[] Raw)
{
    public string TypeName => TensorData.TypeName(ElemType);

    public string ShapeText => Shapes.Format(Shape);

    /// <summary>Reads and checks a TensorProto file; <paramref name="what"/> ("input", "target") names it in errors.</summary>
    public static TensorFile Read(string path, string what)
    {
        if (!File.Exists(path)) throw new OnnxKfacException($"{what} {path}: no such file");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OnnxKfacException($"{what} {path}: cannot read: {e.Message}", e);
        }
        if (bytes.Length == 0) throw new OnnxKfacException($"{what} {path}: empty file, not an ONNX TensorProto");
        TensorProto t;
        try { t = TensorProto.Parser.ParseFrom(bytes); }
        catch (Exception e) when (e is InvalidProtocolBufferException or ArgumentException or InvalidOperationException or OverflowException)
        {
            throw new OnnxKfacException($"{what} {path}: not an ONNX TensorProto (truncated or corrupt protobuf: {e.Message})", e);
        }
        return FromProto(t, path, what);
    }

    public static TensorFile FromProto(TensorProto t, string path, string what)
    {
        string where = $"{what} {path}";
        if (t.DataType == 0 || !Enum.IsDefined(typeof(DataType), t.DataType))
            throw new OnnxKfacException($"{where}: not an ONNX TensorProto (data_type {t.DataType} is not an ONNX element type)");
        if (t.DataLocation == TensorProto.Types.DataLocation.External || t.ExternalData.Count > 0)
            throw new OnnxKfacException($"{where}: the tensor refers to external data; save it with its values inline");
        if (t.Segment is not null) throw new OnnxKfacException($"{where}: segmented tensors are not supported");
        foreach (long d in t.Dims)
            if (d < 0) throw new OnnxKfacException($"{where}: negative dimension in shape [{string.Join(",", t.Dims)}]");
        long n;
        try { n = TensorData.ElementCount(t.Dims); }
        catch (OverflowException) { throw new OnnxKfacException($"{where}: shape [{string.Join(",", t.Dims)}] has too many elements"); }
        int size = ElementSize(t.DataType)
            ?? throw new OnnxKfacException($"{where}: element type {TensorData.TypeName(t.DataType)} is not supported (numeric and bool tensors only)");
        if (n > Array.MaxLength / size) throw new OnnxKfacException($"{where}: shape [{string.Join(",", t.Dims)}] is too large");
        byte[] raw = t.HasRawData ? t.RawData.ToByteArray() : Typed(t, (int)n, size, where);
        if (raw.LongLength != n * size)
            throw new OnnxKfacException($"{where}: shape [{string.Join(",", t.Dims)}] of {TensorData.TypeName(t.DataType)} needs {n * size} bytes of data but the file holds {raw.LongLength}");
        return new TensorFile(path, t.Name, t.DataType, t.Dims.ToArray(), raw);
    }

    /// <summary>Bytes per element of the types a tensor file may hold; null for the rest (strings, complex, 4-bit).</summary>
    public static int? ElementSize(int elemType) => (DataType)elemType switch
    {
        DataType.Float or DataType.Int32 or DataType.Uint32 => 4,
        DataType.Double or DataType.Int64 or DataType.Uint64 => 8,
        DataType.Float16 or DataType.Bfloat16 or DataType.Int16 or DataType.Uint16 => 2,
        DataType.Int8 or DataType.Uint8 or DataType.Bool => 1,
        _ => null,
    };

    private static byte[] Typed(TensorProto t, int n, int size, string where)
    {
        var raw = new byte[(long)n * size];
        void count(int have) { if (have != n) throw new OnnxKfacException($"{where}: shape [{string.Join(",", t.Dims)}] needs {n} values but the file holds {have}"); }
        switch ((DataType)t.DataType)
        {
            case DataType.Float: count(t.FloatData.Count); MemoryMarshal.AsBytes(t.FloatData.ToArray().AsSpan()).CopyTo(raw); break;
            case DataType.Double: count(t.DoubleData.Count); MemoryMarshal.AsBytes(t.DoubleData.ToArray().AsSpan()).CopyTo(raw); break;
            case DataType.Int64: count(t.Int64Data.Count); MemoryMarshal.AsBytes(t.Int64Data.ToArray().AsSpan()).CopyTo(raw); break;
            case DataType.Uint64 or DataType.Uint32:
                count(t.Uint64Data.Count);
                for (int i = 0; i < n; i++)
                    if (size == 8) BitConverter.TryWriteBytes(raw.AsSpan(i * 8), t.Uint64Data[i]);
                    else BitConverter.TryWriteBytes(raw.AsSpan(i * 4), (uint)t.Uint64Data[i]);
                break;
            default: // int32_data carries every narrower type, one value per entry
                count(t.Int32Data.Count);
                for (int i = 0; i < n; i++)
                {
                    int v = t.Int32Data[i];
                    switch (size)
                    {
                        case 4: BitConverter.TryWriteBytes(raw.AsSpan(i * 4), v); break;
                        case 2: BitConverter.TryWriteBytes(raw.AsSpan(i * 2), (ushort)v); break;
                        default: raw[i] = (byte)v; break;
                    }
                }
                break;
        }
        return raw;
    }

    public long ElementCount => TensorData.ElementCount(Shape);

    /// <summary>The values as int64 (integer types only).</summary>
    public long[] ToInt64s()
    {
        long n = ElementCount;
        var r = new long[n];
        var s = Raw.AsSpan();
        for (int i = 0; i < n; i++)
            r[i] = (DataType)ElemType switch
            {
                DataType.Int64 => BitConverter.ToInt64(s[(i * 8)..]),
                DataType.Uint64 => (long)Math.Min(BitConverter.ToUInt64(s[(i * 8)..]), long.MaxValue), // huge labels stay out of range
                DataType.Int32 => BitConverter.ToInt32(s[(i * 4)..]),
                DataType.Uint32 => BitConverter.ToUInt32(s[(i * 4)..]),
                DataType.Int16 => BitConverter.ToInt16(s[(i * 2)..]),
                DataType.Uint16 => BitConverter.ToUInt16(s[(i * 2)..]),
                DataType.Int8 => (sbyte)s[i],
                DataType.Uint8 => s[i],
                _ => throw new InvalidOperationException($"{TypeName} is not an integer type"),
            };
        return r;
    }

    public static bool IsInteger(int elemType) => (DataType)elemType is
        DataType.Int64 or DataType.Int32 or DataType.Int16 or DataType.Int8 or
        DataType.Uint64 or DataType.Uint32 or DataType.Uint16 or DataType.Uint8;

    /// <summary>A copy of this tensor as int64 (class indices fed to the loss).</summary>
    public TensorFile AsInt64()
    {
        if (ElemType == (int)DataType.Int64) return this;
        return this with { ElemType = (int)DataType.Int64, Raw = MemoryMarshal.AsBytes(ToInt64s().AsSpan()).ToArray() };
    }

    /// <summary>A new ONNX Runtime tensor holding a copy of the values (owned by the caller).</summary>
    public OrtValue ToOrtValue()
    {
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, (TensorElementType)ElemType, Shape);
        Raw.CopyTo(value.GetTensorMutableRawData());
        return value;
    }

    /// <summary>Reads an ONNX Runtime tensor back into a TensorProto named <paramref name="name"/>.</summary>
    public static TensorProto ToProto(OrtValue value, string name)
    {
        var info = value.GetTensorTypeAndShape();
        var t = new TensorProto { Name = name, DataType = (int)info.ElementDataType };
        t.Dims.Add(info.Shape);
        t.RawData = ByteString.CopyFrom(value.GetTensorMutableRawData());
        return t;
    }
}
