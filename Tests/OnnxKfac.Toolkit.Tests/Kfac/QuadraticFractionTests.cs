using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Runtime;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Toolkit.Tests.Kfac;

/// <summary>
/// The quadratic rule's Fisher products on a fraction of the batch (<see cref="KfacOptions.QuadraticFraction"/>):
/// the Jacobian-vector-product pass runs over views of the batch's first ⌈f·N⌉ examples.
/// </summary>
public sealed class QuadraticFractionTests
{
    private const int In = 3, Out = 2, N = 6;

    private static float[] Values(int count, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    /// <summary>Q = [vᵢᵀFvⱼ] of the linear model at a batch of <paramref name="rows"/> (the first rows of one data set), its JVP pass seeing <paramref name="fraction"/>.</summary>
    private static float[] Products(ModelProto model, LossReduction reduction, int rows, double fraction, out int examples)
    {
        var options = new KfacOptions { UpdateRule = KfacUpdateRule.Quadratic, QuadraticFraction = fraction, Fallback = FallbackBlock.Identity };
        var graph = options.Configure(new TrainingGraphOptions(new LossOptions(LossKind.Mse) { Reduction = reduction }));
        Assert.Equal(fraction, graph.JvpFraction);
        using var session = TrainingSession.Create(model, graph, new TrainingSessionOptions { Threads = 1 });
        var batch = session.Bind(rows);
        Values(N * In, 1).AsSpan(0, rows * In).CopyTo(batch.Input<float>("x"));
        Values(N * Out, 2).AsSpan(0, rows * Out).CopyTo(batch.Input<float>(session.TargetInput.Name));
        session.Run(batch);
        int seed = 10;
        foreach (var p in session.Parameters)
            for (int k = 0; k < 2; k++)
                Values(p.Value.Length, seed++).CopyTo(session.GetInput(JvpGraphBuilder.TangentName(p.Name, k)));
        session.RunExtra("jvp");
        examples = session.FisherProductExamples(rows);
        return session.GetOutput(JvpGraphBuilder.QuadraticName).ToArray();
    }

    [Theory]
    [InlineData(LossReduction.Mean)]
    [InlineData(LossReduction.Sum)]
    public void TheProductsAreTheBatchsFirstExamplesScaledToTheBatch(LossReduction reduction)
    {
        var model = ExactAnswerTests.Linear();
        // f = 0.4 of 6 examples: the first ⌈2.4⌉ = 3.
        var subset = Products(model, reduction, N, 0.4, out int k);
        Assert.Equal(3, k);
        var alone = Products(model, reduction, 3, 1, out _);
        var whole = Products(model, reduction, N, 1, out int all);
        Assert.Equal(N, all);
        // A mean's products over the first 3 examples estimate the batch's as they are; a sum's are N/k times theirs.
        double scale = reduction == LossReduction.Sum ? 2 : 1;
        for (int i = 0; i < 4; i++)
            Assert.True(Math.Abs(subset[i] - scale * alone[i]) <= 1e-5 * Math.Abs(scale * alone[i]) + 1e-7, $"Q[{i}]: {subset[i]} vs {scale} × {alone[i]}");
        // ... and they are not the whole batch's.
        Assert.True(Enumerable.Range(0, 4).Any(i => Math.Abs(subset[i] - whole[i]) > 1e-3 * Math.Abs(whole[i])), string.Join(", ", subset) + " | " + string.Join(", ", whole));
    }

    [Fact]
    public void AModelWithAFixedBatchSeesTheWholeBatch()
    {
        // An export with a static batch bakes N into its shapes: a prefix is not a batch it takes.
        var model = ExactAnswerTests.Linear();
        foreach (var vi in model.Graph.Input.Concat(model.Graph.Output))
            if (vi.Name is "x" or "y") vi.Type.TensorType.Shape.Dim[0].DimValue = N;
        var fixedBatch = Products(model, LossReduction.Mean, N, 0.4, out int k);
        Assert.Equal(N, k);
        Assert.Equal(Products(ExactAnswerTests.Linear(), LossReduction.Mean, N, 1, out _), fixedBatch);
    }

    [Fact]
    public void TheFractionIsChecked()
    {
        foreach (double bad in new[] { 0, -0.5, 1.5, double.NaN })
        {
            var e = Assert.Throws<ArgumentException>(() => new KfacOptions { QuadraticFraction = bad });
            Assert.Equal(nameof(KfacOptions.QuadraticFraction), e.ParamName);
        }
        Assert.Throws<Graph.OnnxKfacException>(() => new TrainingGraphOptions(new LossOptions(LossKind.Mse)) { JvpFraction = 0 });
    }
}
