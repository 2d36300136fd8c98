namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// Where a data set's features come from: memory, a raw IDX file read by offset, a gzipped
/// IDX file read front to back, or a CSV file read through a row index. Shared by every
/// <see cref="Dataset"/> view over it and closed when the last one is disposed.
/// </summary>
internal abstract class ExampleSource
{
    private int _references = 1;

    protected ExampleSource(string name, int count, long[] featureShape, LabelStore labels)
    {
        if (count == 0) throw new DataException($"{name}: the data set is empty (0 examples).");
        Name = name;
        Count = count;
        FeatureShape = featureShape;
        long length = 1;
        foreach (long d in featureShape) length = checked(length * d);
        if (length == 0) throw new DataException($"{name}: examples have no feature elements (shape [{string.Join(", ", featureShape)}]).");
        FeatureLength = checked((int)length);
        Labels = labels;
    }

    /// <summary>The file(s) the data came from, for messages.</summary>
    public string Name { get; }
    public int Count { get; }
    public long[] FeatureShape { get; }
    public int FeatureLength { get; }
    public LabelStore Labels { get; }

    /// <summary>True when <see cref="ReadFeatures"/> works; false for front-to-back sources.</summary>
    public abstract bool IsRandomAccess { get; }

    /// <summary>Decodes the raw feature values of example <paramref name="index"/> into <paramref name="destination"/> (length <see cref="FeatureLength"/>).</summary>
    public virtual void ReadFeatures(int index, Span<float> destination) =>
        throw new InvalidOperationException($"{Name} is streamed front to back (gzip) and has no random access; read it through a DataLoader or load it with StreamingMode.InMemory.");

    /// <summary>A reader over every example in order. Random-access sources get one for free.</summary>
    public virtual SequentialReader OpenSequential() => new RandomAccessReader(this);

    public void AddReference()
    {
        if (Interlocked.Increment(ref _references) <= 1)
            throw new ObjectDisposedException(Name);
    }

    public void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0) Close();
    }

    protected void ThrowIfClosed()
    {
        if (Volatile.Read(ref _references) <= 0) throw new ObjectDisposedException(Name, $"The data set over {Name} has been disposed.");
    }

    /// <summary>Releases files; called once, when the last data set over this source is disposed.</summary>
    protected virtual void Close() { }

    private sealed class RandomAccessReader(ExampleSource source) : SequentialReader
    {
        public override void Read(Span<float> destination) => source.ReadFeatures(Position++, destination);
        public override void Skip() => Position++;
    }
}

/// <summary>Reads a source's examples front to back. <see cref="Position"/> is the index of the next example.</summary>
internal abstract class SequentialReader : IDisposable
{
    public int Position { get; protected set; }
    public abstract void Read(Span<float> destination);
    public abstract void Skip();
    public virtual void Dispose() { }
}

/// <summary>Features held in memory as one [N, ...] tensor.</summary>
internal sealed class TensorSource : ExampleSource
{
    private readonly DataTensor _features;

    public TensorSource(string name, DataTensor features, long[] featureShape, LabelStore labels)
        : base(name, checked((int)features.ShapeArray[0]), featureShape, labels)
    {
        _features = features;
    }

    public override bool IsRandomAccess => true;

    public override void ReadFeatures(int index, Span<float> destination) =>
        _features.CopyTo((long)index * FeatureLength, destination[..FeatureLength]);
}
