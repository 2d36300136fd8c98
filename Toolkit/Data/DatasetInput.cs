using System.Collections.ObjectModel;

namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// One input of a data set's examples: a block of <see cref="Length"/> values of
/// <see cref="Shape"/> per example, fed to the model input called <see cref="Name"/>
/// (null: the model's only data input). Data sets read from IDX or CSV files have one unnamed
/// input decoded as float; <see cref="Dataset.FromTensors(IEnumerable{KeyValuePair{string, DataTensor}}, DataTensor, DataOptions?)"/>
/// gives one named input per tensor, keeping its element type, so that integer token ids
/// reach an int64 model input exactly.
/// </summary>
public sealed record DatasetInput
{
    private DatasetInput(string? name, ReadOnlyCollection<long> shape, int length, DataElementType elementType, string source)
    {
        Name = name; Shape = shape; Length = length; ElementType = elementType; Source = source;
    }

    /// <summary>The model input this block feeds, or null for the model's only data input.</summary>
    public string? Name { get; }

    /// <summary>The shape of one example's block (no batch dimension).</summary>
    public ReadOnlyCollection<long> Shape { get; }

    /// <summary>Values per example (the product of <see cref="Shape"/>).</summary>
    public int Length { get; }

    /// <summary>How the values are stored: integers (<see cref="DataElementType.Int64"/>, <see cref="DataElementType.UInt8"/>) can feed int64 and float inputs, floats only float inputs.</summary>
    public DataElementType ElementType { get; }

    /// <summary>Where the values came from (file, archive entry), for messages.</summary>
    public string Source { get; }

    /// <summary>True when the values are stored as integers.</summary>
    public bool IsInteger => ElementType != DataElementType.Float32;

    internal static DatasetInput Create(string? name, long[] shape, DataElementType type, string source)
    {
        long length = 1;
        foreach (long d in shape) length = checked(length * d);
        if (length == 0) throw new DataException($"{source}: examples have no feature elements (shape [{string.Join(", ", shape)}]).");
        if (length > int.MaxValue) throw new DataException($"{source}: {length} values per example is more than the {int.MaxValue} supported.");
        return new DatasetInput(name, Array.AsReadOnly((long[])shape.Clone()), (int)length, type, source);
    }
}
