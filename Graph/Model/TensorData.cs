using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Google.Protobuf;
using OnnxKfac.Graph.Proto;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Model;

/// <summary>Reading and writing the payload of <see cref="TensorProto"/>s.</summary>
public static class TensorData
{
    public static bool IsFloat(int elemType) =>
        elemType is (int)DataType.Float or (int)DataType.Double or (int)DataType.Float16 or (int)DataType.Bfloat16;

    public static string TypeName(int elemType) =>
        Enum.IsDefined(typeof(DataType), elemType) ? ((DataType)elemType).ToString().ToLowerInvariant() : $"type {elemType}";

    public static long ElementCount(IEnumerable<long> dims)
    {
        long n = 1;
        foreach (long d in dims) n = checked(n * d);
        return n;
    }

    public static TensorProto FromFloats(string name, ReadOnlySpan<long> dims, ReadOnlySpan<float> values)
    {
        var t = new TensorProto { Name = name, DataType = (int)DataType.Float };
        t.Dims.Add(dims.ToArray());
        t.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values));
        return t;
    }

    public static TensorProto FromDoubles(string name, ReadOnlySpan<long> dims, ReadOnlySpan<double> values)
    {
        var t = new TensorProto { Name = name, DataType = (int)DataType.Double };
        t.Dims.Add(dims.ToArray());
        t.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values));
        return t;
    }

    public static TensorProto FromInt64s(string name, ReadOnlySpan<long> dims, ReadOnlySpan<long> values)
    {
        var t = new TensorProto { Name = name, DataType = (int)DataType.Int64 };
        t.Dims.Add(dims.ToArray());
        t.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values));
        return t;
    }

    /// <summary>A scalar (or shape [1] when <paramref name="asVector"/>) of a float type.</summary>
    public static TensorProto Scalar(string name, int elemType, double value, bool asVector = false)
    {
        long[] dims = asVector ? [1] : [];
        return elemType switch
        {
            (int)DataType.Float => FromFloats(name, dims, [(float)value]),
            (int)DataType.Double => FromDoubles(name, dims, [value]),
            (int)DataType.Int64 => FromInt64s(name, dims, [(long)value]),
            (int)DataType.Float16 => Half16(name, dims, value),
            _ => throw new OnnxKfacException($"cannot make a constant of element type {TypeName(elemType)} for '{name}'"),
        };
    }

    private static TensorProto Half16(string name, long[] dims, double value)
    {
        var t = new TensorProto { Name = name, DataType = (int)DataType.Float16 };
        t.Dims.Add(dims);
        var bytes = new byte[2];
        BinaryPrimitives.WriteHalfLittleEndian(bytes, (Half)value);
        t.RawData = ByteString.CopyFrom(bytes);
        return t;
    }

    /// <summary>The tensor's values as float32, whatever float or integer type it holds.</summary>
    public static float[] ToFloats(TensorProto t)
    {
        double[] d = ToDoubles(t);
        var f = new float[d.Length];
        for (int i = 0; i < d.Length; i++) f[i] = (float)d[i];
        return f;
    }

    /// <summary>The tensor's values widened to double.</summary>
    public static double[] ToDoubles(TensorProto t)
    {
        long n = ElementCount(t.Dims);
        var result = new double[n];
        ReadOnlySpan<byte> raw = t.HasRawData ? t.RawData.Span : default;
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new OnnxKfacException($"tensor '{t.Name}' still refers to external data; load the model with its data");
        switch ((DataType)t.DataType)
        {
            case DataType.Float:
                if (t.HasRawData) { var s = MemoryMarshal.Cast<byte, float>(raw); Check(t, s.Length, n); for (int i = 0; i < n; i++) result[i] = s[i]; }
                else { Check(t, t.FloatData.Count, n); for (int i = 0; i < n; i++) result[i] = t.FloatData[i]; }
                break;
            case DataType.Double:
                if (t.HasRawData) { var s = MemoryMarshal.Cast<byte, double>(raw); Check(t, s.Length, n); s.CopyTo(result); }
                else { Check(t, t.DoubleData.Count, n); t.DoubleData.CopyTo(result, 0); }
                break;
            case DataType.Int64:
                if (t.HasRawData) { var s = MemoryMarshal.Cast<byte, long>(raw); Check(t, s.Length, n); for (int i = 0; i < n; i++) result[i] = s[i]; }
                else { Check(t, t.Int64Data.Count, n); for (int i = 0; i < n; i++) result[i] = t.Int64Data[i]; }
                break;
            case DataType.Int32:
                if (t.HasRawData) { var s = MemoryMarshal.Cast<byte, int>(raw); Check(t, s.Length, n); for (int i = 0; i < n; i++) result[i] = s[i]; }
                else { Check(t, t.Int32Data.Count, n); for (int i = 0; i < n; i++) result[i] = t.Int32Data[i]; }
                break;
            case DataType.Float16:
                if (t.HasRawData) { var s = MemoryMarshal.Cast<byte, Half>(raw); Check(t, s.Length, n); for (int i = 0; i < n; i++) result[i] = (double)s[i]; }
                else { Check(t, t.Int32Data.Count, n); for (int i = 0; i < n; i++) result[i] = (double)BitConverter.UInt16BitsToHalf((ushort)t.Int32Data[i]); }
                break;
            case DataType.Uint8 or DataType.Bool:
                if (t.HasRawData) { Check(t, raw.Length, n); for (int i = 0; i < n; i++) result[i] = raw[i]; }
                else { Check(t, t.Int32Data.Count, n); for (int i = 0; i < n; i++) result[i] = t.Int32Data[i]; }
                break;
            case DataType.Int8:
                if (t.HasRawData) { Check(t, raw.Length, n); for (int i = 0; i < n; i++) result[i] = (sbyte)raw[i]; }
                else { Check(t, t.Int32Data.Count, n); for (int i = 0; i < n; i++) result[i] = t.Int32Data[i]; }
                break;
            default:
                throw new OnnxKfacException($"tensor '{t.Name}': element type {TypeName(t.DataType)} is not supported here");
        }
        return result;
    }

    /// <summary>The tensor's values as int64 (integer tensors only).</summary>
    public static long[] ToInt64s(TensorProto t)
    {
        if (IsFloat(t.DataType))
            throw new OnnxKfacException($"tensor '{t.Name}' holds {TypeName(t.DataType)} values where integers were expected");
        double[] d = ToDoubles(t);
        var r = new long[d.Length];
        if ((DataType)t.DataType == DataType.Int64)
        {
            // Re-read exactly: doubles lose precision past 2^53.
            if (t.HasRawData) MemoryMarshal.Cast<byte, long>(t.RawData.Span).CopyTo(r);
            else t.Int64Data.CopyTo(r, 0);
            return r;
        }
        for (int i = 0; i < d.Length; i++) r[i] = (long)d[i];
        return r;
    }

    private static void Check(TensorProto t, long have, long want)
    {
        if (have != want)
            throw new OnnxKfacException($"tensor '{t.Name}': shape [{string.Join(",", t.Dims)}] needs {want} values but the data holds {have}");
    }
}
