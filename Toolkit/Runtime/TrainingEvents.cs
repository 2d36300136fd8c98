namespace OnnxKfac.Toolkit.Runtime;

/// <summary>One update (or skipped update) of the training loop.</summary>
public readonly record struct StepReport(long Step, int Epoch, int BatchInEpoch, int BatchesPerEpoch, double Loss, bool Skipped, double ExamplesPerSecond)
{
    /// <summary>The global L2 norm of the gradient the update used, before clipping (null for a skipped update).</summary>
    public double? GradNorm { get; init; }
}

/// <summary>
/// Metrics over a whole data set. For classifiers (class-index targets with a known class
/// count) also the confusion counts, their macro F1 and, when asked for, the top-k accuracy.
/// </summary>
public readonly record struct Metrics(double Loss, double? Accuracy, int Examples)
{
    /// <summary>The k of <see cref="TopKAccuracy"/> (null: not measured).</summary>
    public int? TopK { get; init; }

    /// <summary>The share of (non-ignored) examples whose label is among the <see cref="TopK"/> largest outputs.</summary>
    public double? TopKAccuracy { get; init; }

    /// <summary>Confusion counts (true class × predicted class), for classifiers.</summary>
    public ConfusionMatrix? Confusion { get; init; }

    /// <summary>The macro-averaged F1 of <see cref="Confusion"/>.</summary>
    public double? MacroF1 => Confusion?.MacroF1;
}

/// <summary>A validation pass during training.</summary>
public readonly record struct ValidationReport(long Step, int Epoch, Metrics Metrics, bool Improved);

/// <summary>The end of an epoch.</summary>
public readonly record struct EpochReport(int Epoch, double MeanTrainLoss, Metrics? Validation);

/// <summary>Receives training progress (a progress bar, a log, a report). Calls are on the training thread.</summary>
public interface ITrainingObserver
{
    void OnStep(in StepReport step) { }
    void OnValidation(in ValidationReport validation) { }
    void OnEpoch(in EpochReport epoch) { }
    void OnMessage(string message) { }
}

/// <summary>How a run ended.</summary>
public sealed record TrainingResult
{
    public required long Steps { get; init; }
    public required int Epochs { get; init; }
    public required long SkippedSteps { get; init; }
    public required TimeSpan WallTime { get; init; }
    public Metrics? BestValidation { get; init; }
    public Metrics? FinalValidation { get; init; }
    public required string StopReason { get; init; }
    public double StepsPerSecond => WallTime.TotalSeconds > 0 ? Steps / WallTime.TotalSeconds : 0;
}
