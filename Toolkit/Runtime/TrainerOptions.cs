using OnnxKfac.Graph;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>How the training loop runs. Defaults: one epoch, batch 32, validation each epoch.</summary>
public sealed record TrainerOptions
{
    public int Epochs { get; init; } = 1;

    /// <summary>Stop after this many updates (overrides <see cref="Epochs"/> when reached first).</summary>
    public long? MaxSteps { get; init; }

    public int BatchSize { get; init; } = 32;

    public bool DropLast { get; init; }

    public bool Shuffle { get; init; } = true;

    /// <summary>Seeds shuffling and the sampled-Fisher noise; the same seed gives the same run.</summary>
    public ulong Seed { get; init; }

    /// <summary>Validate every N updates (null: only at the end of each epoch).</summary>
    public int? ValidateEvery { get; init; }

    /// <summary>Stop when the validation loss has not improved for this many validations.</summary>
    public int? EarlyStoppingPatience { get; init; }

    /// <summary>Restore the weights of the best validation at the end (default on).</summary>
    public bool KeepBest { get; init; } = true;

    /// <summary>Classifiers: evaluations also measure the top-k accuracy for this k (null: not measured).</summary>
    public int? TopK { get; init; }

    /// <summary>
    /// A reduce-on-plateau schedule the optimizer uses (the same instance as its <c>Schedule</c>,
    /// or inside a warm-up): every validation's loss is passed to it, and its state goes into
    /// checkpoints. Null: none.
    /// </summary>
    public Optim.PlateauSchedule? Plateau { get; init; }

    /// <summary>Clip gradients to this global L2 norm before each update.</summary>
    public double? ClipGradNorm { get; init; }

    /// <summary>Average gradients over this many batches per update.</summary>
    public int AccumulationSteps { get; init; } = 1;

    /// <summary>Skip updates whose loss or gradient is NaN or infinite instead of stopping.</summary>
    public bool SkipNonFinite { get; init; }

    /// <summary>Write a checkpoint here (atomically) every <see cref="CheckpointEvery"/> updates and at the end.</summary>
    public string? CheckpointPath { get; init; }

    public int? CheckpointEvery { get; init; }

    /// <summary>The run's resolved configuration (JSON), stored in every checkpoint (<see cref="Checkpoints.Checkpoint.Config"/>).</summary>
    public string CheckpointConfig { get; init; } = "";

    /// <summary>
    /// How ranks combine gradients, statistics and metrics in data-parallel training (the seam
    /// for MPI); default <see cref="SingleProcess"/>, where every collective is the identity.
    /// </summary>
    public ICollectives Collectives { get; init; } = SingleProcess.Instance;

    public void Validate()
    {
        static void Check(bool ok, string option, object? value, string rule)
        {
            if (!ok) throw new OnnxKfacException($"option {option} = {value}: {rule}");
        }
        Check(Epochs >= 1 || MaxSteps is not null, "epochs", Epochs, "must be at least 1");
        Check(MaxSteps is null or >= 1, "max-steps", MaxSteps, "must be at least 1");
        Check(BatchSize >= 1, "batch-size", BatchSize, "must be at least 1");
        Check(ValidateEvery is null or >= 1, "validate-every", ValidateEvery, "must be at least 1");
        Check(EarlyStoppingPatience is null or >= 1, "patience", EarlyStoppingPatience, "must be at least 1");
        Check(TopK is null or >= 1, "top-k", TopK, "must be at least 1");
        Check(ClipGradNorm is null or > 0, "clip-grad-norm", ClipGradNorm, "must be positive");
        Check(AccumulationSteps >= 1, "accumulate", AccumulationSteps, "must be at least 1");
        Check(CheckpointEvery is null or >= 1, "checkpoint-every", CheckpointEvery, "must be at least 1");
    }
}
