using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// Read-only views of the state a checkpoint carries, so tests can assert that
/// <see cref="Resume"/> restores each piece itself, not only a trajectory that happens to
/// match (losses do not depend on the Fisher noise, the best loss or the patience counter).
/// </summary>
public sealed partial class Trainer
{
    internal long SkippedSteps => _skipped;

    /// <summary>The update count the learning-rate schedule sees at the next update.</summary>
    internal long NextUpdate => _step + 1;

    internal double BestLoss => _bestLoss;

    internal Metrics? BestMetrics => _bestMetrics;

    internal int SinceImprovement => _sinceImprovement;

    internal IReadOnlyList<float[]> BestWeights => _best;

    /// <summary>Where the next <see cref="Fit"/> starts reading (null: from the beginning).</summary>
    internal LoaderPosition? ResumePosition => _resumePosition;

    internal ulong[] NoiseState => _session.NoiseState;

    internal IOptimizer Optimizer => _optimizer;
}
