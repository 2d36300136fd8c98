using Google.Protobuf;
using OnnxKfac.Graph.Proto;
using DT = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// Reads ONNX <c>TensorProto</c> files (<c>.pb</c>, as in ONNX test data sets), with the data in
/// <c>raw_data</c> (little-endian) or in the typed fields. Supported: FLOAT, DOUBLE, FLOAT16,
/// BFLOAT16 (stored as <see cref="DataElementType.Float32"/>), INT8/16/32/64, UINT16/32 (stored
/// as <see cref="DataElementType.Int64"/>), UINT8 and BOOL (stored as <see cref="DataElementType.UInt8"/>).
/// </summary>
public static class TensorProtoFile
{
    /// <summary>Reads a serialized <c>TensorProto</c> from <paramref name="path"/>.</summary>
    /// <exception cref="DataException">Not a TensorProto, an unsupported data type, external data, or an element count that does not match the dims.</exception>
    public static DataTensor ReadTensor(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        TensorProto proto;
        try
        {
            using var stream = File.OpenRead(path);
            proto = TensorProto.Parser.ParseFrom(stream);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new DataException($"{path}: not a valid ONNX TensorProto: {e.Message}", e);
        }
        return FromProto(proto, path);
    }

    /// <summary>Converts an in-memory <c>TensorProto</c> (e.g. an initializer); <paramref name="source"/> names it in messages.</summary>
    /// <exception cref="DataException">An unsupported data type, external data, or an element count that does not match the dims.</exception>
    public static DataTensor FromProto(TensorProto tensor, string? source = null)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        string where = (source, tensor.Name) switch
        {
            (null, "") => "TensorProto",
            (null, var n) => $"tensor '{n}'",
            (var s, "") => s,
            (var s, var n) => $"{s} (tensor '{n}')",
        };
        if (tensor.DataLocation == TensorProto.Types.DataLocation.External)
            throw new DataException($"{where}: the data is stored externally ({string.Join(", ", tensor.ExternalData.Select(e => $"{e.Key}={e.Value}"))}); external data is not supported here.");
        var shape = tensor.Dims.ToArray();
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new DataException($"{where}: dims [{string.Join(", ", shape)}] contain a negative dimension.");
            count = checked(count * d);
        }
        var type = (DT)tensor.DataType;
        RawKind kind = type switch
        {
            DT.Float => RawKind.Float32,
            DT.Double => RawKind.Float64,
            DT.Float16 => RawKind.Float16,
            DT.Bfloat16 => RawKind.BFloat16,
            DT.Int8 => RawKind.Int8,
            DT.Int16 => RawKind.Int16,
            DT.Int32 => RawKind.Int32,
            DT.Int64 => RawKind.Int64,
            DT.Uint8 => RawKind.UInt8,
            DT.Uint16 => RawKind.UInt16,
            DT.Uint32 => RawKind.UInt32,
            DT.Bool => RawKind.Bool,
            _ => throw new DataException($"{where}: data type {type} ({tensor.DataType}) is not supported (FLOAT, DOUBLE, FLOAT16, BFLOAT16, INT8/16/32/64, UINT8/16/32 and BOOL are)."),
        };
        var storage = ElementConvert.StorageOf(kind);
        Array data;
        if (tensor.HasRawData)
        {
            var raw = tensor.RawData.Span;
            long need = count * ElementConvert.SizeOf(kind);
            if (raw.Length != need)
                throw new DataException($"{where}: raw_data holds {raw.Length} bytes but dims [{string.Join(", ", shape)}] of {type} need {need}.");
            using var ms = new MemoryStream(tensor.RawData.ToByteArray(), writable: false);
            data = ElementConvert.ReadArray(ms, kind, bigEndian: false, count);
        }
        else
        {
            data = ElementConvert.Allocate(storage, count);
            long have = kind switch
            {
                RawKind.Float32 => tensor.FloatData.Count,
                RawKind.Float64 => tensor.DoubleData.Count,
                RawKind.Int64 => tensor.Int64Data.Count,
                RawKind.UInt32 => tensor.Uint64Data.Count,
                _ => tensor.Int32Data.Count,
            };
            string field = kind switch
            {
                RawKind.Float32 => "float_data",
                RawKind.Float64 => "double_data",
                RawKind.Int64 => "int64_data",
                RawKind.UInt32 => "uint64_data",
                _ => "int32_data",
            };
            if (have != count)
                throw new DataException($"{where}: {field} holds {have} values but dims [{string.Join(", ", shape)}] need {count}.");
            for (int i = 0; i < count; i++)
            {
                switch (data)
                {
                    case float[] f:
                        f[i] = kind switch
                        {
                            RawKind.Float32 => tensor.FloatData[i],
                            RawKind.Float64 => (float)tensor.DoubleData[i],
                            RawKind.Float16 => (float)BitConverter.UInt16BitsToHalf((ushort)tensor.Int32Data[i]),
                            _ => BitConverter.UInt32BitsToSingle((uint)(ushort)tensor.Int32Data[i] << 16),
                        };
                        break;
                    case long[] l:
                        l[i] = kind switch
                        {
                            RawKind.Int64 => tensor.Int64Data[i],
                            RawKind.UInt32 => (long)tensor.Uint64Data[i],
                            _ => tensor.Int32Data[i],
                        };
                        break;
                    case byte[] b:
                        int v = tensor.Int32Data[i];
                        b[i] = kind == RawKind.Bool ? (byte)(v != 0 ? 1 : 0) : (byte)v;
                        break;
                }
            }
        }
        return DataTensor.Create(data, shape, where);
    }
}
