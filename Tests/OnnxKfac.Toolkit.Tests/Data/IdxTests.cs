using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Tests.Data;

public sealed class IdxTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReadsUbyteImagesAsBytes(bool gzip)
    {
        double[] values = [0, 1, 2, 127, 128, 255, 9, 8, 7, 6, 5, 4];
        string path = DataFiles.WriteIdx(_dir, "img", 0x08, [2, 2, 3], values, gzip);

        var t = Idx.ReadTensor(path);

        Assert.Equal(DataElementType.UInt8, t.ElementType);
        Assert.Equal([2L, 2, 3], t.Shape);
        Assert.Equal(values.Select(v => (byte)v).ToArray(), t.AsBytes().ToArray());
        Assert.Equal(path, t.Source);
    }

    [Theory]
    [InlineData(0x09, false)]
    [InlineData(0x0B, false)]
    [InlineData(0x0C, true)]
    public void ReadsSignedIntegerTypesBigEndian(byte code, bool gzip)
    {
        double[] values = code switch
        {
            0x09 => [-128, -1, 0, 1, 127, 42],
            0x0B => [-32768, -2, 0, 258, 32767, 1000],
            _ => [int.MinValue, -70000, 0, 65536 + 3, int.MaxValue, 16777217],
        };
        string path = DataFiles.WriteIdx(_dir, "ints", code, [3, 2], values, gzip);

        var t = Idx.ReadTensor(path);

        Assert.Equal(DataElementType.Int64, t.ElementType);
        Assert.Equal([3L, 2], t.Shape);
        Assert.Equal(values.Select(v => (long)v).ToArray(), t.AsInt64s().ToArray());
    }

    [Theory]
    [InlineData(0x0D)]
    [InlineData(0x0E)]
    public void ReadsFloatTypesBigEndian(byte code)
    {
        double[] values = [-1.5, 0, 3.25, 1e-3, -7e5];
        string path = DataFiles.WriteIdx(_dir, "floats", code, [5], values);

        var t = Idx.ReadTensor(path);

        Assert.Equal(DataElementType.Float32, t.ElementType);
        Assert.Equal([5L], t.Shape);
        Assert.Equal(values.Select(v => (float)v).ToArray(), t.AsFloats().ToArray());
    }

    [Fact]
    public void DetectsGzipByHeaderNotByName()
    {
        double[] values = [3, 1, 4, 1, 5, 9];
        string gzNamedIdx = _dir.File("looks-raw.idx");
        File.WriteAllBytes(gzNamedIdx, DataFiles.Gzip(DataFiles.Idx(0x08, [6], values)));
        string rawNamedGz = _dir.File("looks-compressed.gz");
        File.WriteAllBytes(rawNamedGz, DataFiles.Idx(0x08, [6], values));

        Assert.Equal([3, 1, 4, 1, 5, 9], Idx.ReadTensor(gzNamedIdx).AsBytes().ToArray());
        Assert.Equal([3, 1, 4, 1, 5, 9], Idx.ReadTensor(rawNamedGz).AsBytes().ToArray());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OpensImageLabelPairInMemory(bool gzip)
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, count: 12, rows: 3, cols: 4, classes: 5, gzip: gzip);

        using var ds = Idx.OpenDataset(images, labels, new DataOptions { ClassCount = 5 });

        Assert.Equal(12, ds.Count);
        Assert.Equal([3L, 4], ds.FeatureShape);
        Assert.Equal(12, ds.FeatureLength);
        Assert.Equal(LabelKind.ClassIndex, ds.LabelKind);
        Assert.Equal(1, ds.LabelLength);
        Assert.Equal(5, ds.ClassCount);
        Assert.True(ds.IsRandomAccess);
        var features = new float[12];
        var label = new long[1];
        for (int i = 0; i < 12; i++)
        {
            ds.CopyExample(i, features, label);
            Assert.Equal(i % 5, label[0]);
            for (int k = 0; k < 12; k++) Assert.Equal(DataFiles.Pixel(i, k), features[k]);
        }
    }

    [Fact]
    public void ExpectedShapeWithSameElementCountReshapes()
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, 4, 2, 3);

        using var flat = Idx.OpenDataset(images, labels, new DataOptions { ExpectedFeatureShape = [6] });
        using var chw = Idx.OpenDataset(images, labels, new DataOptions { ExpectedFeatureShape = [1, 2, 3] });

        Assert.Equal([6L], flat.FeatureShape);
        Assert.Equal([1L, 2, 3], chw.FeatureShape);
        var f = new float[6];
        flat.CopyExample(3, f, new long[1]);
        Assert.Equal(Enumerable.Range(0, 6).Select(k => (float)DataFiles.Pixel(3, k)), f);
    }

    // ---- bad input ----

    [Fact]
    public void WrongMagicNamesFileAndOffset()
    {
        string path = _dir.File("not-idx");
        File.WriteAllBytes(path, [0x50, 0x4B, 0x03, 0x04, 0, 0, 0, 0]);

        var e = Assert.Throws<DataException>(() => Idx.ReadTensor(path));

        Assert.Contains(path, e.Message);
        Assert.Contains("wrong magic number 0x504B0304 at offset 0", e.Message);
    }

    [Fact]
    public void UnknownElementTypeIsRefused()
    {
        string path = _dir.File("bad-type");
        File.WriteAllBytes(path, [0, 0, 0x0A, 1, 0, 0, 0, 1, 7]);

        var e = Assert.Throws<DataException>(() => Idx.ReadTensor(path));

        Assert.Contains(path, e.Message);
        Assert.Contains("unknown IDX element type 0x0A", e.Message);
    }

    [Fact]
    public void TruncatedRawFileIsReported()
    {
        var bytes = DataFiles.Idx(0x08, [10, 2, 2], new double[40]);
        string path = _dir.File("short");
        File.WriteAllBytes(path, bytes[..^5]);

        var e = Assert.Throws<DataException>(() => Idx.ReadTensor(path));

        Assert.Contains(path, e.Message);
        Assert.Contains("truncated", e.Message);
        Assert.Contains("ending at offset 56", e.Message);
        Assert.Contains("51 bytes long", e.Message);
    }

    [Fact]
    public void TruncatedHeaderIsReported()
    {
        string path = _dir.File("header");
        File.WriteAllBytes(path, [0, 0, 8, 3, 0, 0, 0, 2, 0, 0]);

        var e = Assert.Throws<DataException>(() => Idx.ReadTensor(path));

        Assert.Contains(path, e.Message);
        Assert.Contains("truncated header: 3 dimensions need 12 bytes at offset 4, found 6", e.Message);
    }

    [Fact]
    public void TruncatedGzipFileIsReportedInMemoryAndStreamed()
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, 20, 4, 4);
        var raw = DataFiles.Idx(0x08, [20, 4, 4], Enumerable.Range(0, 320).Select(i => (double)(i % 256)).ToArray());
        string cut = _dir.File("cut.gz");
        File.WriteAllBytes(cut, DataFiles.Gzip(raw[..200]));

        var e1 = Assert.Throws<DataException>(() => Idx.OpenDataset(cut, labels, new DataOptions { Streaming = StreamingMode.InMemory }));
        Assert.Contains(cut, e1.Message);
        Assert.Contains("truncated", e1.Message);

        using var streamed = Idx.OpenDataset(cut, labels, new DataOptions { Streaming = StreamingMode.Streamed });
        using var loader = new DataLoader(streamed, new LoaderOptions { BatchSize = 20, Shuffle = false });
        var e2 = Assert.Throws<DataException>(() => loader.TryNextBatch(new float[320], new long[20], out _));
        Assert.Contains(cut, e2.Message);
        Assert.Contains("truncated: the decompressed data ends inside example 11", e2.Message);
    }

    [Fact]
    public void TrailingBytesAreReported()
    {
        var bytes = DataFiles.Idx(0x08, [2], [1, 2]);
        string path = _dir.File("long");
        File.WriteAllBytes(path, [.. bytes, 0, 0, 0]);

        var e = Assert.Throws<DataException>(() => Idx.ReadTensor(path));

        Assert.Contains("3 unexpected bytes after", e.Message);
    }

    [Fact]
    public void ImageAndLabelCountsMustMatch()
    {
        var (images, _) = DataFiles.WriteImageSet(_dir, 10, 2, 2, prefix: "a");
        var (_, labels) = DataFiles.WriteImageSet(_dir, 9, 2, 2, prefix: "b");

        var e = Assert.Throws<DataException>(() => Idx.OpenDataset(images, labels));

        Assert.Contains(images, e.Message);
        Assert.Contains(labels, e.Message);
        Assert.Contains("holds 10 examples", e.Message);
        Assert.Contains("holds 9 labels", e.Message);
    }

    [Fact]
    public void LabelsOutOfRangeAreReported()
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, 10, 2, 2, classes: 10);

        var e = Assert.Throws<DataException>(() => Idx.OpenDataset(images, labels, new DataOptions { ClassCount = 7 }));

        Assert.Contains(labels, e.Message);
        Assert.Contains("example 7: label 7 is out of range [0, 7)", e.Message);
    }

    [Fact]
    public void EmptyDatasetIsRefused()
    {
        string images = DataFiles.WriteIdx(_dir, "empty-images", 0x08, [0, 28, 28], []);
        string labels = DataFiles.WriteIdx(_dir, "empty-labels", 0x08, [0], []);

        var e = Assert.Throws<DataException>(() => Idx.OpenDataset(images, labels));

        Assert.Contains(images, e.Message);
        Assert.Contains("empty", e.Message);
    }

    [Fact]
    public void FeatureShapeMismatchIsReported()
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, 3, 28, 28);

        var e = Assert.Throws<DataException>(() => Idx.OpenDataset(images, labels, new DataOptions { ExpectedFeatureShape = [1, 32, 32] }));

        Assert.Contains(images, e.Message);
        Assert.Contains("examples have shape [28, 28] (784 values) but the expected feature shape is [1, 32, 32] (1024 values)", e.Message);
    }

    [Fact]
    public void CorruptGzipIsReported()
    {
        string path = _dir.File("corrupt.gz");
        var gz = DataFiles.Gzip(DataFiles.Idx(0x08, [64], new double[64]));
        for (int i = 10; i < gz.Length - 8; i++) gz[i] ^= 0x5A;
        File.WriteAllBytes(path, gz);

        var e = Assert.Throws<DataException>(() => Idx.ReadTensor(path));

        Assert.Contains(path, e.Message);
    }
}
