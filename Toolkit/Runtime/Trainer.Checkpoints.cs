using OnnxKfac.Graph;
using OnnxKfac.Toolkit.Checkpoints;
using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// The trainer's part of a checkpoint: which counters, positions, random states and best
/// weights it writes, under the names <see cref="CheckpointKeys"/> fixes (weights and the
/// optimizer's own state are the checkpoint's other parts).
/// </summary>
public sealed partial class Trainer
{
    /// <summary>
    /// Writes a checkpoint. <paramref name="resultIsBest"/> marks the final checkpoint of a run
    /// whose result is its best validated weights (stored as <c>best/NAME</c> tensors, with
    /// <c>result_is_best</c> = 1) rather than its last weights (the parameters).
    /// With several ranks only rank 0 writes (every rank holds the same state).
    /// </summary>
    public void SaveCheckpoint(string path, LoaderPosition position, bool resultIsBest = false)
    {
        var shared = (_optimizer as Optim.IBatchObserver)?.SaveSharedState(_options.Collectives);   // every rank takes part
        if (_options.Collectives.Rank != 0) return;
        foreach (var p in _session.Parameters)
            foreach (var v in p.Value)
                if (!float.IsFinite(v)) throw new OnnxKfacException($"parameter '{p.Name}' holds a non-finite value; refusing to write a poisoned checkpoint to {path}");
        var cp = new Checkpoint { ModelFingerprint = _fingerprint, Parameters = _session.Parameters, Optimizer = shared ?? _optimizer.SaveState(), Config = _options.CheckpointConfig };
        cp.Longs[CheckpointKeys.Step] = _step;
        cp.Longs[CheckpointKeys.Skipped] = _skipped;
        cp.Longs[CheckpointKeys.SinceImprovement] = _sinceImprovement;
        cp.Longs[CheckpointKeys.LoaderEpoch] = position.Epoch;
        cp.Longs[CheckpointKeys.LoaderIndex] = position.Index;
        cp.Longs[CheckpointKeys.LoaderCount] = position.DatasetCount;
        cp.Words[CheckpointKeys.LoaderRng] = [position.Rng0, position.Rng1, position.Rng2, position.Rng3];
        cp.Words[CheckpointKeys.NoiseRng] = _session.NoiseState;
        cp.Doubles[CheckpointKeys.BestLoss] = _bestLoss;
        if (resultIsBest) cp.Longs[CheckpointKeys.ResultIsBest] = 1;
        if (_options.Plateau is { } plateau)
        {
            var state = plateau.SaveState();
            for (int k = 0; k < state.Length; k++) cp.Doubles[CheckpointKeys.PlateauPrefix + k] = state[k];
        }
        if (_bestMetrics is { } bm)
        {
            cp.Doubles[CheckpointKeys.BestAccuracy] = bm.Accuracy ?? double.NaN;
            cp.Longs[CheckpointKeys.BestExamples] = bm.Examples;
            if (bm.Confusion is { } c)
            {
                cp.Longs[CheckpointKeys.BestClasses] = c.Classes;
                cp.Words[CheckpointKeys.BestConfusion] = [.. c.Rows().SelectMany(row => row).Select(n => (ulong)n)];
            }
            if (bm.TopK is { } topK)
            {
                cp.Longs[CheckpointKeys.BestTopK] = topK;
                cp.Doubles[CheckpointKeys.BestTopKAccuracy] = bm.TopKAccuracy ?? double.NaN;
            }
            for (int k = 0; k < _best.Length; k++) cp.Tensors[CheckpointKeys.BestPrefix + _session.Parameters[k].Name] = _best[k];
        }
        cp.Save(path);
    }

    /// <summary>Restores weights, optimizer, counters and data position from a checkpoint of this model.</summary>
    public void Resume(Checkpoint cp, string source)
    {
        cp.RestoreInto(_session.Parameters, _fingerprint, source);
        if (cp.Optimizer is null) throw new OnnxKfacException($"{source}: checkpoint has no optimizer state");
        try { _optimizer.LoadState(cp.Optimizer); }
        catch (ArgumentException e) { throw new OnnxKfacException($"{source}: {e.Message}", e); }
        _step = cp.Longs[CheckpointKeys.Step];
        _skipped = cp.Longs[CheckpointKeys.Skipped];
        _sinceImprovement = (int)cp.Longs[CheckpointKeys.SinceImprovement];
        var rng = cp.Words[CheckpointKeys.LoaderRng];
        _resumePosition = new LoaderPosition((int)cp.Longs[CheckpointKeys.LoaderEpoch], (int)cp.Longs[CheckpointKeys.LoaderIndex], (int)cp.Longs[CheckpointKeys.LoaderCount], rng[0], rng[1], rng[2], rng[3]);
        _session.NoiseState = cp.Words[CheckpointKeys.NoiseRng];
        _bestLoss = cp.Doubles[CheckpointKeys.BestLoss];
        if (_options.Plateau is { } plateau)
        {
            var state = plateau.SaveState();
            for (int k = 0; k < state.Length; k++)
                state[k] = cp.Doubles.TryGetValue(CheckpointKeys.PlateauPrefix + k, out double v) ? v
                    : throw new OnnxKfacException($"{source}: the checkpoint has no reduce-on-plateau state (it was written by a run with another schedule)");
            plateau.LoadState(state);
        }
        if (cp.Longs.TryGetValue(CheckpointKeys.BestExamples, out long ex))
        {
            double acc = cp.Doubles[CheckpointKeys.BestAccuracy];
            _bestMetrics = new Metrics(_bestLoss, double.IsNaN(acc) ? null : acc, (int)ex)
            {
                Confusion = cp.Longs.TryGetValue(CheckpointKeys.BestClasses, out long classes)
                    ? new ConfusionMatrix((int)classes, [.. cp.Words[CheckpointKeys.BestConfusion].Select(n => (long)n)]) : null,
                TopK = cp.Longs.TryGetValue(CheckpointKeys.BestTopK, out long bestK) ? (int)bestK : null,
                TopKAccuracy = cp.Doubles.TryGetValue(CheckpointKeys.BestTopKAccuracy, out double bestTopK) && !double.IsNaN(bestTopK) ? bestTopK : null,
            };
            for (int k = 0; k < _best.Length; k++) cp.Tensors[CheckpointKeys.BestPrefix + _session.Parameters[k].Name].AsSpan().CopyTo(_best[k]);
        }
    }
}

/// <summary>The names of the trainer's entries in a checkpoint (one place, for writer, reader and tools).</summary>
public static class CheckpointKeys
{
    public const string Step = "step";
    public const string Skipped = "skipped";
    public const string SinceImprovement = "since_improvement";
    public const string LoaderEpoch = "loader_epoch";
    public const string LoaderIndex = "loader_index";
    public const string LoaderCount = "loader_count";
    public const string LoaderRng = "loader_rng";
    public const string NoiseRng = "noise_rng";
    public const string BestLoss = "best_loss";
    public const string ResultIsBest = "result_is_best";
    public const string BestAccuracy = "best_accuracy";
    public const string BestExamples = "best_examples";
    /// <summary>The best validation's confusion counts (classifiers): class count, then C × C counts, row = true class.</summary>
    public const string BestClasses = "best_classes";
    public const string BestConfusion = "best_confusion";
    public const string BestTopK = "best_top_k";
    public const string BestTopKAccuracy = "best_top_k_accuracy";
    /// <summary>Prefix of the reduce-on-plateau schedule's state (<c>plateau/0</c> … <c>plateau/3</c>: factor, best loss, bad validations, cooldown left).</summary>
    public const string PlateauPrefix = "plateau/";
    /// <summary>Prefix of the best validated weights, one tensor per parameter.</summary>
    public const string BestPrefix = "best/";
}
