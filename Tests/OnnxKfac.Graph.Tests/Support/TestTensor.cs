using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph.Model;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Tests.Support;

/// <summary>A test tensor: element type, shape and values held as doubles.</summary>
public sealed record TestTensor(int ElemType, long[] Shape, double[] Data)
{
    public long Count => TensorData.ElementCount(Shape);

    public static TestTensor Double(long[] shape, double[] data) => new((int)DataType.Double, shape, data);
    public static TestTensor Float(long[] shape, double[] data) => new((int)DataType.Float, shape, data);
    public static TestTensor Int64(long[] shape, params long[] data) => new((int)DataType.Int64, shape, data.Select(x => (double)x).ToArray());

    /// <summary>Uniform values in [lo, hi) from a seeded generator.</summary>
    public static TestTensor Random(int elemType, long[] shape, int seed, double lo = -1, double hi = 1)
    {
        var rng = new Random(seed);
        long n = TensorData.ElementCount(shape);
        return new TestTensor(elemType, shape, Enumerable.Range(0, (int)n).Select(_ => lo + (hi - lo) * rng.NextDouble()).ToArray());
    }

    public TestTensor With(int index, double value)
    {
        var d = (double[])Data.Clone();
        d[index] = value;
        return this with { Data = d };
    }

    public static TestTensor FromProto(OnnxKfac.Graph.Proto.TensorProto t) => new(t.DataType, t.Dims.ToArray(), TensorData.ToDoubles(t));

    public OrtValue ToOrtValue() => ElemType switch
    {
        (int)DataType.Double => OrtValue.CreateTensorValueFromMemory(Data.ToArray(), Shape),
        (int)DataType.Float => OrtValue.CreateTensorValueFromMemory(Data.Select(x => (float)x).ToArray(), Shape),
        (int)DataType.Int64 => OrtValue.CreateTensorValueFromMemory(Data.Select(x => (long)x).ToArray(), Shape),
        (int)DataType.Int32 => OrtValue.CreateTensorValueFromMemory(Data.Select(x => (int)x).ToArray(), Shape),
        (int)DataType.Bool => OrtValue.CreateTensorValueFromMemory(Data.Select(x => x != 0).ToArray(), Shape),
        _ => throw new NotSupportedException($"element type {ElemType}"),
    };

    public static TestTensor FromOrtValue(OrtValue v)
    {
        var info = v.GetTensorTypeAndShape();
        long[] shape = info.Shape;
        double[] data = info.ElementDataType switch
        {
            TensorElementType.Double => v.GetTensorDataAsSpan<double>().ToArray(),
            TensorElementType.Float => v.GetTensorDataAsSpan<float>().ToArray().Select(x => (double)x).ToArray(),
            TensorElementType.Int64 => v.GetTensorDataAsSpan<long>().ToArray().Select(x => (double)x).ToArray(),
            TensorElementType.Int32 => v.GetTensorDataAsSpan<int>().ToArray().Select(x => (double)x).ToArray(),
            TensorElementType.Bool => v.GetTensorDataAsSpan<bool>().ToArray().Select(x => x ? 1.0 : 0.0).ToArray(),
            _ => throw new NotSupportedException(info.ElementDataType.ToString()),
        };
        int type = info.ElementDataType switch
        {
            TensorElementType.Double => (int)DataType.Double,
            TensorElementType.Float => (int)DataType.Float,
            TensorElementType.Int64 => (int)DataType.Int64,
            TensorElementType.Int32 => (int)DataType.Int32,
            _ => (int)DataType.Bool,
        };
        return new TestTensor(type, shape, data);
    }
}
