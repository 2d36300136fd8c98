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
        if (dataset.IsRandomAccess)
        {
            _order = new int[count];
        }
        else if (options.Shuffle)
        {
            int size = Math.Min(options.ShuffleBufferSize, count);
            _bufferFeatures = new float[checked(size * _featureLength)];
            _bufferIndex = new int[size];
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
    /// </summary>
    /// <exception cref="InvalidOperationException">The labels are regression targets (use the float overload).</exception>
    public bool TryNextBatch(Span<float> features, Span<long> labels, out int count)
    {
        if (_dataset.LabelKind != LabelKind.ClassIndex)
            throw new InvalidOperationException($"{_dataset.Source} has regression targets; pass a Span<float> for labels.");
        return Next(features, labels, default, asClasses: true, out count);
    }

    /// <summary>
    /// As <see cref="TryNextBatch(Span{float}, Span{long}, out int)"/>, with labels written as
    /// floats: BatchSize x LabelLength values (class indices are converted).
    /// </summary>
    public bool TryNextBatch(Span<float> features, Span<float> labels, out int count) =>
        Next(features, default, labels, asClasses: false, out count);

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

    private bool Next(Span<float> features, Span<long> classes, Span<float> targets, bool asClasses, out int count)
    {
        if (features.Length < _batch * _featureLength)
            throw new ArgumentException($"The feature buffer holds {features.Length} floats; a batch needs {_batch} x {_featureLength} = {_batch * _featureLength}.", nameof(features));
        int labelsNeeded = _batch * (asClasses ? 1 : _labelWidth);
        if ((asClasses ? classes.Length : targets.Length) < labelsNeeded)
            throw new ArgumentException($"The label buffer holds {(asClasses ? classes.Length : targets.Length)} values; a batch needs {labelsNeeded}.", "labels");

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
            var dst = features.Slice(k * _featureLength, _featureLength);
            int v = NextExample(dst);
            _index++;
            if (asClasses) classes[k] = _dataset.ReadClass(v);
            else _dataset.ReadLabel(v, targets.Slice(k * _labelWidth, _labelWidth));
        }
        Skip(inBatch - before - n);
        features[(n * _featureLength)..(_batch * _featureLength)].Clear();
        if (asClasses) classes[n.._batch].Clear();
        else targets[(n * _labelWidth)..(_batch * _labelWidth)].Clear();
        count = n;
        return true;
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

    private int NextExample(Span<float> destination)
    {
        if (_order is not null)
        {
            int v = _order[_index];
            _dataset.ReadFeatures(v, destination);
            return v;
        }
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
