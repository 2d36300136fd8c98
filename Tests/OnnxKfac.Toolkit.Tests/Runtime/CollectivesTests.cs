using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Toolkit.Tests.Runtime;

/// <summary>
/// The collective seam: K ranks that hold the same data are one process. A stand-in for
/// MPI whose all-reduce multiplies by K (what K identical ranks would sum to) must leave the
/// trajectory of SGD, AdamW and K-FAC exactly as in one process, so every sum that crosses
/// the seam is divided by the rank count once and only once.
/// </summary>
public sealed class CollectivesTests
{
    private sealed class IdenticalRanks(int size) : ICollectives
    {
        public int Calls { get; private set; }
        public int Rank => 0;
        public int Size => size;
        public void AllReduceSum(Span<float> values) { Calls++; foreach (ref float v in values) v *= size; }
        public void AllReduceSum(Span<double> values) { Calls++; foreach (ref double v in values) v *= size; }
        public void Broadcast(Span<float> values, int root) { }
    }

    private static (List<double> Losses, float[][] Weights, Metrics Eval) Run(string optimizer, ICollectives collectives)
    {
        using var train = RuntimeFixture.Images(64, 41);
        var kfacOptions = new KfacOptions { LearningRate = 0.003, Damping = 0.01, InverseEvery = 2 };
        var graph = new TrainingGraphOptions(new LossOptions(LossKind.CrossEntropy));
        if (optimizer == "kfac") graph = kfacOptions.Configure(graph);
        using var s = TrainingSession.Create(RuntimeFixture.Fashion(), graph, new TrainingSessionOptions { Threads = 1 });
        IOptimizer opt = optimizer switch
        {
            "kfac" => new KfacOptimizer(s, kfacOptions),
            "adamw" => new AdamW(s.Parameters),
            _ => new Sgd(s.Parameters, new SgdOptions { LearningRate = 0.05, Momentum = 0.9 }),
        };
        var rec = new LossRecorder();
        var trainer = new Trainer(s, opt, new TrainerOptions { Epochs = 2, BatchSize = 16, Seed = 2, Collectives = collectives }, rec);
        trainer.Fit(train);
        var eval = trainer.Evaluate(train);
        (opt as IDisposable)?.Dispose();
        return (rec.Losses, [.. s.Parameters.Select(p => (float[])p.Value.Clone())], eval);
    }

    [Theory]
    [InlineData("sgd")]
    [InlineData("adamw")]
    [InlineData("kfac")]
    public void IdenticalRanksFollowTheSingleProcessTrajectory(string optimizer)
    {
        var one = Run(optimizer, SingleProcess.Instance);
        var ranks = new IdenticalRanks(4);
        var four = Run(optimizer, ranks);
        Assert.True(ranks.Calls > 0, "nothing crossed the collective seam");
        Assert.Equal(one.Losses, four.Losses);
        for (int k = 0; k < one.Weights.Length; k++) Assert.Equal(one.Weights[k], four.Weights[k]);
        Assert.Equal(one.Eval.Loss, four.Eval.Loss, 12);
        Assert.Equal(one.Eval.Accuracy, four.Eval.Accuracy);
    }
}
