namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// Where a data set's features come from: memory, a raw IDX file read by offset, a gzipped
/// IDX file read front to back, or a CSV file read through a row index. Shared by every
/// <see cref="Dataset"/> view over it and closed when the last one is disposed.
/// File sources decode one input as float; in-memory tensors may hold several inputs of
/// their own element types (<see cref="TensorSource"/>).
/// </summary>
internal abstract class ExampleSource
{
    private int _references = 1;

    /// <summary>One unnamed input decoded as float (IDX, CSV).</summary>
    protected ExampleSource(string name, int count, long[] featureShape, LabelStore labels)
        : this(name, count, [DatasetInput.Create(null, featureShape, DataElementType.Float32, name)], labels)
    {
    }

    protected ExampleSource(string name, int count, DatasetInput[] inputs, LabelStore labels)
    {
        if (count == 0) throw new DataException($"{name}: the data set is empty (0 examples).");
        Name = name;
        Count = count;
        Inputs = inputs;
        FeatureShape = [.. inputs[0].Shape];
        FeatureLength = inputs[0].Length;
        Labels = labels;
    }

    /// <summary>The file(s) the data came from, for messages.</summary>
    public string Name { get; }
    public int Count { get; }
    public DatasetInput[] Inputs { get; }
    /// <summary>The first input's shape and length.</summary>
    public long[] FeatureShape { get; }
    public int FeatureLength { get; }
    public LabelStore Labels { get; }

    /// <summary>True when <see cref="ReadFeatures"/> works; false for front-to-back sources.</summary>
    public abstract bool IsRandomAccess { get; }

    /// <summary>Decodes the raw feature values of example <paramref name="index"/> into <paramref name="destination"/> (length <see cref="FeatureLength"/>).</summary>
    public virtual void ReadFeatures(int index, Span<float> destination) =>
        throw new InvalidOperationException($"{Name} is streamed front to back (gzip) and has no random access; read it through a DataLoader or load it with StreamingMode.InMemory.");

    /// <summary>Input <paramref name="input"/> of example <paramref name="index"/> as float.</summary>
    public virtual void ReadInput(int input, int index, Span<float> destination) => ReadFeatures(index, destination);

    /// <summary>Input <paramref name="input"/> of example <paramref name="index"/> as integers; only inputs stored as integers.</summary>
    public virtual void ReadIds(int input, int index, Span<long> destination) =>
        throw new InvalidOperationException($"{Inputs[input].Source} holds float values, not integer ids.");

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

/// <summary>Inputs held in memory, each one [N, ...] tensor of its own element type.</summary>
internal sealed class TensorSource : ExampleSource
{
    private readonly DataTensor[] _tensors;

    /// <summary>One unnamed input.</summary>
    public TensorSource(string name, DataTensor features, long[] featureShape, LabelStore labels)
        : this(name, [DatasetInput.Create(null, featureShape, features.ElementType, features.Source ?? name)], [features], labels)
    {
    }

    public TensorSource(string name, DatasetInput[] inputs, DataTensor[] tensors, LabelStore labels)
        : base(name, checked((int)tensors[0].ShapeArray[0]), inputs, labels)
    {
        _tensors = tensors;
    }

    public override bool IsRandomAccess => true;

    public override void ReadFeatures(int index, Span<float> destination) => ReadInput(0, index, destination);

    public override void ReadInput(int input, int index, Span<float> destination)
    {
        int length = Inputs[input].Length;
        _tensors[input].CopyTo((long)index * length, destination[..length]);
    }

    public override void ReadIds(int input, int index, Span<long> destination)
    {
        int length = Inputs[input].Length;
        _tensors[input].CopyTo((long)index * length, destination[..length]);
    }
}
