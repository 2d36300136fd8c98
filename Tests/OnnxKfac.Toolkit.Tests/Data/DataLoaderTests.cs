using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Tests.Data;

public sealed class DataLoaderTests
{
    /// <summary>N examples of 3 features; example i = [i, i + 0.5, -i], label i % 5.</summary>
    private static Dataset Make(int n)
    {
        var x = new float[n * 3];
        for (int i = 0; i < n; i++) { x[i * 3] = i; x[i * 3 + 1] = i + 0.5f; x[i * 3 + 2] = -i; }
        var y = new long[n];
        for (int i = 0; i < n; i++) y[i] = i % 5;
        return Dataset.FromTensors(DataTensor.FromFloat(x, n, 3), DataTensor.FromInt64(y, n));
    }

    /// <summary>Example ids of the next batch, checking that features and labels belong together.</summary>
    private static int[]? NextIds(DataLoader loader, int featureLength = 3)
    {
        int b = loader.Options.BatchSize;
        var f = new float[b * featureLength];
        var l = new long[b];
        if (!loader.TryNextBatch(f, l, out int count)) return null;
        var ids = new int[count];
        for (int k = 0; k < count; k++)
        {
            ids[k] = (int)f[k * featureLength];
            Assert.Equal(ids[k] + 0.5f, f[k * featureLength + 1]);
            Assert.Equal(-ids[k], f[k * featureLength + 2]);
            Assert.Equal(ids[k] % 5, l[k]);
        }
        for (int k = count * featureLength; k < f.Length; k++) Assert.Equal(0f, f[k]);
        for (int k = count; k < b; k++) Assert.Equal(0L, l[k]);
        return ids;
    }

    private static List<int[]> Epoch(DataLoader loader)
    {
        var batches = new List<int[]>();
        while (NextIds(loader) is { } ids) batches.Add(ids);
        return batches;
    }

    [Fact]
    public void ShuffledOrderIsPinnedForASeed()
    {
        // From an independent Python transcription of the generator (see DatasetTests).
        using var ds = Make(10);
        using var loader = new DataLoader(ds, new LoaderOptions { BatchSize = 10, Seed = 5 });

        Assert.Equal([1, 0, 4, 9, 6, 3, 7, 8, 5, 2], NextIds(loader)!);
        Assert.Null(NextIds(loader));
        Assert.Equal(1, loader.Epoch);
        Assert.Equal([0, 1, 5, 9, 6, 4, 7, 2, 8, 3], NextIds(loader)!);
    }

    [Fact]
    public void SameSeedSameBatchesOtherSeedOtherBatches()
    {
        using var ds = Make(37);
        using var a = new DataLoader(ds, new LoaderOptions { BatchSize = 8, Seed = 11 });
        using var b = new DataLoader(ds, new LoaderOptions { BatchSize = 8, Seed = 11 });
        using var c = new DataLoader(ds, new LoaderOptions { BatchSize = 8, Seed = 12 });

        for (int epoch = 0; epoch < 3; epoch++)
        {
            var ea = Epoch(a);
            Assert.Equal(ea, Epoch(b));
            Assert.NotEqual(ea, Epoch(c));
            // Every epoch is a permutation of the whole data set.
            Assert.Equal(Enumerable.Range(0, 37), ea.SelectMany(x => x).Order());
            Assert.Equal([8, 8, 8, 8, 5], ea.Select(x => x.Length));
        }
        Assert.Equal(3, a.Epoch);
    }

    [Fact]
    public void EpochsAreReshuffled()
    {
        using var ds = Make(20);
        using var loader = new DataLoader(ds, new LoaderOptions { BatchSize = 20, Seed = 1 });
        var e0 = NextIds(loader);
        Assert.Null(NextIds(loader));
        var e1 = NextIds(loader);
        Assert.NotEqual(e0, e1);
        Assert.Equal(e0!.Order(), e1!.Order());
    }

    [Fact]
    public void DropLastAndUnshuffledOrder()
    {
        using var ds = Make(10);
        using var keep = new DataLoader(ds, new LoaderOptions { BatchSize = 4, Shuffle = false });
        using var drop = new DataLoader(ds, new LoaderOptions { BatchSize = 4, Shuffle = false, DropLast = true });

        Assert.Equal(3, keep.BatchesPerEpoch);
        Assert.Equal(2, drop.BatchesPerEpoch);
        var kept = Epoch(keep);
        Assert.Equal([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], kept);
        Assert.Equal([[0, 1, 2, 3], [4, 5, 6, 7]], Epoch(drop));
        Assert.Equal([[0, 1, 2, 3], [4, 5, 6, 7]], Epoch(drop));
    }

    [Fact]
    public void DropLastWithTooFewExamplesIsRefused()
    {
        using var ds = Make(3);
        var e = Assert.Throws<DataException>(() => new DataLoader(ds, new LoaderOptions { BatchSize = 4, DropLast = true }));
        Assert.Contains("3 examples make no full batch of 4", e.Message);
    }

    [Fact]
    public void BuffersThatAreTooSmallAreRefused()
    {
        using var ds = Make(10);
        using var loader = new DataLoader(ds, new LoaderOptions { BatchSize = 4 });
        Assert.Throws<ArgumentException>(() => loader.TryNextBatch(new float[11], new long[4], out _));
        Assert.Throws<ArgumentException>(() => loader.TryNextBatch(new float[12], new long[3], out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DataLoader(ds, new LoaderOptions { BatchSize = 0 }));
    }

    [Fact]
    public void FloatLabelsForRegressionAndForClasses()
    {
        using var reg = Dataset.FromTensors(DataTensor.FromFloat([1, 2, 3], 3, 1), DataTensor.FromFloat([10, 20, 30, 40, 50, 60], 3, 2));
        using var loader = new DataLoader(reg, new LoaderOptions { BatchSize = 2, Shuffle = false });
        var f = new float[2];
        var y = new float[4];
        Assert.Throws<InvalidOperationException>(() => loader.TryNextBatch(f, new long[2], out _));
        Assert.True(loader.TryNextBatch(f, y, out int n));
        Assert.Equal(2, n);
        Assert.Equal([1f, 2], f);
        Assert.Equal([10f, 20, 30, 40], y);
        Assert.True(loader.TryNextBatch(f, y, out n));
        Assert.Equal(1, n);
        Assert.Equal([3f, 0], f);
        Assert.Equal([50f, 60, 0, 0], y);

        using var cls = Make(4);
        using var l2 = new DataLoader(cls, new LoaderOptions { BatchSize = 4, Shuffle = false });
        var labels = new float[4];
        Assert.True(l2.TryNextBatch(new float[12], labels, out _));
        Assert.Equal([0f, 1, 2, 3], labels);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    [InlineData(9)]  // the epoch's last batch
    [InlineData(10)] // between epochs
    [InlineData(23)]
    public void RestoredPositionGivesIdenticalSubsequentBatches(int batchesBefore)
    {
        using var ds = Make(37);
        var options = new LoaderOptions { BatchSize = 4, Seed = 99 };
        using var a = new DataLoader(ds, options);
        for (int i = 0; i < batchesBefore; i++) NextIds(a);
        var saved = a.Position.ToBytes();
        var expected = new List<int[]?>();
        for (int i = 0; i < 25; i++) expected.Add(NextIds(a));

        using var b = new DataLoader(ds, options);
        b.Restore(LoaderPosition.FromBytes(saved));
        for (int i = 0; i < 25; i++) Assert.Equal(expected[i], NextIds(b));
        Assert.Equal(a.Position, b.Position);
    }

    [Fact]
    public void PositionRoundTripsAndIsValidated()
    {
        var p = new LoaderPosition(3, 17, 100, 1, 2, 3, ulong.MaxValue);
        Assert.Equal(p, LoaderPosition.FromBytes(p.ToBytes()));
        Assert.Equal(LoaderPosition.ByteLength, p.ToBytes().Length);
        Assert.Contains("loader position", Assert.Throws<DataException>(() => LoaderPosition.FromBytes(new byte[56])).Message);

        using var ds = Make(10);
        using var loader = new DataLoader(ds);
        Assert.Contains("is for a data set of 100 examples, this one has 10",
            Assert.Throws<DataException>(() => loader.Restore(p)).Message);
        Assert.Contains("out of range",
            Assert.Throws<DataException>(() => loader.Restore(p with { DatasetCount = 10, Index = 11 })).Message);
    }

    [Fact]
    public void LoaderOverSplitsCoversEachSideOnly()
    {
        using var all = Make(50);
        var (train, val) = all.Split(0.3, 4);
        using (train) using (val)
        {
            using var lt = new DataLoader(train, new LoaderOptions { BatchSize = 7, Seed = 2 });
            using var lv = new DataLoader(val, new LoaderOptions { BatchSize = 7, Shuffle = false });
            var t = Epoch(lt).SelectMany(x => x).ToList();
            var v = Epoch(lv).SelectMany(x => x).ToList();
            Assert.Equal(35, t.Count);
            Assert.Equal(15, v.Count);
            Assert.Equal(Enumerable.Range(0, 50), t.Concat(v).Order());
            Assert.Equal(v.Order(), v);
        }
    }

    [Fact]
    public void SteadyStateBatchFillingDoesNotAllocate()
    {
        using var raw = Dataset.FromTensors(
            DataTensor.FromBytes(Enumerable.Range(0, 64 * 20).Select(i => (byte)i).ToArray(), 64, 4, 5),
            DataTensor.FromInt64(Enumerable.Range(0, 64).Select(i => (long)(i % 3)).ToArray(), 64));
        using var ds = raw.WithNormalization(new Normalization { Scale = 1f / 255, Mean = [0.5f], Std = [0.25f] });
        using var loader = new DataLoader(ds, new LoaderOptions { BatchSize = 8, Seed = 3 });
        var f = new float[8 * 20];
        var l = new long[8];
        var lf = new float[8];
        loader.TryNextBatch(f, l, out _); // warm-up: JIT and the first epoch's permutation
        long before = GC.GetAllocatedBytesForCurrentThread();
        int batches = 0;
        for (int i = 0; i < 200; i++)
        {
            if (loader.TryNextBatch(f, l, out _)) batches++;
            if (loader.TryNextBatch(f, lf, out _)) batches++;
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        Assert.True(batches > 300);
        Assert.True(loader.Epoch > 20);
    }
}
