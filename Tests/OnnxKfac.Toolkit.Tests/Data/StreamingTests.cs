using System.Buffers.Binary;
using System.IO.Compression;
using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Tests.Data;

public sealed class StreamingTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static List<(float[] Features, long Label)> Epoch(DataLoader loader, int featureLength)
    {
        int b = loader.Options.BatchSize;
        var f = new float[b * featureLength];
        var l = new long[b];
        var result = new List<(float[], long)>();
        while (loader.TryNextBatch(f, l, out int n))
            for (int k = 0; k < n; k++) result.Add((f.AsSpan(k * featureLength, featureLength).ToArray(), l[k]));
        return result;
    }

    private static void AssertSameExamples(List<(float[] Features, long Label)> a, List<(float[] Features, long Label)> b)
    {
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Features, b[i].Features);
            Assert.Equal(a[i].Label, b[i].Label);
        }
    }

    [Fact]
    public void RawIdxStreamedByOffsetEqualsInMemoryIncludingShuffle()
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, 53, 5, 6, classes: 7);
        using var mem = Idx.OpenDataset(images, labels, new DataOptions { Streaming = StreamingMode.InMemory });
        using var str = Idx.OpenDataset(images, labels, new DataOptions { Streaming = StreamingMode.Streamed });
        Assert.False(mem.IsStreamed);
        Assert.True(str.IsStreamed);
        Assert.True(str.IsRandomAccess);

        var norm = Normalization.Compute(mem, NormalizationAxis.PerFeature, 1f / 255);
        Assert.Equal(norm.Mean, Normalization.Compute(str, NormalizationAxis.PerFeature, 1f / 255).Mean);
        using var memN = mem.WithNormalization(norm);
        using var strN = str.WithNormalization(norm);
        var options = new LoaderOptions { BatchSize = 10, Seed = 17 };
        using var a = new DataLoader(memN, options);
        using var b = new DataLoader(strN, options);
        for (int epoch = 0; epoch < 2; epoch++) AssertSameExamples(Epoch(a, 30), Epoch(b, 30));
    }

    [Fact]
    public void GzipStreamedInOrderEqualsInMemory()
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, 41, 4, 4, gzip: true);
        using var mem = Idx.OpenDataset(images, labels, new DataOptions { Streaming = StreamingMode.InMemory });
        using var str = Idx.OpenDataset(images, labels, new DataOptions { Streaming = StreamingMode.Streamed });
        Assert.False(str.IsRandomAccess);
        Assert.Throws<InvalidOperationException>(() => str.CopyExample(0, new float[16], new long[1]));
        var normMem = Normalization.Compute(mem, NormalizationAxis.PerFeature);
        var normStr = Normalization.Compute(str, NormalizationAxis.PerFeature);
        Assert.Equal(normMem.Mean, normStr.Mean);
        Assert.Equal(normMem.Std, normStr.Std);
        Assert.Equal(Enumerable.Range(0, 41).Average(i => (double)DataFiles.Pixel(i, 5)), normStr.Mean![5], 4);

        var options = new LoaderOptions { BatchSize = 6, Shuffle = false };
        using var a = new DataLoader(mem, options);
        using var b = new DataLoader(str, options);
        var first = Epoch(a, 16);
        AssertSameExamples(first, Epoch(b, 16));
        AssertSameExamples(first, Epoch(b, 16)); // a second pass re-reads the file

        // Resume mid-epoch (the reader skips the examples already returned).
        var f = new float[6 * 16];
        var l = new long[6];
        b.TryNextBatch(f, l, out _);
        b.TryNextBatch(f, l, out _);
        using var c = new DataLoader(str, options);
        c.Restore(b.Position);
        AssertSameExamples(first.Skip(12).ToList(), Epoch(c, 16));
        for (int i = 0; i < 41; i++)
        {
            Assert.Equal(i % 10, first[i].Label);
            Assert.Equal(DataFiles.Pixel(i, 3), first[i].Features[3]);
        }
    }

    [Fact]
    public void GzipStreamedShuffleBufferGivesSeededPermutationsAndResumes()
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, 100, 2, 2, classes: 100, gzip: true);
        using var str = Idx.OpenDataset(images, labels, new DataOptions { Streaming = StreamingMode.Streamed });
        var options = new LoaderOptions { BatchSize = 8, Seed = 3, ShuffleBufferSize = 16 };
        using var a = new DataLoader(str, options);
        using var b = new DataLoader(str, options);

        var e0 = Epoch(a, 4);
        AssertSameExamples(e0, Epoch(b, 4));
        var ids = e0.Select(x => x.Label).ToList();
        Assert.Equal(Enumerable.Range(0, 100).Select(i => (long)i), ids.Order());
        Assert.NotEqual(ids.Order(), ids);
        // A bounded buffer of 16 cannot move an example earlier than 15 places before its file position.
        for (int pos = 0; pos < ids.Count; pos++) Assert.True(ids[pos] <= pos + 15, $"example {ids[pos]} came out at {pos}");
        // Features still belong to their labels.
        foreach (var (features, label) in e0) Assert.Equal(DataFiles.Pixel((int)label, 2), features[2]);

        var e1 = Epoch(a, 4);
        Assert.NotEqual(ids, e1.Select(x => x.Label));

        // Save in the middle of epoch 2 and resume in a fresh loader.
        var f = new float[32];
        var l = new long[8];
        for (int i = 0; i < 5; i++) a.TryNextBatch(f, l, out _);
        var saved = a.Position.ToBytes();
        var rest = Epoch(a, 4).Concat(Epoch(a, 4)).ToList();
        using var c = new DataLoader(str, options);
        c.Restore(LoaderPosition.FromBytes(saved));
        AssertSameExamples(rest, Epoch(c, 4).Concat(Epoch(c, 4)).ToList());
    }

    [Fact]
    public void GzipStreamedSplitFiltersItsExamples()
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, 60, 2, 2, classes: 60, gzip: true);
        using var str = Idx.OpenDataset(images, labels, new DataOptions { Streaming = StreamingMode.Streamed });
        var (train, val) = str.Split(0.25, 8);
        using (train) using (val)
        {
            using var lt = new DataLoader(train, new LoaderOptions { BatchSize = 9, Seed = 1, ShuffleBufferSize = 10 });
            using var lv = new DataLoader(val, new LoaderOptions { BatchSize = 9, Shuffle = false });
            var t = Epoch(lt, 4).Select(x => x.Label).ToList();
            var v = Epoch(lv, 4).Select(x => x.Label).ToList();
            Assert.Equal(45, t.Count);
            Assert.Equal(15, v.Count);
            Assert.Equal(Enumerable.Range(0, 60).Select(i => (long)i), t.Concat(v).Order());
        }
    }

    [Fact]
    public void AutoModeStreamsAboveTheThreshold()
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, 10, 3, 3);
        using var small = Idx.OpenDataset(images, labels, new DataOptions { StreamingThresholdBytes = 90 });
        using var large = Idx.OpenDataset(images, labels, new DataOptions { StreamingThresholdBytes = 89 });
        Assert.False(small.IsStreamed);
        Assert.True(large.IsStreamed);
    }

    /// <summary>
    /// Writes a raw IDX file of <paramref name="count"/> 28x28 ubyte images without holding it in
    /// memory. Image i starts with i in three bytes (little-endian), then (i + k) % 251.
    /// </summary>
    private string WriteLargeIdx(string name, int count, bool gzip)
    {
        string path = _dir.File(name);
        using var file = File.Create(path);
        using Stream output = gzip ? new GZipStream(file, CompressionLevel.Fastest) : file;
        var header = new byte[16];
        header[2] = 0x08;
        header[3] = 3;
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), count);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(8), 28);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(12), 28);
        output.Write(header);
        var image = new byte[784];
        for (int i = 0; i < count; i++)
        {
            image[0] = (byte)i; image[1] = (byte)(i >> 8); image[2] = (byte)(i >> 16);
            for (int k = 3; k < 784; k++) image[k] = (byte)((i + k) % 251);
            output.Write(image);
        }
        return path;
    }

    private string WriteLabels(string name, int count)
    {
        var bytes = new byte[8 + count];
        bytes[2] = 0x08;
        bytes[3] = 1;
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), count);
        for (int i = 0; i < count; i++) bytes[8 + i] = (byte)(i % 10);
        string path = _dir.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Streams one shuffled epoch, checks every example once with the right content, and returns the bytes allocated meanwhile.</summary>
    private static long StreamOneEpoch(string images, string labels, int count, int shuffleBuffer)
    {
        var seen = new bool[count];
        int wrong = 0; // plain checks in the loop: xunit's Assert.Equal allocates a comparer per call
        var f = new float[64 * 784];
        var l = new long[64];
        long before = GC.GetAllocatedBytesForCurrentThread();
        using (var ds = Idx.OpenDataset(images, labels, new DataOptions { Streaming = StreamingMode.Streamed, ClassCount = 10 }))
        using (var loader = new DataLoader(ds, new LoaderOptions { BatchSize = 64, Seed = 1, ShuffleBufferSize = shuffleBuffer }))
        {
            while (loader.TryNextBatch(f, l, out int n))
            {
                for (int k = 0; k < n; k++)
                {
                    var x = f.AsSpan(k * 784, 784);
                    int i = (int)x[0] | (int)x[1] << 8 | (int)x[2] << 16;
                    if (seen[i] || l[k] != i % 10 || x[500] != (i + 500) % 251 || x[783] != (i + 783) % 251) wrong++;
                    seen[i] = true;
                }
            }
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, wrong);
        Assert.Equal(count, seen.Count(s => s));
        return allocated;
    }

    [Fact]
    public void LargeRawIdxStreamsInBoundedMemory()
    {
        const int count = 64_000; // 64000 x 784 bytes = 50.2 MB
        string images = WriteLargeIdx("large-images", count, gzip: false);
        string labels = WriteLabels("large-labels", count);
        long fileSize = new FileInfo(images).Length;
        Assert.True(fileSize > 50_000_000);

        long allocated = StreamOneEpoch(images, labels, count, shuffleBuffer: 4096);

        // Per example only the permutation (4 bytes) and the labels (1 byte read, 8 kept) of its
        // 784 bytes: under 2% of the file. (Allocation is counted on this thread, so tests running
        // in parallel cannot disturb it, unlike GC.GetTotalMemory.)
        Assert.True(allocated < fileSize / 40, $"allocated {allocated} bytes while streaming a {fileSize}-byte file");

        // The measure is sensitive: loading the same file into memory allocates its size.
        long before = GC.GetAllocatedBytesForCurrentThread();
        using (Idx.OpenDataset(images, labels, new DataOptions { Streaming = StreamingMode.InMemory })) { }
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before > fileSize * 9 / 10);
    }

    [Fact]
    public void LargeGzipIdxStreamsInBoundedMemory()
    {
        const int count = 30_000; // 23.5 MB decompressed
        string images = WriteLargeIdx("large-images.gz", count, gzip: true);
        string labels = WriteLabels("large-labels", count);
        long dataSize = 16 + 784L * count;

        long allocated = StreamOneEpoch(images, labels, count, shuffleBuffer: 1000);

        // The shuffle buffer (1000 x 784 floats = 3.1 MB) dominates; nothing grows with the file.
        Assert.True(allocated < dataSize / 5, $"allocated {allocated} bytes while streaming {dataSize} decompressed bytes");
    }

    [Fact]
    public void StreamedSourcesDoNotAllocateInSteadyState()
    {
        var (images, labels) = DataFiles.WriteImageSet(_dir, 200, 8, 8);
        var (gzImages, gzLabels) = DataFiles.WriteImageSet(_dir, 200, 8, 8, gzip: true, prefix: "gz");
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < 200; i++) sb.Append($"{i},{i * 2},\"{i * 3}\",{i % 4}\n");
        string csv = DataFiles.WriteText(_dir, "s.csv", sb.ToString());
        var streamed = new DataOptions { Streaming = StreamingMode.Streamed };

        using var raw = Idx.OpenDataset(images, labels, streamed);
        using var gz = Idx.OpenDataset(gzImages, gzLabels, streamed);
        using var table = Csv.OpenDataset(csv, options: streamed);

        foreach (var ds in new[] { raw, gz, table })
        {
            using var loader = new DataLoader(ds, new LoaderOptions { BatchSize = 16, Seed = 4, ShuffleBufferSize = 50 });
            var f = new float[16 * ds.FeatureLength];
            var l = new long[16];
            Assert.True(loader.TryNextBatch(f, l, out _)); // warm-up: opens the epoch's reader
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 10; i++) Assert.True(loader.TryNextBatch(f, l, out _));
            Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        }
    }
}
