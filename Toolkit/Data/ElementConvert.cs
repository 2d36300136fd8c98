using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;

namespace OnnxKfac.Toolkit.Data;

/// <summary>Element encodings found in the supported file formats.</summary>
internal enum RawKind
{
    UInt8, Int8, Int16, UInt16, Int32, UInt32, Int64, Float16, BFloat16, Float32, Float64, Bool,
}

/// <summary>Conversions from file encodings (either byte order) to the in-memory element types.</summary>
internal static class ElementConvert
{
    public static int SizeOf(RawKind kind) => kind switch
    {
        RawKind.UInt8 or RawKind.Int8 or RawKind.Bool => 1,
        RawKind.Int16 or RawKind.UInt16 or RawKind.Float16 or RawKind.BFloat16 => 2,
        RawKind.Int32 or RawKind.UInt32 or RawKind.Float32 => 4,
        _ => 8,
    };

    /// <summary>The in-memory type a file encoding is stored as.</summary>
    public static DataElementType StorageOf(RawKind kind) => kind switch
    {
        RawKind.UInt8 or RawKind.Bool => DataElementType.UInt8,
        RawKind.Float16 or RawKind.BFloat16 or RawKind.Float32 or RawKind.Float64 => DataElementType.Float32,
        _ => DataElementType.Int64,
    };

    public static Array Allocate(DataElementType type, long count) => type switch
    {
        DataElementType.UInt8 => new byte[count],
        DataElementType.Int64 => new long[count],
        _ => new float[count],
    };

    /// <summary>Bytes to floats, vectorised (pixels are the hot path when batches are filled).</summary>
    public static void Widen(ReadOnlySpan<byte> source, Span<float> destination)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && source.Length >= Vector<byte>.Count)
        {
            int step = Vector<byte>.Count;
            for (; i <= source.Length - step; i += step)
            {
                var bytes = new Vector<byte>(source.Slice(i, step));
                Vector.Widen(bytes, out Vector<ushort> lo16, out Vector<ushort> hi16);
                Vector.Widen(lo16, out Vector<uint> a, out Vector<uint> b);
                Vector.Widen(hi16, out Vector<uint> c, out Vector<uint> d);
                int q = Vector<uint>.Count;
                Vector.ConvertToSingle(a).CopyTo(destination.Slice(i, q));
                Vector.ConvertToSingle(b).CopyTo(destination.Slice(i + q, q));
                Vector.ConvertToSingle(c).CopyTo(destination.Slice(i + 2 * q, q));
                Vector.ConvertToSingle(d).CopyTo(destination.Slice(i + 3 * q, q));
            }
        }
        for (; i < source.Length; i++) destination[i] = source[i];
    }

    /// <summary>Decodes <c>destination.Length</c> elements of <paramref name="kind"/> into floats.</summary>
    public static void ToFloat(ReadOnlySpan<byte> src, RawKind kind, bool bigEndian, Span<float> destination)
    {
        int n = destination.Length;
        switch (kind)
        {
            case RawKind.UInt8:
            case RawKind.Bool:
                Widen(src[..n], destination);
                return;
            case RawKind.Float32 when !bigEndian && BitConverter.IsLittleEndian:
                MemoryMarshal.Cast<byte, float>(src[..(4 * n)]).CopyTo(destination);
                return;
            case RawKind.Float32:
                for (int i = 0; i < n; i++)
                    destination[i] = bigEndian ? BinaryPrimitives.ReadSingleBigEndian(src[(4 * i)..]) : BinaryPrimitives.ReadSingleLittleEndian(src[(4 * i)..]);
                return;
            case RawKind.Float64:
                for (int i = 0; i < n; i++)
                    destination[i] = (float)(bigEndian ? BinaryPrimitives.ReadDoubleBigEndian(src[(8 * i)..]) : BinaryPrimitives.ReadDoubleLittleEndian(src[(8 * i)..]));
                return;
            case RawKind.Float16:
                for (int i = 0; i < n; i++)
                    destination[i] = (float)(bigEndian ? BinaryPrimitives.ReadHalfBigEndian(src[(2 * i)..]) : BinaryPrimitives.ReadHalfLittleEndian(src[(2 * i)..]));
                return;
            case RawKind.BFloat16:
                for (int i = 0; i < n; i++)
                {
                    uint bits = bigEndian ? BinaryPrimitives.ReadUInt16BigEndian(src[(2 * i)..]) : BinaryPrimitives.ReadUInt16LittleEndian(src[(2 * i)..]);
                    destination[i] = BitConverter.UInt32BitsToSingle(bits << 16);
                }
                return;
            default:
                for (int i = 0; i < n; i++) destination[i] = ReadInteger(src, i, kind, bigEndian);
                return;
        }
    }

    /// <summary>Decodes <c>destination.Length</c> integer elements of <paramref name="kind"/>.</summary>
    public static void ToInt64(ReadOnlySpan<byte> src, RawKind kind, bool bigEndian, Span<long> destination)
    {
        if (kind == RawKind.Int64 && !bigEndian && BitConverter.IsLittleEndian)
        {
            MemoryMarshal.Cast<byte, long>(src[..(8 * destination.Length)]).CopyTo(destination);
            return;
        }
        for (int i = 0; i < destination.Length; i++) destination[i] = ReadInteger(src, i, kind, bigEndian);
    }

    private static long ReadInteger(ReadOnlySpan<byte> src, int i, RawKind kind, bool be) => kind switch
    {
        RawKind.UInt8 or RawKind.Bool => src[i],
        RawKind.Int8 => (sbyte)src[i],
        RawKind.Int16 => be ? BinaryPrimitives.ReadInt16BigEndian(src[(2 * i)..]) : BinaryPrimitives.ReadInt16LittleEndian(src[(2 * i)..]),
        RawKind.UInt16 => be ? BinaryPrimitives.ReadUInt16BigEndian(src[(2 * i)..]) : BinaryPrimitives.ReadUInt16LittleEndian(src[(2 * i)..]),
        RawKind.Int32 => be ? BinaryPrimitives.ReadInt32BigEndian(src[(4 * i)..]) : BinaryPrimitives.ReadInt32LittleEndian(src[(4 * i)..]),
        RawKind.UInt32 => be ? BinaryPrimitives.ReadUInt32BigEndian(src[(4 * i)..]) : BinaryPrimitives.ReadUInt32LittleEndian(src[(4 * i)..]),
        RawKind.Int64 => be ? BinaryPrimitives.ReadInt64BigEndian(src[(8 * i)..]) : BinaryPrimitives.ReadInt64LittleEndian(src[(8 * i)..]),
        _ => throw new InvalidOperationException($"{kind} is not an integer encoding."),
    };

    /// <summary>
    /// Decodes <paramref name="count"/> elements read from <paramref name="stream"/> into a new
    /// array of the storage type of <paramref name="kind"/>, in chunks so that no second full-size
    /// copy is made. Throws <see cref="EndOfStreamException"/> when the stream ends early.
    /// </summary>
    public static Array ReadArray(Stream stream, RawKind kind, bool bigEndian, long count)
    {
        var storage = StorageOf(kind);
        Array result = Allocate(storage, count);
        int size = SizeOf(kind);
        // Straight reads where the file encoding is the storage encoding.
        if (result is byte[] bytes && size == 1 && kind == RawKind.UInt8)
        {
            stream.ReadExactly(bytes);
            return result;
        }
        if (result is float[] floats0 && kind == RawKind.Float32 && !bigEndian && BitConverter.IsLittleEndian)
        {
            stream.ReadExactly(MemoryMarshal.AsBytes(floats0.AsSpan()));
            return result;
        }
        if (result is long[] longs0 && kind == RawKind.Int64 && !bigEndian && BitConverter.IsLittleEndian)
        {
            stream.ReadExactly(MemoryMarshal.AsBytes(longs0.AsSpan()));
            return result;
        }
        const int chunkElements = 16384;
        byte[] buffer = new byte[chunkElements * size];
        for (long done = 0; done < count;)
        {
            int n = (int)Math.Min(chunkElements, count - done);
            var chunk = buffer.AsSpan(0, n * size);
            stream.ReadExactly(chunk);
            switch (result)
            {
                case byte[] b:
                    for (int i = 0; i < n; i++) b[done + i] = chunk[i] != 0 && kind == RawKind.Bool ? (byte)1 : chunk[i];
                    break;
                case float[] f: ToFloat(chunk, kind, bigEndian, f.AsSpan((int)done, n)); break;
                case long[] l: ToInt64(chunk, kind, bigEndian, l.AsSpan((int)done, n)); break;
            }
            done += n;
        }
        return result;
    }
}
