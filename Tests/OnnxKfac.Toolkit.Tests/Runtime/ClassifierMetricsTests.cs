using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Toolkit.Tests.Runtime;

/// <summary>Confusion counts, macro F1 and top-k accuracy of <see cref="Evaluator"/>, in one process and over ranks.</summary>
public sealed class ClassifierMetricsTests
{
    [Fact]
    public void MacroF1IsScikitLearnsMeanOverTheClassesPresentInLabelsOrPredictions()
    {
        // y_true = [0,0,1,1,2,2], y_pred = [0,1,1,1,0,2]; class 3 neither occurs nor is predicted.
        // sklearn.metrics.f1_score(y_true, y_pred, average="macro") = (1/2 + 4/5 + 2/3) / 3.
        var m = new ConfusionMatrix(4, [1, 1, 0, 0, /**/ 0, 2, 0, 0, /**/ 1, 0, 1, 0, /**/ 0, 0, 0, 0]);
        Assert.Equal(0.5, m.F1(0)!.Value, 12);
        Assert.Equal(0.8, m.F1(1)!.Value, 12);
        Assert.Equal(2.0 / 3, m.F1(2)!.Value, 12);
        Assert.Null(m.F1(3));
        Assert.Equal((0.5 + 0.8 + 2.0 / 3) / 3, m.MacroF1!.Value, 12);
        Assert.Equal(3, m.Count(0, 1) + m.Count(1, 1));   // three examples predicted as class 1
        Assert.Equal([1L, 0, 1, 0], m.Rows()[2]);
        // A class that occurs but is never predicted right counts with F1 0.
        Assert.Equal(0.0, new ConfusionMatrix(2, [0, 3, 0, 1]).F1(0));
    }

    [Fact]
    public void ConfusionCountsTopKAndAccuracyAgreeWithTheOutputs()
    {
        using var data = RuntimeFixture.Images(50, 7);
        using var session = RuntimeFixture.FashionSession();
        var m = new Evaluator(session, 16, topK: 3).Evaluate(data);
        var c = m.Confusion!;
        Assert.Equal(10, c.Classes);
        long total = 0, diagonal = 0;
        for (int t = 0; t < 10; t++)
            for (int p = 0; p < 10; p++) { total += c.Count(t, p); if (t == p) diagonal += c.Count(t, p); }
        Assert.Equal(50, total);
        Assert.Equal(m.Accuracy!.Value, diagonal / 50.0, 12);

        // The same figures from the model's outputs (predict), counted here.
        var outputs = new List<float>();
        new Evaluator(session, 16).Predict(data, (o, count, width) => { Assert.Equal(10, width); outputs.AddRange(o.ToArray()); });
        Assert.Equal(500, outputs.Count);
        var labels = new long[1];
        var features = new float[784];
        int top3 = 0;
        var counts = new long[100];
        for (int i = 0; i < 50; i++)
        {
            data.CopyExample(i, features, labels);
            var row = outputs.GetRange(i * 10, 10);
            int arg = row.IndexOf(row.Max());
            counts[labels[0] * 10 + arg]++;
            if (row.Count(v => v > row[(int)labels[0]]) < 3) top3++;
        }
        Assert.Equal(new ConfusionMatrix(10, counts), c);
        Assert.Equal(3, m.TopK);
        Assert.Equal(top3 / 50.0, m.TopKAccuracy!.Value, 12);
        Assert.True(m.TopKAccuracy > m.Accuracy, $"top-3 {m.TopKAccuracy} should beat top-1 {m.Accuracy} on an untrained model");
        // top-1 is the accuracy; the full class count is always right.
        Assert.Equal(m.Accuracy, new Evaluator(session, 16, topK: 1).Evaluate(data).TopKAccuracy);
        Assert.Equal(1.0, new Evaluator(session, 16, topK: 10).Evaluate(data).TopKAccuracy);
    }

    [Fact]
    public void RanksReduceTheConfusionCountsToTheOneProcessMatrix()
    {
        using var data = RuntimeFixture.Images(37, 8);   // not a multiple of the ranks' batches
        Metrics one;
        using (var session = RuntimeFixture.FashionSession()) one = new Evaluator(session, 4, topK: 2).Evaluate(data);
        var world = new CollectivesTests.ThreadRanks(3);
        var results = new Metrics[3];
        var threads = Enumerable.Range(0, 3).Select(r => new Thread(() =>
        {
            using var session = RuntimeFixture.FashionSession();
            results[r] = new Evaluator(session, 4, world.Rank(r), topK: 2).Evaluate(data);
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.True(world.Calls > 0, "nothing crossed the collective seam");
        foreach (var m in results)
        {
            Assert.Equal(one.Confusion, m.Confusion);
            Assert.Equal(one.Examples, m.Examples);
            Assert.Equal(one.TopKAccuracy, m.TopKAccuracy);
            Assert.Equal(one.MacroF1, m.MacroF1);
        }
    }

    [Fact]
    public void TopKAboveTheClassCountIsRefused()
    {
        using var data = RuntimeFixture.Images(8, 1);
        using var session = RuntimeFixture.FashionSession();
        var e = Assert.Throws<Graph.OnnxKfacException>(() => new Evaluator(session, 4, topK: 11).Evaluate(data));
        Assert.Contains("top-k 11 is more than the model's 10 classes", e.Message);
    }
}
