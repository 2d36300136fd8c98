using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using Xunit.Abstractions;

namespace OnnxKfac.Toolkit.Tests.Runtime;

/// <summary>
/// The collective seam: K data-parallel ranks with batch B follow the trajectory of one
/// process with batch K·B. Here the ranks are threads of this process behind an in-memory
/// stand-in for MPI (sums in rank order, so every rank gets the same bits); the same check
/// over real MPI processes is Tests/OnnxKfac.Cli.Tests/MpiTests.cs.
/// </summary>
public sealed class CollectivesTests(ITestOutputHelper output)
{
    /// <summary>K threads as K ranks: each collective is a rendezvous over shared arrays.</summary>
    internal sealed class ThreadRanks
    {
        private readonly Barrier _barrier;
        private readonly object?[] _slots;

        public ThreadRanks(int size)
        {
            Size = size;
            _barrier = new Barrier(size);
            _slots = new object?[size];
        }

        public int Size { get; }
        public int Calls;
        public ICollectives Rank(int rank) => new Member(this, rank);

        private sealed class Member(ThreadRanks all, int rank) : ICollectives
        {
            public int Rank => rank;
            public int Size => all.Size;
            public void AllReduceSum(Span<float> values) => Reduce(values);
            public void AllReduceSum(Span<double> values) => Reduce(values);

            private void Reduce<T>(Span<T> values) where T : System.Numerics.INumber<T>
            {
                if (rank == 0) Interlocked.Increment(ref all.Calls);
                all._slots[rank] = values.ToArray();
                all._barrier.SignalAndWait();
                for (int i = 0; i < values.Length; i++)
                {
                    T sum = T.Zero;
                    for (int r = 0; r < Size; r++) sum += ((T[])all._slots[r]!)[i];
                    values[i] = sum;
                }
                all._barrier.SignalAndWait();
            }

            public void Broadcast(Span<float> values, int root)
            {
                if (rank == root) all._slots[0] = values.ToArray();
                all._barrier.SignalAndWait();
                ((float[])all._slots[0]!).CopyTo(values);
                all._barrier.SignalAndWait();
            }

            public void AllGather(ReadOnlySpan<long> mine, Span<long> all2)
            {
                all._slots[rank] = mine.ToArray();
                all._barrier.SignalAndWait();
                for (int r = 0; r < Size; r++) ((long[])all._slots[r]!).CopyTo(all2[(r * mine.Length)..]);
                all._barrier.SignalAndWait();
            }

            public void Barrier() => all._barrier.SignalAndWait();
        }
    }

    internal sealed record Outcome(List<double> Losses, float[][] Weights, Metrics Eval);

    private static Outcome Run(string optimizer, int batch, ICollectives collectives)
    {
        using var train = RuntimeFixture.Images(64, 41);
        var kfacOptions = optimizer switch
        {
            // A diagonal block (its square is taken after the ranks' sums meet) next to Kronecker ones.
            "kfac-diagonal" => new KfacOptions { LearningRate = 0.003, Damping = 0.01, InverseEvery = 2, Blocks = [new BlockOverride("net.3.*", "diagonal")] },
            // The paper's rule with Levenberg–Marquardt: vᵀFv and the loss after the step are reduced over the ranks.
            "kfac-quadratic" => new KfacOptions
            {
                Damping = 1, InverseEvery = 2, UpdateRule = KfacUpdateRule.Quadratic,
                DampingAdaptation = DampingAdaptation.LevenbergMarquardt, AdaptEvery = 1,
            },
            // KL clip with Levenberg–Marquardt: the products of the move actually taken.
            // The statistics all-reduced on every update instead of the running factors averaged before each refresh.
            "kfac-every" => new KfacOptions { LearningRate = 0.003, Damping = 0.01, InverseEvery = 2, FactorReduction = FactorReduction.EveryUpdate },
            "kfac-lm" => new KfacOptions { LearningRate = 0.003, Damping = 0.01, InverseEvery = 2, DampingAdaptation = DampingAdaptation.LevenbergMarquardt, AdaptEvery = 2 },
            _ => new KfacOptions { LearningRate = 0.003, Damping = 0.01, InverseEvery = 2 },
        };
        bool kfac = optimizer.StartsWith("kfac", StringComparison.Ordinal);
        var graph = new TrainingGraphOptions(new LossOptions(LossKind.CrossEntropy));
        if (kfac) graph = kfacOptions.Configure(graph);
        using var s = TrainingSession.Create(RuntimeFixture.Fashion(), graph, new TrainingSessionOptions { Threads = 1 });
        IOptimizer opt = optimizer switch
        {
            _ when kfac => new KfacOptimizer(s, kfacOptions),
            "adamw" => new AdamW(s.Parameters),
            _ => new Sgd(s.Parameters, new SgdOptions { LearningRate = 0.05, Momentum = 0.9 }),
        };
        var rec = new LossRecorder();
        var trainer = new Trainer(s, opt, new TrainerOptions { Epochs = 2, BatchSize = batch, Seed = 2, DropLast = true, Collectives = collectives }, rec);
        trainer.Fit(train);
        var eval = trainer.Evaluate(train);
        (opt as IDisposable)?.Dispose();
        return new Outcome(rec.Losses, [.. s.Parameters.Select(p => (float[])p.Value.Clone())], eval);
    }

    internal static Outcome[] RunRanks(string optimizer, int ranks, int batch)
    {
        var world = new ThreadRanks(ranks);
        var results = new Outcome[ranks];
        var threads = Enumerable.Range(0, ranks).Select(r => new Thread(() => results[r] = Run(optimizer, batch, world.Rank(r)))).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.True(world.Calls > 0, "nothing crossed the collective seam");
        return results;
    }

    [Theory]
    [InlineData("sgd", 2)]
    [InlineData("adamw", 4)]
    [InlineData("kfac", 2)]
    [InlineData("kfac", 4)]
    [InlineData("kfac-diagonal", 2)]
    [InlineData("kfac-quadratic", 2)]
    [InlineData("kfac-lm", 4)]
    [InlineData("kfac-every", 2)]
    public void RanksWithBatchBFollowOneProcessWithBatchKB(string optimizer, int k)
    {
        const int b = 4;
        var one = Run(optimizer, k * b, SingleProcess.Instance);
        var ranks = RunRanks(optimizer, k, b);
        foreach (var rank in ranks)
        {
            // Every rank holds the same weights, bit for bit, and reports the same losses and metrics.
            for (int p = 0; p < rank.Weights.Length; p++) Assert.Equal(ranks[0].Weights[p], rank.Weights[p]);
            Assert.Equal(ranks[0].Losses, rank.Losses);
            Assert.Equal(ranks[0].Eval, rank.Eval);
        }
        // Against one process: the same examples in every step, summed in another order (float32).
        Assert.Equal(one.Losses.Count, ranks[0].Losses.Count);
        output.WriteLine($"{optimizer}, {k} ranks: {one.Losses.Count} updates, largest relative loss difference " +
            $"{one.Losses.Zip(ranks[0].Losses).Max(t => Math.Abs(t.First - t.Second) / Math.Abs(t.First)):E2}");
        for (int i = 0; i < one.Losses.Count; i++)
            Assert.True(Math.Abs(one.Losses[i] - ranks[0].Losses[i]) <= Tolerance * Math.Abs(one.Losses[i]),
                $"update {i + 1}: one process {one.Losses[i]:R}, {k} ranks {ranks[0].Losses[i]:R}");
        Assert.Equal(one.Eval.Examples, ranks[0].Eval.Examples);
        Assert.Equal(one.Eval.Loss, ranks[0].Eval.Loss, Tolerance * 10);
    }

    /// <summary>Relative tolerance on each update's loss (see BENCHMARKS.md, "Data-parallel training").</summary>
    internal const double Tolerance = 1e-5;

    [Fact]
    public void ShardedLoaderGivesEachRankItsSliceOfTheGlobalBatch()
    {
        using var data = RuntimeFixture.Images(50, 7);
        const int b = 3, k = 4;
        long[] Labels(int rank, int ranks, int batch, bool dropLast)
        {
            using var loader = new DataLoader(data, new LoaderOptions { BatchSize = batch, Seed = 5, Rank = rank, Ranks = ranks, DropLast = dropLast });
            var f = new float[batch * 784];
            var l = new long[batch];
            var all = new List<long>();
            while (loader.TryNextBatch(f, l, out int n)) all.AddRange(Enumerable.Range(0, n).Select(i => l[i] * 10_000_000 + (long)(f[i * 784] * 1e6)));
            return [.. all];
        }
        var global = Labels(0, 1, b * k, dropLast: true);
        var shards = Enumerable.Range(0, k).Select(r => Labels(r, k, b, dropLast: true)).ToArray();
        for (int step = 0; step < global.Length / (b * k); step++)
            for (int r = 0; r < k; r++)
                Assert.Equal(global.Skip(step * b * k + r * b).Take(b), shards[r].Skip(step * b).Take(b));
        // Without DropLast (evaluation) the ranks together read every example once.
        Assert.Equal(50, Enumerable.Range(0, k).Sum(r => Labels(r, k, b, dropLast: false).Length));
    }
}
