namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// Cuts a <see cref="Dataset"/> into batches, epoch after epoch, in a seeded order that is
/// reproducible and resumable (<see cref="Position"/>, <see cref="Restore"/>). Batches are
/// written into caller buffers (for instance pinned arrays handed to ONNX Runtime); once an
/// epoch has started, filling a batch allocates nothing.
/// <para>
/// Random-access data sets are permuted fully each epoch. Data sets that can only be read
/// front to back (streamed gzipped IDX) are shuffled within a bounded buffer of
/// <see cref="LoaderOptions.ShuffleBufferSize"/> examples; restoring a position in such a data
/// set replays the epoch up to that point.
/// </para>
/// The loader does not own the data set. Not thread-safe.
/// </summary>
public sealed class DataLoader : IDisposable
{
    private readonly Dataset _dataset;
    private readonly int _batch, _featureLength, _labelWidth, _epochExamples;
    private readonly int _rank, _globalBatch;   // sharding: rank r reads [r·B, r·B + B) of each global batch of K·B
    private readonly int[]? _order;            // random access: the epoch's order of view indices
    private readonly float[]? _bufferFeatures; // front-to-back + shuffle: the shuffle buffer
    private readonly int[]? _bufferIndex;
    private readonly int[] _picked;             // view indices of the batch being written
    private readonly float[]? _pickedFeatures;  // front-to-back: the batch's features, read in order
    private Dataset.ViewReader? _reader;
    private int _buffered;
    private Xoshiro256StarStar _epochStartRng, _rng;
    private int _epoch, _index;
    private bool _epochStarted;

    /// <summary>Creates a loader positioned at the start of epoch 0.</summary>
    /// <exception cref="DataException"><see cref="LoaderOptions.DropLast"/> is set and the data set holds fewer examples than one batch.</exception>
    public DataLoader(Dataset dataset, LoaderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        options ??= new LoaderOptions();
        options.Validate();
        _dataset = dataset;
        Options = options;
        _batch = options.BatchSize;
        _featureLength = dataset.FeatureLength;
        _labelWidth = dataset.LabelLength;
        int count = dataset.Count;
        _rank = options.Rank;
        _globalBatch = checked(_batch * options.Ranks);
        int global = options.DropLast ? count / _globalBatch : (count + _globalBatch - 1) / _globalBatch;
        if (global == 0)
            throw new DataException(options.Ranks == 1
                ? $"{dataset.Source}: {count} examples make no full batch of {_batch} and DropLast is set."
                : $"{dataset.Source}: {count} examples make no full global batch of {options.Ranks} ranks × {_batch} and DropLast is set.");
        _epochExamples = options.DropLast ? global * _globalBatch : count;
        // Without DropLast the last global batch may be too short to reach this rank.
        BatchesPerEpoch = !options.DropLast && _rank * _batch >= count - (global - 1) * _globalBatch ? global - 1 : global;
        _picked = new int[_batch];
        if (dataset.IsRandomAccess)
        {
            _order = new int[count];
        }
        else
        {
            _pickedFeatures = new float[checked(_batch * _featureLength)];
            if (options.Shuffle)
            {
                int size = Math.Min(options.ShuffleBufferSize, count);
                _bufferFeatures = new float[checked(size * _featureLength)];
                _bufferIndex = new int[size];
            }
        }
        _epochStartRng = Xoshiro256StarStar.FromSeed(options.Seed);
    }

    /// <summary>The options this loader was created with.</summary>
    public LoaderOptions Options { get; }

    /// <summary>Batches per epoch (the last may be short unless <see cref="LoaderOptions.DropLast"/>).</summary>
    public int BatchesPerEpoch { get; }

    /// <summary>The current zero-based epoch.</summary>
    public int Epoch => _epoch;

    /// <summary>The current position; pass it to <see cref="Restore"/> (possibly in another process) to continue from here.</summary>
    public LoaderPosition Position =>
        new(_epoch, _index, _dataset.Count, _epochStartRng.S0, _epochStartRng.S1, _epochStartRng.S2, _epochStartRng.S3);

    /// <summary>
    /// Writes the next batch of the current epoch: features into
    /// <paramref name="features"/> (at least BatchSize x FeatureLength) and class indices into
    /// <paramref name="labels"/> (at least BatchSize). Returns false, writing nothing, when the
    /// epoch is exhausted; the loader then moves to the next epoch, so the next call starts it.
    /// A short last batch writes <paramref name="count"/> examples and zeroes the rest of both buffers.
    /// For a data set with several inputs use <see cref="TryNextBatch(ReadOnlySpan{Array}, Array, out int)"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The labels are regression targets (use the float overload), or the data set has several inputs.</exception>
    public bool TryNextBatch(Span<float> features, Span<long> labels, out int count)
    {
        if (_dataset.LabelKind != LabelKind.ClassIndex)
            throw new InvalidOperationException($"{_dataset.Source} has regression targets; pass a Span<float> for labels.");
        CheckSingleInput();
        CheckLength(features.Length, _featureLength, "feature", nameof(features));
        CheckLength(labels.Length, _labelWidth, "label", nameof(labels));
        if (!Pick(out count)) return false;
        WriteInput(0, features, count);
        WriteClasses(labels, count);
        return true;
    }

    /// <summary>
    /// As <see cref="TryNextBatch(Span{float}, Span{long}, out int)"/>, with labels written as
    /// floats: BatchSize x LabelLength values (class indices are converted).
    /// </summary>
    public bool TryNextBatch(Span<float> features, Span<float> labels, out int count)
    {
        CheckSingleInput();
        CheckLength(features.Length, _featureLength, "feature", nameof(features));
        CheckLength(labels.Length, _labelWidth, "label", nameof(labels));
        if (!Pick(out count)) return false;
        WriteInput(0, features, count);
        WriteTargets(labels, count);
        return true;
    }

    /// <summary>
    /// Writes the next batch of a data set with any number of inputs: <paramref name="inputs"/>[i]
    /// receives <see cref="Dataset.Inputs"/>[i] (at least BatchSize x its length), a <c>float[]</c>
    /// (values converted and normalized) or a <c>long[]</c> (integer inputs only, copied exactly);
    /// <paramref name="labels"/> is a <c>long[]</c> of class indices or a <c>float[]</c> of
    /// BatchSize x LabelLength values. Otherwise as <see cref="TryNextBatch(Span{float}, Span{long}, out int)"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The wrong number of buffers, a buffer of another type or too short, or a <c>long[]</c> for float data.</exception>
    public bool TryNextBatch(ReadOnlySpan<Array> inputs, Array labels, out int count)
    {
        var declared = _dataset.Inputs;
        if (inputs.Length != declared.Count)
            throw new ArgumentException($"{_dataset.Source} has {declared.Count} input(s); {inputs.Length} buffers were given.", nameof(inputs));
        for (int i = 0; i < inputs.Length; i++)
        {
            if (inputs[i] is long[] && !declared[i].IsInteger)
                throw new ArgumentException($"{declared[i].Source} holds float values; they are not copied into integer ids (input {i}).", nameof(inputs));
            if (inputs[i] is not (float[] or long[]))
                throw new ArgumentException($"input buffer {i} must be a float[] or a long[], not {inputs[i]?.GetType().Name ?? "null"}.", nameof(inputs));
            if (inputs[i].Length < _batch * declared[i].Length)   // the message only when thrown: a batch allocates nothing
                CheckLength(inputs[i].Length, declared[i].Length, $"input {i}", nameof(inputs));
        }
        switch (labels)
        {
            case long[] l:
                if (_dataset.LabelKind != LabelKind.ClassIndex)
                    throw new ArgumentException($"{_dataset.Source} has regression targets; pass a float[] for labels.", nameof(labels));
                CheckLength(l.Length, _labelWidth, "label", nameof(labels));
                break;
            case float[] f: CheckLength(f.Length, _labelWidth, "label", nameof(labels)); break;
            default: throw new ArgumentException($"the label buffer must be a long[] or a float[], not {labels?.GetType().Name ?? "null"}.", nameof(labels));
        }
        if (!Pick(out count)) return false;
        for (int i = 0; i < inputs.Length; i++)
        {
            if (inputs[i] is float[] f) WriteInput(i, f, count);
            else WriteIds(i, (long[])inputs[i], count);
        }
        if (labels is long[] classes) WriteClasses(classes, count);
        else WriteTargets((float[])labels, count);
        return true;
    }

    /// <summary>
    /// Moves to <paramref name="position"/> (from <see cref="Position"/>, possibly of another
    /// loader with the same data set and options), so that the following batches are exactly
    /// those that followed it.
    /// </summary>
    /// <exception cref="DataException">The position belongs to a data set of another size or is out of range.</exception>
    public void Restore(LoaderPosition position)
    {
        if (position.DatasetCount != _dataset.Count)
            throw new DataException($"{_dataset.Source}: the loader position is for a data set of {position.DatasetCount} examples, this one has {_dataset.Count}.");
        if (position.Epoch < 0 || position.Index < 0 || position.Index > _epochExamples)
            throw new DataException($"{_dataset.Source}: loader position epoch {position.Epoch}, index {position.Index} is out of range (an epoch has {_epochExamples} examples).");
        if ((position.Rng0 | position.Rng1 | position.Rng2 | position.Rng3) == 0)
            throw new DataException($"{_dataset.Source}: the loader position has an all-zero generator state.");
        CloseReader();
        _epoch = position.Epoch;
        _epochStartRng = new Xoshiro256StarStar(position.Rng0, position.Rng1, position.Rng2, position.Rng3);
        StartEpoch();
        if (_order is not null)
        {
            _index = position.Index;
            return;
        }
        for (int i = 0; i < position.Index; i++) SkipSequential();
        _index = position.Index;
    }

    /// <summary>Closes the file reader of a streamed data set, if one is open. The data set itself stays open.</summary>
    public void Dispose() => CloseReader();

    private void CheckSingleInput()
    {
        if (_dataset.Inputs.Count != 1)
            throw new InvalidOperationException($"{_dataset.Source} has {_dataset.Inputs.Count} inputs; fill them with TryNextBatch(ReadOnlySpan<Array>, Array, out int).");
    }

    private void CheckLength(int have, int perExample, string what, string parameter)
    {
        if (have < _batch * perExample)
            throw new ArgumentException($"The {what} buffer holds {have} values; a batch needs {_batch} x {perExample} = {_batch * perExample}.", parameter);
    }

    /// <summary>
    /// Chooses this rank's examples of the next batch: their view indices into <see cref="_picked"/>
    /// and, for a front-to-back data set, their features into <see cref="_pickedFeatures"/>.
    /// False (and the next epoch begins) when the epoch is exhausted.
    /// </summary>
    private bool Pick(out int count)
    {
        if (!_epochStarted) StartEpoch();
        int inBatch = Math.Min(_globalBatch, _epochExamples - _index);
        int before = Math.Min(_rank * _batch, Math.Max(inBatch, 0));
        int n = Math.Min(_batch, inBatch - before);
        if (n <= 0)
        {
            if (inBatch > 0) Skip(inBatch);   // a last global batch too short to reach this rank
            EndEpoch();
            count = 0;
            return false;
        }
        Skip(before);
        for (int k = 0; k < n; k++)
        {
            _picked[k] = NextExample(_pickedFeatures is null ? default : _pickedFeatures.AsSpan(k * _featureLength, _featureLength));
            _index++;
        }
        Skip(inBatch - before - n);
        count = n;
        return true;
    }

    /// <summary>Writes input <paramref name="input"/> of the picked examples as float and zeroes the rest of the batch.</summary>
    private void WriteInput(int input, Span<float> destination, int n)
    {
        int length = _dataset.Inputs[input].Length;
        if (_pickedFeatures is not null)
            _pickedFeatures.AsSpan(0, n * length).CopyTo(destination);   // front to back: one input, already read
        else
            for (int k = 0; k < n; k++) _dataset.ReadInput(input, _picked[k], destination.Slice(k * length, length));
        destination[(n * length)..(_batch * length)].Clear();
    }

    /// <summary>Writes integer input <paramref name="input"/> of the picked examples as ids and zeroes the rest of the batch.</summary>
    private void WriteIds(int input, Span<long> destination, int n)
    {
        int length = _dataset.Inputs[input].Length;
        for (int k = 0; k < n; k++) _dataset.ReadIds(input, _picked[k], destination.Slice(k * length, length));
        destination[(n * length)..(_batch * length)].Clear();
    }

    private void WriteClasses(Span<long> destination, int n)
    {
        for (int k = 0; k < n; k++) _dataset.ReadClasses(_picked[k], destination.Slice(k * _labelWidth, _labelWidth));
        destination[(n * _labelWidth)..(_batch * _labelWidth)].Clear();
    }

    private void WriteTargets(Span<float> destination, int n)
    {
        for (int k = 0; k < n; k++) _dataset.ReadLabel(_picked[k], destination.Slice(k * _labelWidth, _labelWidth));
        destination[(n * _labelWidth)..(_batch * _labelWidth)].Clear();
    }

    private void StartEpoch()
    {
        _rng = _epochStartRng;
        _index = 0;
        if (_order is not null)
        {
            for (int i = 0; i < _order.Length; i++) _order[i] = i;
            if (Options.Shuffle) _rng.Shuffle(_order);
        }
        else
        {
            _reader = _dataset.OpenReader();
            _buffered = 0;
            if (_bufferFeatures is not null)
            {
                while (_buffered < _bufferIndex!.Length &&
                       _reader.TryRead(_bufferFeatures.AsSpan(_buffered * _featureLength, _featureLength), out int v))
                {
                    _bufferIndex[_buffered++] = v;
                }
            }
        }
        _epochStarted = true;
    }

    private void EndEpoch()
    {
        CloseReader();
        _epoch++;
        _index = 0;
        _epochStartRng = _rng;
        _epochStarted = false;
    }

    /// <summary>The view index of the next example; a front-to-back data set also reads its features into <paramref name="destination"/>.</summary>
    private int NextExample(Span<float> destination)
    {
        if (_order is not null) return _order[_index];
        if (_bufferFeatures is null)
        {
            if (!_reader!.TryRead(destination, out int v)) throw Exhausted();
            return v;
        }
        int j = _rng.NextInt(_buffered);
        _bufferFeatures.AsSpan(j * _featureLength, _featureLength).CopyTo(destination);
        int result = _bufferIndex![j];
        Refill(j);
        return result;
    }

    /// <summary>Passes over <paramref name="examples"/> examples of the epoch's order (other ranks' shares).</summary>
    private void Skip(int examples)
    {
        if (_order is null)
            for (int i = 0; i < examples; i++) SkipSequential();
        _index += examples;
    }

    private void SkipSequential()
    {
        if (_bufferFeatures is null)
        {
            if (!_reader!.TrySkip()) throw Exhausted();
            return;
        }
        Refill(_rng.NextInt(_buffered));
    }

    /// <summary>Replaces buffer slot <paramref name="j"/> with the next example read, or with the last slot when the file is done.</summary>
    private void Refill(int j)
    {
        var slot = _bufferFeatures.AsSpan(j * _featureLength, _featureLength);
        if (_reader!.TryRead(slot, out int v))
        {
            _bufferIndex![j] = v;
            return;
        }
        _buffered--;
        if (j != _buffered)
        {
            _bufferFeatures.AsSpan(_buffered * _featureLength, _featureLength).CopyTo(slot);
            _bufferIndex![j] = _bufferIndex[_buffered];
        }
    }

    private void CloseReader()
    {
        _reader?.Dispose();
        _reader = null;
    }

    private DataException Exhausted() =>
        new($"{_dataset.Source}: the file ended after fewer examples than the {_dataset.Count} it declares.");
}
