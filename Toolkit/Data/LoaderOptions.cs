namespace OnnxKfac.Toolkit.Data;

/// <summary>How a <see cref="DataLoader"/> batches and orders examples. Immutable; defaults documented per property.</summary>
public sealed record LoaderOptions
{
    /// <summary>Examples per batch. Default 32.</summary>
    public int BatchSize { get; init; } = 32;

    /// <summary>Reshuffle every epoch. Default true. When false, examples come in data set order.</summary>
    public bool Shuffle { get; init; } = true;

    /// <summary>Seed of the shuffling generator (xoshiro256**, identical on every platform and .NET version). Default 0.</summary>
    public ulong Seed { get; init; }

    /// <summary>Drop the last, short batch of each epoch. Default false: the last batch may hold fewer than <see cref="BatchSize"/> examples.</summary>
    public bool DropLast { get; init; }

    /// <summary>
    /// For data sets that can only be read front to back (streamed gzipped IDX): the number of
    /// examples held in the shuffle buffer. Each output is drawn at random from the buffer and
    /// replaced by the next example read, so an example moves at most about this far from its
    /// place in the file. A larger buffer shuffles better and costs
    /// ShuffleBufferSize x FeatureLength x 4 bytes; files sorted by class need a buffer about as
    /// large as the file (or random access: an uncompressed IDX file, or in-memory loading).
    /// Random-access data sets are always fully shuffled and ignore this. Default 4096.
    /// </summary>
    public int ShuffleBufferSize { get; init; } = 4096;

    /// <summary>
    /// Data-parallel sharding: this process's rank, 0 ≤ Rank &lt; <see cref="Ranks"/>. Default 0.
    /// With K ranks and batch B, the epoch's (seeded) order is cut into global batches of K·B
    /// examples and rank r reads examples r·B … r·B + B − 1 of each: the K ranks together see
    /// exactly the batches one process with batch K·B sees, in the same order.
    /// </summary>
    public int Rank { get; init; }

    /// <summary>The number of ranks sharing the data (see <see cref="Rank"/>). Default 1.</summary>
    public int Ranks { get; init; } = 1;

    internal void Validate()
    {
        if (Ranks <= 0) throw new ArgumentOutOfRangeException(nameof(Ranks), Ranks, "LoaderOptions.Ranks must be positive.");
        if (Rank < 0 || Rank >= Ranks) throw new ArgumentOutOfRangeException(nameof(Rank), Rank, $"LoaderOptions.Rank must be in [0, {Ranks}).");
        if (BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "LoaderOptions.BatchSize must be positive.");
        if (ShuffleBufferSize <= 0) throw new ArgumentOutOfRangeException(nameof(ShuffleBufferSize), ShuffleBufferSize, "LoaderOptions.ShuffleBufferSize must be positive.");
    }
}
