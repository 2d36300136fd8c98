using System.Collections.ObjectModel;

namespace OnnxKfac.Toolkit.Data;

/// <summary>How a <see cref="DataTensor"/> stores its elements.</summary>
public enum DataElementType
{
    /// <summary>Unsigned bytes (IDX ubyte, NumPy <c>|u1</c> and <c>|b1</c>, ONNX UINT8 and BOOL). Kept compact: images stay one byte per pixel until a batch is filled.</summary>
    UInt8,
    /// <summary>64-bit signed integers (every other integer type is widened to this).</summary>
    Int64,
    /// <summary>32-bit floats (float64 and float16 sources are converted to this).</summary>
    Float32,
}

/// <summary>
/// A dense, C-ordered (row-major) tensor held in memory, as read from an IDX, NPY/NPZ or ONNX
/// TensorProto file. The array it wraps is shared, not copied.
/// </summary>
public sealed class DataTensor
{
    private readonly Array _data;
    private readonly long[] _shape;

    private DataTensor(DataElementType type, Array data, long[] shape, string? source)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ArgumentException($"Dimension {d} in shape [{string.Join(", ", shape)}] is negative.", nameof(shape));
            count = checked(count * d);
        }
        if (count != data.LongLength)
            throw new ArgumentException($"Shape [{string.Join(", ", shape)}] holds {count} elements but the data has {data.LongLength}.", nameof(shape));
        ElementType = type;
        _data = data;
        _shape = (long[])shape.Clone();
        Shape = Array.AsReadOnly(_shape);
        Source = source;
    }

    /// <summary>Wraps <paramref name="data"/> (not copied) as a float tensor of the given shape.</summary>
    public static DataTensor FromFloat(float[] data, params long[] shape) => new(DataElementType.Float32, data ?? throw new ArgumentNullException(nameof(data)), shape, null);

    /// <summary>Wraps <paramref name="data"/> (not copied) as an int64 tensor of the given shape.</summary>
    public static DataTensor FromInt64(long[] data, params long[] shape) => new(DataElementType.Int64, data ?? throw new ArgumentNullException(nameof(data)), shape, null);

    /// <summary>Wraps <paramref name="data"/> (not copied) as a byte tensor of the given shape.</summary>
    public static DataTensor FromBytes(byte[] data, params long[] shape) => new(DataElementType.UInt8, data ?? throw new ArgumentNullException(nameof(data)), shape, null);

    internal static DataTensor Create(Array data, long[] shape, string source) => data switch
    {
        float[] => new DataTensor(DataElementType.Float32, data, shape, source),
        long[] => new DataTensor(DataElementType.Int64, data, shape, source),
        byte[] => new DataTensor(DataElementType.UInt8, data, shape, source),
        _ => throw new ArgumentException($"Unsupported array type {data.GetType()}."),
    };

    /// <summary>How the elements are stored.</summary>
    public DataElementType ElementType { get; }

    /// <summary>The dimensions, outermost first. Empty for a scalar.</summary>
    public ReadOnlyCollection<long> Shape { get; }

    /// <summary>Number of elements (the product of <see cref="Shape"/>).</summary>
    public long Length => _data.LongLength;

    /// <summary>Where the tensor was read from (file, and entry inside an archive), or null when built in memory. Used in error messages.</summary>
    public string? Source { get; }

    /// <summary>The elements of a <see cref="DataElementType.Float32"/> tensor.</summary>
    /// <exception cref="InvalidOperationException">The tensor holds another element type.</exception>
    public ReadOnlySpan<float> AsFloats() => _data as float[] ?? throw WrongType(DataElementType.Float32);

    /// <summary>The elements of an <see cref="DataElementType.Int64"/> tensor.</summary>
    /// <exception cref="InvalidOperationException">The tensor holds another element type.</exception>
    public ReadOnlySpan<long> AsInt64s() => _data as long[] ?? throw WrongType(DataElementType.Int64);

    /// <summary>The elements of a <see cref="DataElementType.UInt8"/> tensor.</summary>
    /// <exception cref="InvalidOperationException">The tensor holds another element type.</exception>
    public ReadOnlySpan<byte> AsBytes() => _data as byte[] ?? throw WrongType(DataElementType.UInt8);

    /// <summary>A new float array holding every element converted to float.</summary>
    public float[] ToFloatArray()
    {
        var result = new float[_data.LongLength];
        CopyTo(0, result);
        return result;
    }

    internal Array Data => _data;

    internal long[] ShapeArray => _shape;

    /// <summary>Converts elements [start, start + destination.Length) to float.</summary>
    internal void CopyTo(long start, Span<float> destination)
    {
        switch (_data)
        {
            case float[] f: f.AsSpan(checked((int)start), destination.Length).CopyTo(destination); break;
            case byte[] b: ElementConvert.Widen(b.AsSpan(checked((int)start), destination.Length), destination); break;
            case long[] l:
                var src = l.AsSpan(checked((int)start), destination.Length);
                for (int i = 0; i < src.Length; i++) destination[i] = src[i];
                break;
        }
    }

    /// <summary>Copies integer elements [start, start + destination.Length) as int64.</summary>
    /// <exception cref="InvalidOperationException">The tensor holds floats.</exception>
    internal void CopyTo(long start, Span<long> destination)
    {
        switch (_data)
        {
            case long[] l: l.AsSpan(checked((int)start), destination.Length).CopyTo(destination); break;
            case byte[] b:
                var src = b.AsSpan(checked((int)start), destination.Length);
                for (int i = 0; i < src.Length; i++) destination[i] = src[i];
                break;
            default: throw WrongType(DataElementType.Int64);
        }
    }

    internal DataTensor WithSource(string source) => new(ElementType, _data, _shape, source);

    internal string Describe() => Source ?? "in-memory tensor";

    private InvalidOperationException WrongType(DataElementType wanted) =>
        new($"{Describe()} holds {ElementType} elements, not {wanted}.");
}
