using System.Buffers.Binary;
using System.IO.Compression;
using Microsoft.Win32.SafeHandles;

namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// Reads IDX files (the MNIST / Fashion-MNIST format: big-endian, magic 0x0000TTNN with
/// element type TT and NN dimensions), raw or gzipped; gzip is recognised by its header bytes,
/// not by the file name. Element types: 0x08 ubyte, 0x09 sbyte, 0x0B short, 0x0C int,
/// 0x0D float, 0x0E double.
/// </summary>
public static class Idx
{
    /// <summary>
    /// Reads a whole IDX file. ubyte becomes <see cref="DataElementType.UInt8"/>, the signed
    /// integer types <see cref="DataElementType.Int64"/>, float and double
    /// <see cref="DataElementType.Float32"/>.
    /// </summary>
    /// <exception cref="DataException">Wrong magic, unknown element type, truncated or over-long file.</exception>
    public static DataTensor ReadTensor(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var header = IdxHeader.Read(path);
        using var stream = header.OpenData(path);
        Array data;
        try
        {
            data = ElementConvert.ReadArray(stream, header.Kind, bigEndian: true, header.ElementCount);
        }
        catch (EndOfStreamException e)
        {
            throw new DataException($"{path}: truncated: the header declares {header.DescribeData()} but the decompressed data ends early.", e);
        }
        catch (InvalidDataException e)
        {
            throw new DataException($"{path}: the gzip stream is corrupt: {e.Message}", e);
        }
        if (header.Gzip && stream.ReadByte() != -1)
            throw new DataException($"{path}: unexpected data after the {header.DescribeData()} the header declares.");
        return DataTensor.Create(data, header.Dims, path);
    }

    /// <summary>
    /// Opens an images file ([N, ...], any element type) with its labels file ([N] class
    /// indices, or [N, k] regression targets). Loaded into memory, or streamed from disk
    /// depending on <see cref="DataOptions.Streaming"/>: a raw file is then read by offset (random
    /// access), a gzipped file front to back. Labels are always read into memory.
    /// </summary>
    /// <exception cref="DataException">Wrong magic, truncated files, image and label counts that differ, labels out of range, no examples, or a shape that does not match <see cref="DataOptions.ExpectedFeatureShape"/>.</exception>
    public static Dataset OpenDataset(string imagesPath, string labelsPath, DataOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(imagesPath);
        ArgumentException.ThrowIfNullOrEmpty(labelsPath);
        options ??= DataOptions.Default;
        var header = IdxHeader.Read(imagesPath);
        if (header.Dims.Length < 1)
            throw new DataException($"{imagesPath}: an images file needs at least one dimension (the example count).");
        var labelHeader = IdxHeader.Read(labelsPath);
        if (labelHeader.Dims[0] != header.Dims[0])
            throw new DataException($"{imagesPath} holds {header.Dims[0]} examples but {labelsPath} holds {labelHeader.Dims[0]} labels; the counts must match.");
        if (header.Dims[0] == 0)
            throw new DataException($"{imagesPath}: the data set is empty (0 examples).");
        if (!header.Gzip) header.CheckRawLength(imagesPath);
        int count = checked((int)header.Dims[0]);
        var labels = LabelStore.FromTensor(ReadTensor(labelsPath), count, options, labelsPath);
        var shape = Dataset.ResolveShape(header.Dims[1..], options, imagesPath);

        if (!options.ShouldStream(header.DataBytes))
        {
            var features = ReadTensor(imagesPath);
            return new Dataset(new TensorSource(imagesPath, features, shape, labels));
        }
        ExampleSource source = header.Gzip
            ? new GzipIdxSource(imagesPath, header, shape, labels)
            : new RawIdxSource(imagesPath, header, shape, labels);
        return new Dataset(source);
    }
}

internal sealed class IdxHeader
{
    public required RawKind Kind { get; init; }
    public required byte TypeCode { get; init; }
    public required long[] Dims { get; init; }
    public required bool Gzip { get; init; }
    public int HeaderBytes => 4 + 4 * Dims.Length;
    public long ElementCount { get; private init; }
    public long DataBytes => ElementCount * ElementConvert.SizeOf(Kind);
    public long ExampleElements => Dims.Length == 0 || Dims[0] == 0 ? 0 : ElementCount / Dims[0];

    public static RawKind? KindOf(byte code) => code switch
    {
        0x08 => RawKind.UInt8,
        0x09 => RawKind.Int8,
        0x0B => RawKind.Int16,
        0x0C => RawKind.Int32,
        0x0D => RawKind.Float32,
        0x0E => RawKind.Float64,
        _ => null,
    };

    public static bool IsGzip(string path)
    {
        Span<byte> two = stackalloc byte[2];
        using var fs = File.OpenRead(path);
        return fs.ReadAtLeast(two, 2, throwOnEndOfStream: false) == 2 && two[0] == 0x1F && two[1] == 0x8B;
    }

    public static IdxHeader Read(string path)
    {
        bool gzip = IsGzip(path);
        using var stream = Open(path, gzip);
        Span<byte> magic = stackalloc byte[4];
        try
        {
            int got = stream.ReadAtLeast(magic, 4, throwOnEndOfStream: false);
            if (got < 4)
                throw new DataException($"{path}: truncated: {got} bytes, too short for the 4-byte IDX magic number.");
            if (magic[0] != 0 || magic[1] != 0)
                throw new DataException($"{path}: wrong magic number 0x{BinaryPrimitives.ReadUInt32BigEndian(magic):X8} at offset 0; an IDX file starts with 0x0000TTNN (TT element type, NN dimensions){(gzip ? " (after gzip decompression)" : "")}.");
            var kind = KindOf(magic[2]) ?? throw new DataException(
                $"{path}: unknown IDX element type 0x{magic[2]:X2} at offset 2 (expected 0x08, 0x09, 0x0B, 0x0C, 0x0D or 0x0E).");
            int rank = magic[3];
            if (rank == 0) throw new DataException($"{path}: the IDX header declares 0 dimensions (offset 3).");
            var dimBytes = new byte[4 * rank];
            got = stream.ReadAtLeast(dimBytes, dimBytes.Length, throwOnEndOfStream: false);
            if (got < dimBytes.Length)
                throw new DataException($"{path}: truncated header: {rank} dimensions need {dimBytes.Length} bytes at offset 4, found {got}.");
            var dims = new long[rank];
            long elements = 1;
            for (int i = 0; i < rank; i++)
            {
                int d = BinaryPrimitives.ReadInt32BigEndian(dimBytes.AsSpan(4 * i));
                if (d < 0) throw new DataException($"{path}: dimension {i} is negative ({d}) at offset {4 + 4 * i}.");
                dims[i] = d;
                elements = checked(elements * d);
            }
            return new IdxHeader { Kind = kind, TypeCode = magic[2], Dims = dims, Gzip = gzip, ElementCount = elements };
        }
        catch (InvalidDataException e)
        {
            throw new DataException($"{path}: the gzip stream is corrupt: {e.Message}", e);
        }
    }

    public static Stream Open(string path, bool gzip)
    {
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        return gzip ? new GZipStream(fs, CompressionMode.Decompress, leaveOpen: false) : fs;
    }

    /// <summary>A stream positioned at the first data byte (decompressed for gzip).</summary>
    public Stream OpenData(string path)
    {
        if (!Gzip) CheckRawLength(path);
        var stream = Open(path, Gzip);
        try
        {
            if (Gzip) stream.ReadExactly(new byte[HeaderBytes]);
            else stream.Seek(HeaderBytes, SeekOrigin.Begin);
            return stream;
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public void CheckRawLength(string path)
    {
        long length = new FileInfo(path).Length;
        long expected = HeaderBytes + DataBytes;
        if (length < expected)
            throw new DataException($"{path}: truncated: the header declares {DescribeData()} ending at offset {expected}, but the file is {length} bytes long.");
        if (length > expected)
            throw new DataException($"{path}: {length - expected} unexpected bytes after the {DescribeData()} the header declares (data should end at offset {expected}).");
    }

    public string DescribeData() =>
        $"[{string.Join(" x ", Dims)}] {TypeName} = {DataBytes} data bytes";

    private string TypeName => TypeCode switch
    {
        0x08 => "ubyte", 0x09 => "sbyte", 0x0B => "short", 0x0C => "int", 0x0D => "float", _ => "double",
    };
}

/// <summary>A raw (uncompressed) IDX file read by offset: example i is at header + i x example bytes.</summary>
internal sealed class RawIdxSource : ExampleSource
{
    [ThreadStatic] private static byte[]? t_scratch;
    private readonly SafeFileHandle _handle;
    private readonly RawKind _kind;
    private readonly int _headerBytes, _exampleBytes;

    public RawIdxSource(string path, IdxHeader header, long[] shape, LabelStore labels)
        : base(path, checked((int)header.Dims[0]), shape, labels)
    {
        _kind = header.Kind;
        _headerBytes = header.HeaderBytes;
        _exampleBytes = checked((int)(header.ExampleElements * ElementConvert.SizeOf(header.Kind)));
        _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
    }

    public override bool IsRandomAccess => true;

    public override void ReadFeatures(int index, Span<float> destination)
    {
        ThrowIfClosed();
        var scratch = t_scratch is { } s && s.Length >= _exampleBytes ? s : (t_scratch = new byte[Math.Max(_exampleBytes, 4096)]);
        var span = scratch.AsSpan(0, _exampleBytes);
        long offset = _headerBytes + (long)index * _exampleBytes;
        int done = 0;
        while (done < span.Length)
        {
            int n = RandomAccess.Read(_handle, span[done..], offset + done);
            if (n == 0) throw new DataException($"{Name}: truncated: example {index} at offset {offset} ends past the end of the file.");
            done += n;
        }
        ElementConvert.ToFloat(span, _kind, bigEndian: true, destination[..FeatureLength]);
    }

    protected override void Close() => _handle.Dispose();
}

/// <summary>A gzipped IDX file decompressed front to back on each pass; no random access.</summary>
internal sealed class GzipIdxSource : ExampleSource
{
    private readonly IdxHeader _header;
    private readonly int _exampleBytes;

    public GzipIdxSource(string path, IdxHeader header, long[] shape, LabelStore labels)
        : base(path, checked((int)header.Dims[0]), shape, labels)
    {
        _header = header;
        _exampleBytes = checked((int)(header.ExampleElements * ElementConvert.SizeOf(header.Kind)));
    }

    public override bool IsRandomAccess => false;

    public override SequentialReader OpenSequential()
    {
        ThrowIfClosed();
        return new Reader(this, _header.OpenData(Name));
    }

    private sealed class Reader(GzipIdxSource source, Stream stream) : SequentialReader
    {
        private readonly byte[] _scratch = new byte[source._exampleBytes];

        public override void Read(Span<float> destination)
        {
            Fill();
            ElementConvert.ToFloat(_scratch, source._header.Kind, bigEndian: true, destination[..source.FeatureLength]);
            Position++;
        }

        public override void Skip()
        {
            Fill();
            Position++;
        }

        private void Fill()
        {
            if (Position >= source.Count) throw new InvalidOperationException("Read past the last example.");
            try
            {
                stream.ReadExactly(_scratch);
            }
            catch (EndOfStreamException e)
            {
                throw new DataException($"{source.Name}: truncated: the decompressed data ends inside example {Position} of the {source.Count} the header declares ({source._header.DescribeData()}).", e);
            }
            catch (InvalidDataException e)
            {
                throw new DataException($"{source.Name}: the gzip stream is corrupt near example {Position}: {e.Message}", e);
            }
        }

        public override void Dispose() => stream.Dispose();
    }
}
