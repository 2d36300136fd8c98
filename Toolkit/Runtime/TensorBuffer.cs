using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// A pinned managed array and the OrtValue that views it without a copy. The OrtValue is
/// owned here and disposed with the buffer; spans handed out never outlive it.
/// </summary>
internal sealed class TensorBuffer : IDisposable
{
    private TensorBuffer(Array data, long[] shape, OrtValue value, string elemType)
    {
        Data = data;
        Shape = shape;
        Value = value;
        ElemType = elemType;
    }

    public Array Data { get; }
    public long[] Shape { get; }
    public OrtValue Value { get; }
    public string ElemType { get; }
    public long Count => Data.LongLength;

    public static TensorBuffer Create(string elemType, long[] shape, string name)
    {
        long n = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new OnnxKfacException($"tensor '{name}' has a dimension unknown at bind time (shape [{string.Join(",", shape)}])");
            n = checked(n * d);
        }
        return elemType switch
        {
            "float" => Wrap(GC.AllocateArray<float>((int)n, pinned: true), shape, elemType),
            "double" => Wrap(GC.AllocateArray<double>((int)n, pinned: true), shape, elemType),
            "int64" => Wrap(GC.AllocateArray<long>((int)n, pinned: true), shape, elemType),
            "int32" => Wrap(GC.AllocateArray<int>((int)n, pinned: true), shape, elemType),
            "bool" => Wrap(GC.AllocateArray<bool>((int)n, pinned: true), shape, elemType),
            _ => throw new OnnxKfacException($"tensor '{name}' has element type {elemType}, which the runtime does not bind"),
        };
    }

    /// <summary>Wraps an existing array (e.g. a parameter's pinned value) without copying.</summary>
    public static TensorBuffer Wrap<T>(T[] data, long[] shape, string elemType) where T : unmanaged =>
        new(data, shape, OrtValue.CreateTensorValueFromMemory(data, shape), elemType);

    /// <summary>
    /// A tensor over the first <paramref name="rows"/> entries of axis 0 of this buffer (a prefix of
    /// its memory, no copy), as an OrtValue the caller disposes; the buffer must outlive it.
    /// </summary>
    public OrtValue Rows(long rows)
    {
        if (Shape.Length == 0 || rows < 0 || rows > Shape[0])
            throw new ArgumentOutOfRangeException(nameof(rows), $"{rows} rows of a tensor shaped [{string.Join(",", Shape)}]");
        long[] shape = [rows, .. Shape[1..]];
        long count = rows;
        for (int k = 1; k < shape.Length; k++) count *= shape[k];
        return Data switch
        {
            float[] a => View(a, count, shape),
            double[] a => View(a, count, shape),
            long[] a => View(a, count, shape),
            int[] a => View(a, count, shape),
            bool[] a => View(a, count, shape),
            _ => throw new InvalidOperationException($"buffer holds {ElemType}"),
        };
    }

    private static OrtValue View<T>(T[] data, long count, long[] shape) where T : unmanaged =>
        OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, new Memory<T>(data, 0, checked((int)count)), shape);

    public Span<T> Span<T>() where T : unmanaged => Data is T[] a ? a : throw new InvalidOperationException(
        $"buffer holds {ElemType}, not {typeof(T).Name}");

    public void Dispose() => Value.Dispose();
}
