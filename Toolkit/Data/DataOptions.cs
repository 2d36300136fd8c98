namespace OnnxKfac.Toolkit.Data;

/// <summary>What a data set's labels mean.</summary>
public enum LabelKind
{
    /// <summary>One integer class index per example, in [0, class count). Batches take them as <c>long</c>.</summary>
    ClassIndex,
    /// <summary>One or more float targets per example (regression). Batches take them as <c>float</c>.</summary>
    Regression,
}

/// <summary>Whether a file-backed data set is loaded into memory or read from disk as batches are filled.</summary>
public enum StreamingMode
{
    /// <summary>Stream when the example data is larger than <see cref="DataOptions.StreamingThresholdBytes"/>, else load it.</summary>
    Auto,
    /// <summary>Always load the whole file into memory.</summary>
    InMemory,
    /// <summary>
    /// Always stream. Raw IDX files and CSV files stay random access (IDX: seek to header +
    /// index x example size; CSV: an index of row offsets built in one validating pass).
    /// Gzipped IDX files can only be read front to back: the loader then shuffles within a
    /// bounded buffer (<see cref="LoaderOptions.ShuffleBufferSize"/>).
    /// </summary>
    Streamed,
}

/// <summary>Options shared by every reader that produces a <see cref="Dataset"/>. All optional; defaults documented per property.</summary>
public sealed record DataOptions
{
    /// <summary>
    /// What the labels are. Null (default) infers it: integer labels (IDX, integer NPY/ONNX
    /// tensors) are class indices, float labels are regression targets; CSV labels default to
    /// class indices.
    /// </summary>
    public LabelKind? LabelKind { get; init; }

    /// <summary>
    /// Number of classes. When set, every class label is checked to lie in [0, ClassCount) when
    /// the data set is opened. Null (default) checks only that labels are not negative.
    /// </summary>
    public int? ClassCount { get; init; }

    /// <summary>
    /// The per-example feature shape the model expects (no batch dimension). When set, a data
    /// set whose examples have another number of elements is refused; one with the same number
    /// of elements in another layout (e.g. [28, 28] for an expected [784] or [1, 28, 28]) is
    /// reshaped, since examples are stored in C order. Null (default) keeps the file's shape.
    /// </summary>
    public IReadOnlyList<long>? ExpectedFeatureShape { get; init; }

    /// <summary>In memory or streamed; default <see cref="StreamingMode.Auto"/>.</summary>
    public StreamingMode Streaming { get; init; } = StreamingMode.Auto;

    /// <summary>
    /// With <see cref="StreamingMode.Auto"/>, data larger than this many bytes (file size for
    /// raw IDX and CSV, declared uncompressed size for gzipped IDX) is streamed. Default 1 GiB.
    /// </summary>
    public long StreamingThresholdBytes { get; init; } = 1L << 30;

    internal static readonly DataOptions Default = new();

    internal bool ShouldStream(long bytes) => Streaming switch
    {
        StreamingMode.InMemory => false,
        StreamingMode.Streamed => true,
        _ => bytes > StreamingThresholdBytes,
    };
}
