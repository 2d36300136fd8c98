using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Tests.Data;

/// <summary>Data sets with several named inputs: each keeps its element type, and the loader writes every input of the same examples.</summary>
public sealed class MultiInputLoaderTests
{
    private const long Big = 1L << 40;   // not representable as float: ids must not pass through float

    /// <summary>Example i: ids [Big + i, i] (int64), x [i + 0.5] (float), label i % 3.</summary>
    private static Dataset Make(int n)
    {
        var ids = new long[n * 2];
        var x = new float[n];
        var y = new long[n];
        for (int i = 0; i < n; i++) { ids[2 * i] = Big + i; ids[2 * i + 1] = i; x[i] = i + 0.5f; y[i] = i % 3; }
        return Dataset.FromTensors(
            [KeyValuePair.Create("ids", DataTensor.FromInt64(ids, n, 2)), KeyValuePair.Create("x", DataTensor.FromFloat(x, n, 1))],
            DataTensor.FromInt64(y, n));
    }

    /// <summary>The example ids of the next batch, checking that the inputs and the label belong together.</summary>
    private static int[]? Next(DataLoader loader, Array[] buffers, long[] labels)
    {
        if (!loader.TryNextBatch(buffers, labels, out int count)) return null;
        var ids = (long[])buffers[0];
        var x = (float[])buffers[1];
        var result = new int[count];
        for (int k = 0; k < count; k++)
        {
            result[k] = (int)ids[2 * k + 1];
            Assert.Equal(Big + result[k], ids[2 * k]);
            Assert.Equal(result[k] + 0.5f, x[k]);
            Assert.Equal(result[k] % 3, labels[k]);
        }
        for (int k = count; k < loader.Options.BatchSize; k++) Assert.Equal((0L, 0f, 0L), (ids[2 * k], x[k], labels[k]));
        return result;
    }

    [Fact]
    public void EveryInputOfTheSameExamplesIsWrittenAndIdsStayExact()
    {
        using var ds = Make(10);
        Assert.Equal(["ids", "x"], ds.Inputs.Select(i => i.Name));
        Assert.True(ds.Inputs[0].IsInteger);
        Assert.False(ds.Inputs[1].IsInteger);
        using var loader = new DataLoader(ds, new LoaderOptions { BatchSize = 4, Seed = 2 });
        Array[] buffers = [new long[8], new float[4]];
        var labels = new long[4];
        var seen = new List<int>();
        while (Next(loader, buffers, labels) is { } batch) seen.AddRange(batch);
        Assert.Equal(Enumerable.Range(0, 10), seen.Order());
        Assert.NotEqual(Enumerable.Range(0, 10), seen);   // shuffled
    }

    [Fact]
    public void RankShardsOfSeveralInputsTogetherMakeTheGlobalBatch()
    {
        using var ds = Make(23);
        var options = new LoaderOptions { BatchSize = 6, Seed = 7, DropLast = true };
        using var single = new DataLoader(ds, options);
        using var r0 = new DataLoader(ds, options with { BatchSize = 3, Ranks = 2, Rank = 0 });
        using var r1 = new DataLoader(ds, options with { BatchSize = 3, Ranks = 2, Rank = 1 });
        Array[] six = [new long[12], new float[6]], three = [new long[6], new float[3]];
        var labels6 = new long[6];
        var labels3 = new long[3];
        int batches = 0;
        while (Next(single, six, labels6) is { } global)
        {
            var a = Next(r0, three, labels3)!;
            var b = Next(r1, three, labels3)!;
            Assert.Equal(global, a.Concat(b));
            batches++;
        }
        Assert.Equal(3, batches);
        Assert.Null(Next(r0, three, labels3));
        Assert.Null(Next(r1, three, labels3));
    }

    [Fact]
    public void FloatDataIsNotCopiedIntoIdsAndBuffersMustFit()
    {
        using var ds = Make(6);
        using var loader = new DataLoader(ds, new LoaderOptions { BatchSize = 2 });
        var e = Assert.Throws<ArgumentException>(() => loader.TryNextBatch([new long[4], new long[2]], new long[2], out _));
        Assert.Contains("float values", e.Message);
        Assert.Throws<ArgumentException>(() => loader.TryNextBatch([new long[4]], new long[2], out _));
        Assert.Throws<ArgumentException>(() => loader.TryNextBatch([new long[3], new float[2]], new long[2], out _));
        Assert.Throws<InvalidOperationException>(() => loader.TryNextBatch(new float[4], new long[2], out _));
        Assert.Throws<ArgumentException>(() => ds.WithNormalization(Normalization.DivideBy(2)));
    }

    [Fact]
    public void InputsMustHaveTheSameCountAndDistinctNames()
    {
        var labels = DataTensor.FromInt64([0, 1], 2);
        Assert.Throws<DataException>(() => Dataset.FromTensors(
            [KeyValuePair.Create("a", DataTensor.FromFloat(new float[2], 2)), KeyValuePair.Create("b", DataTensor.FromFloat(new float[3], 3))], labels));
        Assert.Throws<DataException>(() => Dataset.FromTensors(
            [KeyValuePair.Create("a", DataTensor.FromFloat(new float[2], 2)), KeyValuePair.Create("a", DataTensor.FromFloat(new float[2], 2))], labels));
    }
}
