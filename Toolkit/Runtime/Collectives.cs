namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// The collective operations data-parallel training needs, as MPI provides them: every rank
/// calls each operation in the same order. The trainer averages gradients and combines
/// evaluation sums through it, K-FAC its factor statistics. <see cref="SingleProcess"/> is
/// the implementation for one process (every operation is the identity).
/// </summary>
public interface ICollectives
{
    /// <summary>This process's rank, 0 ≤ Rank &lt; Size.</summary>
    int Rank { get; }

    /// <summary>The number of ranks.</summary>
    int Size { get; }

    /// <summary>Element-wise sum over all ranks, in place on every rank.</summary>
    void AllReduceSum(Span<float> values);

    /// <inheritdoc cref="AllReduceSum(Span{float})"/>
    void AllReduceSum(Span<double> values);

    /// <summary>Rank <paramref name="root"/>'s values, copied to every rank.</summary>
    void Broadcast(Span<float> values, int root);

    /// <summary>Every rank's <paramref name="mine"/>, concatenated in rank order into <paramref name="all"/> (Size × mine.Length).</summary>
    void AllGather(ReadOnlySpan<long> mine, Span<long> all);

    /// <summary>Returns on a rank once every rank has called it.</summary>
    void Barrier();
}

/// <summary>One process: ranks 0 of 1, every collective is the identity.</summary>
public sealed class SingleProcess : ICollectives
{
    public static SingleProcess Instance { get; } = new();

    private SingleProcess() { }

    public int Rank => 0;
    public int Size => 1;
    public void AllReduceSum(Span<float> values) { }
    public void AllReduceSum(Span<double> values) { }
    public void Broadcast(Span<float> values, int root)
    {
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), root, "a single process has only rank 0");
    }

    public void AllGather(ReadOnlySpan<long> mine, Span<long> all) => mine.CopyTo(all);
    public void Barrier() { }
}
