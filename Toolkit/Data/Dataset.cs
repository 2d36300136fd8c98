using System.Collections.ObjectModel;
using System.Numerics;

namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// A labelled data set: <see cref="Count"/> examples, each a float feature block of
/// <see cref="FeatureShape"/> and a label. Built by the readers (<see cref="Idx"/>,
/// <see cref="Csv"/>, <see cref="FromTensors"/>) and narrowed by <see cref="Split(double, ulong)"/>
/// and <see cref="WithNormalization"/>, which return views sharing the same storage and files.
/// Examples are copied into caller buffers without allocating; a <see cref="DataLoader"/> fills
/// whole batches. Not thread-safe: give each thread its own view or loader.
/// Dispose every data set you create; files close when the last view over them is disposed.
/// </summary>
public sealed class Dataset : IDisposable
{
    private readonly ExampleSource _source;
    private readonly int[]? _indices; // ascending source indices of this view; null = all
    private readonly float[]? _mul, _add;
    private int _disposed;

    internal Dataset(ExampleSource source, int[]? indices = null, Normalization? normalization = null)
    {
        _source = source;
        _indices = indices;
        FeatureShape = Array.AsReadOnly((long[])source.FeatureShape.Clone());
        if (normalization is not null)
        {
            (_mul, _add) = normalization.Expand(this);
            Normalization = normalization;
        }
    }

    /// <summary>
    /// A data set over in-memory tensors: <paramref name="features"/> of shape [N, ...] and
    /// <paramref name="labels"/> of shape [N] (class indices or one target) or [N, k] (targets).
    /// The tensors are shared, not copied. Labels are class indices when they are integers and
    /// regression targets when float, unless <see cref="DataOptions.LabelKind"/> says otherwise.
    /// </summary>
    /// <exception cref="DataException">N is 0, the counts differ, a label is out of range, or the shape does not match <see cref="DataOptions.ExpectedFeatureShape"/>.</exception>
    public static Dataset FromTensors(DataTensor features, DataTensor labels, DataOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(labels);
        options ??= DataOptions.Default;
        string name = features.Describe();
        if (features.ShapeArray.Length == 0)
            throw new DataException($"{name}: features must have shape [N, ...], found a scalar.");
        long n = features.ShapeArray[0];
        if (n == 0) throw new DataException($"{name}: the data set is empty (0 examples).");
        if (n > int.MaxValue) throw new DataException($"{name}: {n} examples is more than the {int.MaxValue} supported.");
        string labelName = labels.Describe();
        if (labels.ShapeArray.Length > 0 && labels.ShapeArray[0] != n)
            throw new DataException($"{name} has {n} examples but {labelName} has {labels.ShapeArray[0]} labels; the counts must match.");
        var store = LabelStore.FromTensor(labels, (int)n, options, labelName);
        var shape = ResolveShape(features.ShapeArray[1..], options, name);
        return new Dataset(new TensorSource(name, features, shape, store));
    }

    /// <summary>
    /// A data set over in-memory tensors, one per model input: each of
    /// <paramref name="inputs"/> maps a model input's name to a tensor of shape [N, ...] whose
    /// element type is kept (integer token ids stay integers); <paramref name="labels"/> as in
    /// <see cref="FromTensors(DataTensor, DataTensor, DataOptions?)"/>. The tensors are shared,
    /// not copied. <see cref="DataOptions.ExpectedFeatureShape"/> applies to a single input only.
    /// </summary>
    /// <exception cref="DataException">No inputs, a repeated name, N is 0, or the counts differ.</exception>
    public static Dataset FromTensors(IEnumerable<KeyValuePair<string, DataTensor>> inputs, DataTensor labels, DataOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(labels);
        options ??= DataOptions.Default;
        var list = inputs.ToArray();
        if (list.Length == 0) throw new DataException("a data set needs at least one input tensor.");
        var names = new HashSet<string>(StringComparer.Ordinal);
        var described = new DatasetInput[list.Length];
        long n = -1;
        for (int k = 0; k < list.Length; k++)
        {
            var (name, tensor) = (list[k].Key, list[k].Value);
            ArgumentException.ThrowIfNullOrEmpty(name);
            ArgumentNullException.ThrowIfNull(tensor);
            string where = tensor.Describe();
            if (!names.Add(name)) throw new DataException($"{where}: input '{name}' is given twice.");
            if (tensor.ShapeArray.Length == 0) throw new DataException($"{where}: input '{name}' must have shape [N, ...], found a scalar.");
            long count = tensor.ShapeArray[0];
            if (n >= 0 && count != n)
                throw new DataException($"{where}: input '{name}' has {count} examples but input '{list[0].Key}' ({described[0].Source}) has {n}; the counts must match.");
            n = count;
            var shape = list.Length == 1 ? ResolveShape(tensor.ShapeArray[1..], options, where) : tensor.ShapeArray[1..];
            described[k] = DatasetInput.Create(name, shape, tensor.ElementType, where);
        }
        if (n == 0) throw new DataException($"{described[0].Source}: the data set is empty (0 examples).");
        if (n > int.MaxValue) throw new DataException($"{described[0].Source}: {n} examples is more than the {int.MaxValue} supported.");
        string labelName = labels.Describe();
        if (labels.ShapeArray.Length > 0 && labels.ShapeArray[0] != n)
            throw new DataException($"{described[0].Source} has {n} examples but {labelName} has {labels.ShapeArray[0]} labels; the counts must match.");
        var store = LabelStore.FromTensor(labels, (int)n, options, labelName);
        string source = string.Join(", ", described.Select(d => d.Source).Distinct());
        return new Dataset(new TensorSource(source, described, list.Select(i => i.Value).ToArray(), store));
    }

    /// <summary>
    /// The inputs of each example, in order: one unnamed input for data read from IDX or CSV
    /// files and for <see cref="FromTensors(DataTensor, DataTensor, DataOptions?)"/>, one named
    /// input per tensor for the overload over named tensors.
    /// </summary>
    public IReadOnlyList<DatasetInput> Inputs => _source.Inputs;

    /// <summary>Number of examples.</summary>
    public int Count => _indices?.Length ?? _source.Count;

    /// <summary>Shape of one example's features (the first input's, see <see cref="Inputs"/>), without the batch dimension.</summary>
    public ReadOnlyCollection<long> FeatureShape { get; }

    /// <summary>Number of values per example of the first input (product of <see cref="FeatureShape"/>).</summary>
    public int FeatureLength => _source.FeatureLength;

    /// <summary>Whether labels are class indices (copied as <c>long</c>) or regression targets (copied as <c>float</c>).</summary>
    public LabelKind LabelKind => _source.Labels.Kind;

    /// <summary>Label values per example: 1 for class indices, the number of targets for regression.</summary>
    public int LabelLength => _source.Labels.Width;

    /// <summary>The class count the labels were checked against (<see cref="DataOptions.ClassCount"/>), or null.</summary>
    public int? ClassCount => _source.Labels.ClassCount;

    /// <summary>
    /// False for a streamed gzipped IDX file, which can only be read front to back:
    /// <see cref="CopyExample(int, Span{float}, Span{long})"/> then throws and a
    /// <see cref="DataLoader"/> shuffles within a bounded buffer.
    /// </summary>
    public bool IsRandomAccess => _source.IsRandomAccess;

    /// <summary>The file(s) the data came from.</summary>
    public string Source => _source.Name;

    /// <summary>The normalization applied when examples are copied, or null.</summary>
    public Normalization? Normalization { get; }

    /// <summary>
    /// Copies example <paramref name="index"/>'s features (normalized) into
    /// <paramref name="features"/> (at least <see cref="FeatureLength"/> long) and its
    /// <see cref="LabelLength"/> class indices into <paramref name="label"/>. No allocation.
    /// </summary>
    /// <exception cref="InvalidOperationException">The labels are regression targets, or the data set is not random access.</exception>
    public void CopyExample(int index, Span<float> features, Span<long> label)
    {
        if (LabelKind != LabelKind.ClassIndex)
            throw new InvalidOperationException($"{Source} has regression targets; copy labels into a Span<float>.");
        CheckIndex(index);
        ReadFeatures(index, features);
        ReadClasses(index, label);
    }

    /// <summary>
    /// Copies example <paramref name="index"/>'s features (normalized) into
    /// <paramref name="features"/> and its <see cref="LabelLength"/> label values into
    /// <paramref name="label"/> (class indices are converted to float). No allocation.
    /// </summary>
    /// <exception cref="InvalidOperationException">The data set is not random access.</exception>
    public void CopyExample(int index, Span<float> features, Span<float> label)
    {
        CheckIndex(index);
        ReadFeatures(index, features);
        ReadLabel(index, label);
    }

    /// <summary>
    /// Splits off a validation set of round(<paramref name="validationFraction"/> x Count)
    /// examples chosen by a seeded shuffle; the rest is the training set. The two are disjoint
    /// and together cover this data set; both keep the original order and this normalization.
    /// The same seed always gives the same split, on every platform and .NET version.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The fraction is not in (0, 1).</exception>
    /// <exception cref="DataException">The split would leave one side empty.</exception>
    public (Dataset Train, Dataset Validation) Split(double validationFraction, ulong seed)
    {
        if (!(validationFraction > 0 && validationFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(validationFraction), validationFraction, "The validation fraction must be in (0, 1).");
        return SplitCore((int)Math.Round(validationFraction * Count, MidpointRounding.AwayFromZero), seed, $"fraction {validationFraction}");
    }

    /// <summary>As <see cref="Split(double, ulong)"/>, with an exact validation count.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The count is negative.</exception>
    /// <exception cref="DataException">The split would leave one side empty.</exception>
    public (Dataset Train, Dataset Validation) Split(int validationCount, ulong seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(validationCount);
        return SplitCore(validationCount, seed, $"count {validationCount}");
    }

    /// <summary>A view of the same examples with <paramref name="normalization"/> applied when they are copied (replacing any earlier one).</summary>
    /// <exception cref="ArgumentException">Mean/Std lengths do not match the features or channels, a std is not positive, or the data set has several inputs.</exception>
    public Dataset WithNormalization(Normalization normalization)
    {
        ArgumentNullException.ThrowIfNull(normalization);
        ThrowIfDisposed();
        if (Inputs.Count > 1)
            throw new ArgumentException($"{Source}: normalization applies to data sets with one input; this one has {Inputs.Count} ({string.Join(", ", Inputs.Select(i => i.Name))}).");
        var view = new Dataset(_source, _indices, normalization);
        _source.AddReference();
        return view;
    }

    /// <summary>Releases this view; the files close when every view over them is disposed.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) _source.Release();
    }

    // ---- internal accessors for DataLoader and Normalization ----

    internal LabelStore Labels => _source.Labels;

    /// <summary>True when the features are read from disk as needed rather than held in memory.</summary>
    internal bool IsStreamed => _source is not TensorSource;

    internal int SourceIndex(int index) => _indices is null ? index : _indices[index];

    internal void ReadFeatures(int index, Span<float> destination)
    {
        if (Inputs.Count != 1)
            throw new InvalidOperationException($"{Source} has {Inputs.Count} inputs; read them through a DataLoader (TryNextBatch over one buffer per input).");
        ReadInput(0, index, destination);
    }

    /// <summary>Input <paramref name="input"/> of example <paramref name="index"/> as float (the normalization applies to a single input).</summary>
    internal void ReadInput(int input, int index, Span<float> destination)
    {
        var dst = destination[..Inputs[input].Length];
        _source.ReadInput(input, SourceIndex(index), dst);
        Transform(dst);
    }

    /// <summary>Input <paramref name="input"/> of example <paramref name="index"/> as integer ids (integer inputs only; never normalized).</summary>
    internal void ReadIds(int input, int index, Span<long> destination) =>
        _source.ReadIds(input, SourceIndex(index), destination[..Inputs[input].Length]);

    internal void ReadLabel(int index, Span<float> destination)
    {
        int s = SourceIndex(index);
        var labels = _source.Labels;
        if (labels.Classes is { } c)
            for (int i = 0; i < labels.Width; i++) destination[i] = c[(long)s * labels.Width + i];
        else labels.Targets.AsSpan(s * labels.Width, labels.Width).CopyTo(destination);
    }

    /// <summary>Example <paramref name="index"/>'s <see cref="LabelLength"/> class indices.</summary>
    internal void ReadClasses(int index, Span<long> destination)
    {
        var labels = _source.Labels;
        labels.Classes.AsSpan(SourceIndex(index) * labels.Width, labels.Width).CopyTo(destination);
    }

    internal void Transform(Span<float> values)
    {
        if (_mul is null) return;
        var mul = _mul.AsSpan();
        var add = _add.AsSpan();
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int w = Vector<float>.Count;
            for (; i <= values.Length - w; i += w)
            {
                var v = new Vector<float>(values.Slice(i, w));
                (v * new Vector<float>(mul.Slice(i, w)) + new Vector<float>(add.Slice(i, w))).CopyTo(values.Slice(i, w));
            }
        }
        for (; i < values.Length; i++) values[i] = values[i] * mul[i] + add[i];
    }

    /// <summary>Reads this view front to back, normalized.</summary>
    internal ViewReader OpenReader() { ThrowIfDisposed(); return new ViewReader(this, _source.OpenSequential(), normalize: true); }

    /// <summary>Reads this view front to back, without normalization.</summary>
    internal ViewReader OpenRawReader() { ThrowIfDisposed(); return new ViewReader(this, _source.OpenSequential(), normalize: false); }

    internal static long[] ResolveShape(long[] fileShape, DataOptions options, string name)
    {
        if (options.ExpectedFeatureShape is not { } expected) return fileShape;
        long have = 1, want = 1;
        foreach (long d in fileShape) have = checked(have * d);
        foreach (long d in expected)
        {
            if (d <= 0) throw new ArgumentException($"DataOptions.ExpectedFeatureShape [{string.Join(", ", expected)}] has a non-positive dimension.");
            want = checked(want * d);
        }
        if (have != want)
            throw new DataException($"{name}: examples have shape [{string.Join(", ", fileShape)}] ({have} values) but the expected feature shape is [{string.Join(", ", expected)}] ({want} values).");
        return expected.ToArray();
    }

    private (Dataset, Dataset) SplitCore(int validationCount, ulong seed, string what)
    {
        ThrowIfDisposed();
        int n = Count;
        if (validationCount <= 0 || validationCount >= n)
            throw new DataException($"{Source}: a validation split of {what} takes {validationCount} of {n} examples and leaves {(validationCount <= 0 ? "the validation" : "the training")} set empty.");
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        var rng = Xoshiro256StarStar.FromSeed(seed);
        rng.Shuffle(order);
        int[] validation = order[..validationCount];
        int[] train = order[validationCount..];
        Array.Sort(validation);
        Array.Sort(train);
        for (int i = 0; i < validation.Length; i++) validation[i] = SourceIndex(validation[i]);
        for (int i = 0; i < train.Length; i++) train[i] = SourceIndex(train[i]);
        _source.AddReference();
        var trainSet = new Dataset(_source, train, Normalization);
        _source.AddReference();
        var validationSet = new Dataset(_source, validation, Normalization);
        return (trainSet, validationSet);
    }

    private void CheckIndex(int index)
    {
        ThrowIfDisposed();
        if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"{Source} has {Count} examples.");
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed != 0, this);

    /// <summary>Front-to-back reader over a view: skips source examples outside it.</summary>
    internal sealed class ViewReader : IDisposable
    {
        private readonly Dataset _view;
        private readonly SequentialReader _reader;
        private readonly bool _normalize;
        private int _next; // view index of the next example

        public ViewReader(Dataset view, SequentialReader reader, bool normalize)
        {
            _view = view; _reader = reader; _normalize = normalize;
        }

        /// <summary>Reads the next example of the view; false at the end.</summary>
        public bool TryRead(Span<float> destination, out int viewIndex)
        {
            viewIndex = _next;
            if (_next >= _view.Count) return false;
            int target = _view.SourceIndex(_next);
            while (_reader.Position < target) _reader.Skip();
            var dst = destination[.._view.FeatureLength];
            _reader.Read(dst);
            if (_normalize) _view.Transform(dst);
            _next++;
            return true;
        }

        /// <summary>Skips the next example of the view without decoding its features where the source allows.</summary>
        public bool TrySkip()
        {
            if (_next >= _view.Count) return false;
            int target = _view.SourceIndex(_next);
            while (_reader.Position <= target) _reader.Skip();
            _next++;
            return true;
        }

        public void Dispose() => _reader.Dispose();
    }
}
