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

    public Span<T> Span<T>() where T : unmanaged => Data is T[] a ? a : throw new InvalidOperationException(
        $"buffer holds {ElemType}, not {typeof(T).Name}");

    public void Dispose() => Value.Dispose();
}
