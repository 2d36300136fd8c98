using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Tests.Data;

/// <summary>A fact that xunit reports as skipped (not passed) when the Fashion-MNIST files are not installed.</summary>
public sealed class FashionMnistFactAttribute : FactAttribute
{
    public const string Folder = "/usr/share/datasets/fashion-mnist";

    public FashionMnistFactAttribute()
    {
        if (!File.Exists(Path.Combine(Folder, "t10k-images-idx3-ubyte.gz")) || !File.Exists(Path.Combine(Folder, "train-images-idx3-ubyte.gz")))
            Skip = $"Fashion-MNIST is not installed in {Folder}.";
    }
}

[Trait("Category", "RealData")]
public sealed class FashionMnistTests
{
    private static string FilePath(string name) => Path.Combine(FashionMnistFactAttribute.Folder, name);

    [FashionMnistFact]
    public void TestSetHasTenThousandImagesAndBalancedLabels()
    {
        using var ds = Idx.OpenDataset(FilePath("t10k-images-idx3-ubyte.gz"), FilePath("t10k-labels-idx1-ubyte.gz"),
            new DataOptions { ClassCount = 10 });

        Assert.Equal(10000, ds.Count);
        Assert.Equal([28L, 28], ds.FeatureShape);
        var counts = new int[10];
        var f = new float[784];
        var l = new long[1];
        for (int i = 0; i < ds.Count; i++)
        {
            ds.CopyExample(i, f, l);
            counts[l[0]]++;
        }
        Assert.All(counts, c => Assert.Equal(1000, c));
    }

    [FashionMnistFact]
    public void StreamedTestSetEqualsInMemory()
    {
        string images = FilePath("t10k-images-idx3-ubyte.gz"), labels = FilePath("t10k-labels-idx1-ubyte.gz");
        using var mem = Idx.OpenDataset(images, labels, new DataOptions { Streaming = StreamingMode.InMemory });
        using var str = Idx.OpenDataset(images, labels, new DataOptions { Streaming = StreamingMode.Streamed });
        var options = new LoaderOptions { BatchSize = 500, Shuffle = false };
        using var a = new DataLoader(mem, options);
        using var b = new DataLoader(str, options);
        var fa = new float[500 * 784];
        var fb = new float[500 * 784];
        var la = new long[500];
        var lb = new long[500];
        int batches = 0;
        while (a.TryNextBatch(fa, la, out int n))
        {
            Assert.True(b.TryNextBatch(fb, lb, out int m));
            Assert.Equal(n, m);
            Assert.True(fa.AsSpan().SequenceEqual(fb));
            Assert.True(la.AsSpan().SequenceEqual(lb));
            batches++;
        }
        Assert.Equal(20, batches);
    }

    [FashionMnistFact]
    public void TrainingSetStatisticsMatchPublishedValues()
    {
        using var ds = Idx.OpenDataset(FilePath("train-images-idx3-ubyte.gz"), FilePath("train-labels-idx1-ubyte.gz"),
            new DataOptions { ClassCount = 10, ExpectedFeatureShape = [1, 28, 28] });
        Assert.Equal(60000, ds.Count);

        var norm = Normalization.Compute(ds, NormalizationAxis.PerChannel, scale: 1f / 255);

        // The values used with torchvision for Fashion-MNIST: mean 0.2860, std 0.3530.
        Assert.Equal(0.2860, norm.Mean![0], 3);
        Assert.Equal(0.3530, norm.Std![0], 3);
    }
}
