using System.Diagnostics;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Checkpoints;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// The training loop: batches from a <see cref="DataLoader"/> into the session's pinned
/// buffers, one ONNX Runtime run per batch, one optimizer update per (accumulated) batch,
/// validation, early stopping, best-model keeping and atomic checkpoints from which a
/// resumed run continues with exactly the same trajectory.
/// </summary>
public sealed partial class Trainer
{
    private readonly TrainingSession _session;
    private readonly IOptimizer _optimizer;
    private readonly TrainerOptions _options;
    private readonly ITrainingObserver _observer;
    private readonly StepContext _context;
    private readonly BatchFeeder _feeder;
    private readonly Evaluator _evaluator;
    private readonly float[][] _best;
    private readonly string _fingerprint;
    private readonly GradientBuckets? _buckets;

    private long _step;
    private long _skipped;
    private double _bestLoss = double.PositiveInfinity;
    private Metrics? _bestMetrics;
    private int _sinceImprovement;
    private LoaderPosition? _resumePosition;
    private double _lastGradNorm = double.NaN;

    public Trainer(TrainingSession session, IOptimizer optimizer, TrainerOptions? options = null, ITrainingObserver? observer = null)
    {
        _session = session;
        _optimizer = optimizer;
        _options = options ?? new TrainerOptions();
        _options.Validate();
        _observer = observer ?? new NullObserver();
        _context = new StepContext(session.Parameters, session) { Collectives = _options.Collectives };
        _feeder = new BatchFeeder(session);
        _evaluator = new Evaluator(session, _options.BatchSize, _options.Collectives, _feeder, _options.TopK);
        _best = session.Parameters.Select(p => new float[p.Value.Length]).ToArray();
        _fingerprint = Checkpoint.Fingerprint(session.SourceModel, session.Parameters);
        var c = _options.Collectives;
        if (c.Size > 1)
        {
            // Data-parallel: rank r draws its share of the global batch's sampled-Fisher noise.
            session.NoiseShard = (c.Rank, c.Size);
            _buckets = new GradientBuckets(session.Parameters, c, session.Manifest.Loss.Reduction == "sum");
        }
    }

    /// <summary>Data-parallel: this process's rank and the number of ranks (0 of 1 in one process).</summary>
    public (int Rank, int Size) Ranks => (_options.Collectives.Rank, _options.Collectives.Size);

    public long Step => _step;

    /// <summary>Trains on <paramref name="train"/>, validating on <paramref name="validation"/> when given.</summary>
    public TrainingResult Fit(Dataset train, Dataset? validation = null, CancellationToken cancel = default)
    {
        var feed = _feeder.Open(train, "training", _session.Bind(_options.BatchSize));
        if (validation is not null) _feeder.CheckDataset(validation, "validation");
        int batch = _options.BatchSize;
        var ranks = _options.Collectives;
        if (ranks.Size > 1) CheckRanksAgree(train, validation);
        // With several ranks each reads its shard of every global batch of Size × batch examples; a short last
        // global batch is dropped (every rank must take part in every update).
        using var loader = new DataLoader(train, new LoaderOptions
        {
            BatchSize = batch, Shuffle = _options.Shuffle, Seed = _options.Seed, DropLast = _options.DropLast || ranks.Size > 1,
            Rank = ranks.Rank, Ranks = ranks.Size,
        });
        if (_resumePosition is { } pos) loader.Restore(pos);
        var accumulator = _options.AccumulationSteps > 1 ? new GradientAccumulator(_session.Parameters, _options.AccumulationSteps) : null;
        _context.OneRunPerUpdate = accumulator is null && _buckets is null;
        var clock = Stopwatch.StartNew();
        double epochLossSum = 0;
        int epochBatches = 0, batchInEpoch = loader.Position.Index / batch;
        string stop = "completed";
        long examplesSinceTick = 0;
        var tick = Stopwatch.StartNew();
        double throughput = 0;

        while (true)
        {
            if (cancel.IsCancellationRequested) { stop = "cancelled"; break; }
            // A run resumed from a checkpoint that already spent the step budget trains no further.
            if (_options.MaxSteps is { } budget && _step >= budget) { stop = "max steps"; break; }
            if (_options.MaxSteps is null && loader.Epoch >= _options.Epochs) break;
            int epoch = loader.Epoch;
            if (!feed.NextBatch(loader, out var binding, out int count))
            {
                if (accumulator is not null && accumulator.Pending > 0 && accumulator.Flush()) ApplyUpdate(double.NaN);
                Metrics? val = validation is not null && _options.ValidateEvery is null ? Validate(validation, epoch) : null;
                _observer.OnEpoch(new EpochReport(epoch, epochBatches > 0 ? epochLossSum / epochBatches : double.NaN, val));
                epochLossSum = 0; epochBatches = 0; batchInEpoch = 0;
                if (EarlyStop) { stop = "early stopping"; break; }
                // With a step budget the epochs run until it is spent; otherwise stop after the last epoch.
                if (_options.MaxSteps is null && loader.Epoch >= _options.Epochs) break;
                continue;
            }
            double loss = _session.Run(binding, statistics: _optimizer is not IBatchObserver o || o.NeedsStatistics(_step + 1));
            // Data-parallel: gradients, loss and count over all ranks right away, so every rank takes the same decisions below.
            if (_buckets is not null) (loss, _) = _buckets.Reduce(loss, count);
            batchInEpoch++;
            examplesSinceTick += count;
            double gradNorm = double.IsFinite(loss) ? GradientClipping.GlobalNorm(_session.Parameters) : double.NaN;
            bool finite = double.IsFinite(loss) && double.IsFinite(gradNorm);
            if (!finite && _optimizer is IRecoverable recoverable && recoverable.TryRecover(out string recovered))
            {
                _skipped++;
                accumulator?.Reset();
                (_optimizer as IBatchObserver)?.DiscardObserved();   // the skipped update's micro-batches leave no statistics
                _observer.OnMessage($"update {_step + 1}: {recovered}");
                _observer.OnStep(new StepReport(_step, epoch, batchInEpoch, loader.BatchesPerEpoch, loss, Skipped: true, throughput));
                continue;
            }
            if (!finite)
            {
                if (!_options.SkipNonFinite)
                    throw new OnnxKfacException(
                        $"non-finite loss or gradient ({loss}) at update {_step + 1} (epoch {epoch + 1}, batch {batchInEpoch}); " +
                        "no checkpoint was written after it. " + (_optimizer is IRecoverable r ? r.DivergenceAdvice + ", or --skip-nonfinite" : "Lower the learning rate, clip gradients (--clip-grad-norm), or pass --skip-nonfinite"));
                _skipped++;
                accumulator?.Reset();
                (_optimizer as IBatchObserver)?.DiscardObserved();   // the skipped update's micro-batches leave no statistics
                _observer.OnStep(new StepReport(_step, epoch, batchInEpoch, loader.BatchesPerEpoch, loss, Skipped: true, throughput));
                continue;
            }
            epochLossSum += loss;
            epochBatches++;
            if (_optimizer is IBatchObserver observer)
            {
                _context.UpdateCount = _step + 1;
                observer.ObserveBatch(_context, count);
            }
            if (accumulator is not null && !accumulator.Add(count)) continue;
            ApplyUpdate(loss, accumulator is null ? gradNorm : double.NaN);
            if (tick.ElapsedMilliseconds >= 250)
            {
                throughput = examplesSinceTick / tick.Elapsed.TotalSeconds;
                examplesSinceTick = 0;
                tick.Restart();
            }
            _observer.OnStep(new StepReport(_step, epoch, batchInEpoch, loader.BatchesPerEpoch, loss, Skipped: false, throughput) { GradNorm = _lastGradNorm });
            if (validation is not null && _options.ValidateEvery is { } every && _step % every == 0) Validate(validation, epoch);
            if (_options.CheckpointPath is { } path && _options.CheckpointEvery is { } ce && _step % ce == 0)
                SaveCheckpoint(path, loader.Position);
            if (_options.MaxSteps is { } max && _step >= max) { stop = "max steps"; break; }
            if (EarlyStop) { stop = "early stopping"; break; }
        }
        var final = validation is not null ? Evaluate(validation) : (Metrics?)null;
        bool restoreBest = _options.KeepBest && _bestMetrics is not null && final is { } f && f.Loss > _bestLoss;
        // The last checkpoint holds the last weights (a resumed run continues the trajectory) and
        // says whether the run's result is the best weights it also holds.
        if (_options.CheckpointPath is { } cp) SaveCheckpoint(cp, loader.Position, resultIsBest: restoreBest);
        if (restoreBest)
        {
            for (int k = 0; k < _best.Length; k++) _best[k].AsSpan().CopyTo(_session.Parameters[k].Value);
            final = _bestMetrics;
            _observer.OnMessage($"restored the best weights (validation loss {_bestLoss:G5})");
        }
        return new TrainingResult
        {
            Steps = _step, Epochs = loader.Epoch, SkippedSteps = _skipped, WallTime = clock.Elapsed,
            BestValidation = _bestMetrics, FinalValidation = final, StopReason = stop,
        };
    }

    private bool EarlyStop => _options.EarlyStoppingPatience is { } patience && _sinceImprovement >= patience;

    /// <param name="gradNorm">The gradient's global norm when already known (NaN: computed here, as after accumulation).</param>
    private void ApplyUpdate(double loss, double gradNorm = double.NaN)
    {
        _lastGradNorm = double.IsNaN(gradNorm) ? GradientClipping.GlobalNorm(_session.Parameters) : gradNorm;
        bool clipped = _options.ClipGradNorm is { } max && max / (GradientClipping.ClipByGlobalNorm(_session.Parameters, max) + 1e-6) < 1;   // as it decides
        _context.GradientIsLastRun = _context.OneRunPerUpdate && !clipped;   // one micro-batch, one rank, not clipped
        _context.UpdateCount = _step + 1;
        _context.Loss = loss;
        _optimizer.Step(_context);
        _step++;
    }

    /// <summary>Data-parallel: every rank must run the same model on the same data set with the same settings.</summary>
    private void CheckRanksAgree(Dataset train, Dataset? validation)
    {
        var c = _options.Collectives;
        long[] mine = [Hash(_fingerprint), train.Count, validation?.Count ?? -1, _options.BatchSize, (long)_options.Seed, _step];
        var all = new long[mine.Length * c.Size];
        c.AllGather(mine, all);
        string[] what = ["model", "training examples", "validation examples", "batch size", "seed", "resumed step"];
        for (int r = 1; r < c.Size; r++)
            for (int k = 0; k < mine.Length; k++)
                if (all[r * mine.Length + k] != all[k])
                    throw new OnnxKfacException($"rank {r} disagrees with rank 0 on the {what[k]} ({all[r * mine.Length + k]} against {all[k]}): every rank must run the same command on the same files");
    }

    private static long Hash(string text)
    {
        ulong h = 14695981039346656037;   // FNV-1a: the same on every rank and run
        foreach (char ch in text) h = (h ^ ch) * 1099511628211;
        return (long)h;
    }

    private Metrics Validate(Dataset validation, int epoch)
    {
        var m = Evaluate(validation);
        bool improved = m.Loss < _bestLoss;
        if (improved)
        {
            _bestLoss = m.Loss;
            _bestMetrics = m;
            _sinceImprovement = 0;
            for (int k = 0; k < _best.Length; k++) _session.Parameters[k].Value.AsSpan().CopyTo(_best[k]);
        }
        else _sinceImprovement++;
        _observer.OnValidation(new ValidationReport(_step, epoch, m, improved));
        if (_options.Plateau is { } plateau && plateau.Observe(m.Loss))
            _observer.OnMessage($"validation loss {m.Loss:G5} has not improved on {plateau.Best:G5} for {plateau.Patience + 1} validations: learning rate ×{plateau.ReduceBy:G3}, now {plateau.Current:G4} × the base rate");
        return m;
    }

    /// <summary>Loss (mean over examples) and, for classification, accuracy over a whole data set (no optimizer involved: <see cref="Evaluator"/>).</summary>
    public Metrics Evaluate(Dataset data) => _evaluator.Evaluate(data);

    private sealed class NullObserver : ITrainingObserver;
}
