using System.Runtime.InteropServices;
using System.Text;

namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// A serialisable snapshot of an optimizer's state: named float tensors (moment buffers,
/// Kronecker factors...), named doubles and named longs, plus the <see cref="Kind"/> of
/// optimizer that wrote it and the shapes of the parameters it was written for, so that
/// loading it into another optimizer or another model fails clearly. Names are compared
/// ordinally; <see cref="Write"/> orders every table by name, so equal states give
/// byte-identical files.
/// </summary>
public sealed class OptimizerState
{
    private const uint Magic = 0x534F4B4F; // "OKOS" little-endian
    private const int Version = 2; // 2 added float64 tensors (K-FAC's factors)

    /// <param name="kind">The optimizer kind, e.g. "sgd" or "adamw".</param>
    public OptimizerState(string kind)
    {
        ArgumentException.ThrowIfNullOrEmpty(kind);
        Kind = kind;
    }

    /// <summary>The optimizer kind that wrote the state ("sgd", "adamw", ...).</summary>
    public string Kind { get; }

    /// <summary>The parameters the state belongs to: name → shape.</summary>
    public IDictionary<string, long[]> ParameterShapes { get; } = new SortedDictionary<string, long[]>(StringComparer.Ordinal);

    /// <summary>Named float tensors.</summary>
    public IDictionary<string, float[]> Tensors { get; } = new SortedDictionary<string, float[]>(StringComparer.Ordinal);

    /// <summary>Named float64 tensors (running Kronecker factors...).</summary>
    public IDictionary<string, double[]> DoubleTensors { get; } = new SortedDictionary<string, double[]>(StringComparer.Ordinal);

    /// <summary>Named real scalars.</summary>
    public IDictionary<string, double> Doubles { get; } = new SortedDictionary<string, double>(StringComparer.Ordinal);

    /// <summary>Named integer scalars (step counts...).</summary>
    public IDictionary<string, long> Longs { get; } = new SortedDictionary<string, long>(StringComparer.Ordinal);

    /// <summary>Writes the state in a little-endian binary format (versioned, ordered by name).</summary>
    public void Write(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(Magic);
        writer.Write(Version);
        writer.Write(Kind);

        writer.Write(ParameterShapes.Count);
        foreach (var (name, shape) in Ordered(ParameterShapes))
        {
            writer.Write(name);
            writer.Write(shape.Length);
            foreach (long d in shape) writer.Write(d);
        }

        writer.Write(Tensors.Count);
        foreach (var (name, data) in Ordered(Tensors))
        {
            writer.Write(name);
            writer.Write(data.Length);
            if (BitConverter.IsLittleEndian)
                writer.Write(MemoryMarshal.AsBytes(data.AsSpan()));
            else
                foreach (float x in data) writer.Write(x);
        }

        writer.Write(DoubleTensors.Count);
        foreach (var (name, data) in Ordered(DoubleTensors))
        {
            writer.Write(name);
            writer.Write(data.Length);
            if (BitConverter.IsLittleEndian)
                writer.Write(MemoryMarshal.AsBytes(data.AsSpan()));
            else
                foreach (double x in data) writer.Write(x);
        }

        writer.Write(Doubles.Count);
        foreach (var (name, x) in Ordered(Doubles)) { writer.Write(name); writer.Write(x); }

        writer.Write(Longs.Count);
        foreach (var (name, x) in Ordered(Longs)) { writer.Write(name); writer.Write(x); }
    }

    /// <summary>Reads a state written by <see cref="Write"/>; throws <see cref="InvalidDataException"/> on a malformed stream.</summary>
    public static OptimizerState Read(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        try
        {
            if (reader.ReadUInt32() != Magic)
                throw new InvalidDataException("Not an optimizer state: bad magic number.");
            int version = reader.ReadInt32();
            if (version is not (1 or Version))
                throw new InvalidDataException($"Optimizer state version {version} is not supported (expected {Version}).");
            var state = new OptimizerState(reader.ReadString());

            int shapes = Count(reader, "parameter shapes");
            for (int i = 0; i < shapes; i++)
            {
                string name = reader.ReadString();
                int rank = Count(reader, $"rank of '{name}'");
                var shape = new long[rank];
                for (int d = 0; d < rank; d++) shape[d] = reader.ReadInt64();
                Add(state.ParameterShapes, name, shape, "parameter");
            }

            int tensors = Count(reader, "tensors");
            for (int i = 0; i < tensors; i++)
            {
                string name = reader.ReadString();
                int length = Count(reader, $"length of tensor '{name}'");
                if ((long)length * sizeof(float) > reader.BaseStream.Length - reader.BaseStream.Position && reader.BaseStream.CanSeek)
                    throw new InvalidDataException($"Optimizer state is truncated inside tensor '{name}'.");
                var data = new float[length];
                if (BitConverter.IsLittleEndian)
                {
                    var bytes = MemoryMarshal.AsBytes(data.AsSpan());
                    reader.BaseStream.ReadExactly(bytes);
                }
                else
                    for (int k = 0; k < length; k++) data[k] = reader.ReadSingle();
                Add(state.Tensors, name, data, "tensor");
            }

            int doubleTensors = version >= 2 ? Count(reader, "float64 tensors") : 0;
            for (int i = 0; i < doubleTensors; i++)
            {
                string name = reader.ReadString();
                int length = Count(reader, $"length of tensor '{name}'");
                if ((long)length * sizeof(double) > reader.BaseStream.Length - reader.BaseStream.Position && reader.BaseStream.CanSeek)
                    throw new InvalidDataException($"Optimizer state is truncated inside tensor '{name}'.");
                var data = new double[length];
                if (BitConverter.IsLittleEndian)
                    reader.BaseStream.ReadExactly(MemoryMarshal.AsBytes(data.AsSpan()));
                else
                    for (int k = 0; k < length; k++) data[k] = reader.ReadDouble();
                Add(state.DoubleTensors, name, data, "tensor");
            }

            int doubles = Count(reader, "doubles");
            for (int i = 0; i < doubles; i++) { string name = reader.ReadString(); Add(state.Doubles, name, reader.ReadDouble(), "double"); }

            int longs = Count(reader, "longs");
            for (int i = 0; i < longs; i++) { string name = reader.ReadString(); Add(state.Longs, name, reader.ReadInt64(), "long"); }
            return state;
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("Optimizer state is truncated.", e);
        }
    }

    /// <summary>Writes the state to a file (see <see cref="Write"/>).</summary>
    public void Save(string path)
    {
        using var stream = File.Create(path);
        using var writer = new BinaryWriter(stream, Encoding.UTF8);
        Write(writer);
    }

    /// <summary>Reads a state file written by <see cref="Save"/>.</summary>
    public static OptimizerState Load(string path)
    {
        using var stream = File.OpenRead(path);
        using var reader = new BinaryReader(stream, Encoding.UTF8);
        try
        {
            return Read(reader);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }

    private static IEnumerable<KeyValuePair<string, T>> Ordered<T>(IDictionary<string, T> table) =>
        table.OrderBy(kv => kv.Key, StringComparer.Ordinal);

    private static int Count(BinaryReader reader, string what)
    {
        int n = reader.ReadInt32();
        if (n < 0) throw new InvalidDataException($"Optimizer state has a negative count of {what}.");
        return n;
    }

    private static void Add<T>(IDictionary<string, T> table, string name, T value, string what)
    {
        if (!table.TryAdd(name, value))
            throw new InvalidDataException($"Optimizer state names {what} '{name}' twice.");
    }
}
