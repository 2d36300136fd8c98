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
    private readonly ManifestTensor _input;
    private readonly ManifestTensor _target;
    private readonly bool _classes;
    private readonly long _classCount;
    private readonly float[][] _best;
    private readonly string _fingerprint;
    private readonly int _labelsPerExample;
    private float[]? _staging;

    private long _step;
    private long _skipped;
    private double _bestLoss = double.PositiveInfinity;
    private Metrics? _bestMetrics;
    private int _sinceImprovement;
    private LoaderPosition? _resumePosition;

    public Trainer(TrainingSession session, IOptimizer optimizer, TrainerOptions? options = null, ITrainingObserver? observer = null)
    {
        _session = session;
        _optimizer = optimizer;
        _options = options ?? new TrainerOptions();
        _options.Validate();
        _observer = observer ?? new NullObserver();
        _context = new StepContext(session.Parameters, session);
        var inputs = session.DataInputs;
        if (inputs.Count != 1)
            throw new OnnxKfacException($"the trainer feeds one data input, but the model has {inputs.Count} ({string.Join(", ", inputs.Select(i => i.Name))})");
        _input = inputs[0];
        if (_input.ElemType is not ("float" or "int64"))
            throw new OnnxKfacException($"model input '{_input.Name}' is {_input.ElemType}; the trainer feeds float or int64 inputs");
        _target = session.TargetInput;
        _classes = _target.ElemType == "int64";
        var output = session.Manifest.Outputs.First(o => o.Name == session.Manifest.Loss.Output);
        _classCount = _classes && output.Shape is { Length: >= 2 } s ? s[1] : -1;
        _labelsPerExample = (int)session.BatchShape(_target, 1).Skip(1).Aggregate(1L, (a, d) => a * d);
        _best = session.Parameters.Select(p => new float[p.Value.Length]).ToArray();
        _fingerprint = Checkpoint.Fingerprint(session.SourceModel, session.Parameters);
    }

    public long Step => _step;

    /// <summary>Trains on <paramref name="train"/>, validating on <paramref name="validation"/> when given.</summary>
    public TrainingResult Fit(Dataset train, Dataset? validation = null, CancellationToken cancel = default)
    {
        CheckDataset(train, "training");
        if (validation is not null) CheckDataset(validation, "validation");
        int batch = _options.BatchSize;
        using var loader = new DataLoader(train, new LoaderOptions { BatchSize = batch, Shuffle = _options.Shuffle, Seed = _options.Seed, DropLast = _options.DropLast });
        if (_resumePosition is { } pos) loader.Restore(pos);
        var full = _session.Bind(batch);
        int featureLength = train.FeatureLength;
        var accumulator = _options.AccumulationSteps > 1 ? new GradientAccumulator(_session.Parameters, _options.AccumulationSteps) : null;
        var clock = Stopwatch.StartNew();
        double epochLossSum = 0;
        int epochBatches = 0, batchInEpoch = loader.Position.Index / batch;
        string stop = "completed";
        long examplesSinceTick = 0;
        var tick = Stopwatch.StartNew();
        double throughput = 0;
        Span<float> features = FeatureBuffer(full, featureLength * batch);

        while (true)
        {
            if (cancel.IsCancellationRequested) { stop = "cancelled"; break; }
            // A run resumed from a checkpoint that already spent the step budget trains no further.
            if (_options.MaxSteps is { } budget && _step >= budget) { stop = "max steps"; break; }
            if (_options.MaxSteps is null && loader.Epoch >= _options.Epochs) break;
            int epoch = loader.Epoch;
            if (!NextBatch(loader, full, features, featureLength, out var binding, out int count))
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
            double loss = _session.Run(binding);
            batchInEpoch++;
            examplesSinceTick += count;
            bool finite = double.IsFinite(loss) && double.IsFinite(GradientClipping.GlobalNorm(_session.Parameters));
            if (!finite && _optimizer is IRecoverable recoverable && recoverable.TryRecover(out string recovered))
            {
                _skipped++;
                accumulator?.Reset();
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
            ApplyUpdate(loss);
            if (tick.ElapsedMilliseconds >= 250)
            {
                throughput = examplesSinceTick / tick.Elapsed.TotalSeconds;
                examplesSinceTick = 0;
                tick.Restart();
            }
            _observer.OnStep(new StepReport(_step, epoch, batchInEpoch, loader.BatchesPerEpoch, loss, Skipped: false, throughput));
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

    private void ApplyUpdate(double loss)
    {
        if (_options.ClipGradNorm is { } max) GradientClipping.ClipByGlobalNorm(_session.Parameters, max);
        _context.UpdateCount = _step + 1;
        _context.Loss = loss;
        _optimizer.Step(_context);
        _step++;
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
        return m;
    }

    /// <summary>Loss (mean over examples) and, for classification, accuracy over a whole data set.</summary>
    public Metrics Evaluate(Dataset data)
    {
        CheckDataset(data, "evaluation");
        int batch = _options.BatchSize;
        using var loader = new DataLoader(data, new LoaderOptions { BatchSize = batch, Shuffle = false });
        var full = _session.Bind(batch);
        Span<float> features = FeatureBuffer(full, data.FeatureLength * batch);
        double lossSum = 0;
        long correct = 0, counted = 0, examples = 0;
        bool sum = _session.Manifest.Loss.Reduction == "sum";
        string output = _session.Manifest.Loss.Output;
        while (NextBatch(loader, full, features, data.FeatureLength, out var binding, out int count))
        {
            double loss = _session.Evaluate(binding);
            lossSum += sum ? loss : loss * count;
            examples += count;
            if (_classes && _classCount > 0 && binding.InputShape(_target.Name).Count == 1)
            {
                var logits = binding.EvalOutput(output);
                var labels = binding.Input<long>(_target.Name);
                long ignore = _session.Manifest.Loss.IgnoreIndex ?? long.MinValue;
                for (int i = 0; i < count; i++)
                {
                    if (labels[i] == ignore) continue;
                    var row = logits.Slice(i * (int)_classCount, (int)_classCount);
                    int arg = 0;
                    for (int c = 1; c < row.Length; c++) if (row[c] > row[arg]) arg = c;
                    if (arg == labels[i]) correct++;
                    counted++;
                }
            }
        }
        if (examples == 0) throw new OnnxKfacException($"{data.Source}: the data set is empty");
        return new Metrics(sum ? lossSum : lossSum / examples, counted > 0 ? (double)correct / counted : null, (int)examples);
    }

    // ---- data plumbing --------------------------------------------------------------------------

    /// <summary>
    /// Reads the loader's next batch into the full-size binding (or, for a short last batch,
    /// a binding of its own size), converts token ids for int64 inputs and checks the labels.
    /// False at the end of the epoch.
    /// </summary>
    private bool NextBatch(DataLoader loader, BatchBinding full, Span<float> features, int featureLength, out BatchBinding binding, out int count)
    {
        bool got = _classes
            ? loader.TryNextBatch(features, full.Input<long>(_target.Name), out count)
            : loader.TryNextBatch(features, full.Input<float>(_target.Name), out count);
        binding = full;
        if (!got) return false;
        if (count == full.BatchSize) StageInput(full, featureLength * count);
        else binding = CopyToPartial(full, count, featureLength);
        CheckLabels(binding, count, loader.Position.Index - count);
        return true;
    }

    /// <summary>The span the loader fills: the input buffer itself for float inputs, a staging buffer for int64.</summary>
    private Span<float> FeatureBuffer(BatchBinding full, int length)
    {
        if (_input.ElemType == "float") return full.Input<float>(_input.Name)[..length];
        _staging ??= new float[full.Input<long>(_input.Name).Length];
        return _staging.AsSpan(0, length);
    }

    /// <summary>Copies staged features into an int64 input (token ids).</summary>
    private void StageInput(BatchBinding b, int length)
    {
        if (_input.ElemType == "float") return;
        var dst = b.Input<long>(_input.Name);
        var src = _staging.AsSpan(0, length);
        for (int i = 0; i < src.Length; i++) dst[i] = (long)src[i];
    }

    private BatchBinding CopyToPartial(BatchBinding full, int count, int featureLength)
    {
        var part = _session.Bind(count);
        int n = count * featureLength;
        if (_input.ElemType == "float") full.Input<float>(_input.Name)[..n].CopyTo(part.Input<float>(_input.Name));
        else
        {
            var dst = part.Input<long>(_input.Name);
            for (int i = 0; i < n; i++) dst[i] = (long)_staging![i];
        }
        int labels = count * _labelsPerExample;
        if (_classes) full.Input<long>(_target.Name)[..labels].CopyTo(part.Input<long>(_target.Name));
        else full.Input<float>(_target.Name)[..labels].CopyTo(part.Input<float>(_target.Name));
        return part;
    }

    private void CheckLabels(BatchBinding b, int count, int firstExample)
    {
        if (!_classes || _classCount <= 0) return;
        var labels = b.Input<long>(_target.Name);
        long ignore = _session.Manifest.Loss.IgnoreIndex ?? long.MinValue;
        for (int i = 0; i < count * _labelsPerExample; i++)
            if ((labels[i] < 0 || labels[i] >= _classCount) && labels[i] != ignore)
                throw new OnnxKfacException($"label {labels[i]} of example {firstExample + i / _labelsPerExample} (in batch order) is out of range: the model has {_classCount} classes (0..{_classCount - 1})");
    }

    private void CheckDataset(Dataset data, string what)
    {
        if (data.Count == 0) throw new OnnxKfacException($"{data.Source}: the {what} data set is empty");
        var shape = _session.BatchShape(_input, 1);
        long expected = shape.Skip(1).Aggregate(1L, (a, d) => a * d);
        if (data.FeatureLength != expected)
            throw new OnnxKfacException(
                $"{data.Source}: examples have {data.FeatureLength} features (shape [{string.Join(",", data.FeatureShape)}]) but model input '{_input.Name}' expects {TrainingSession.Format(shape[1..])} = {expected} per example");
        var tshape = _session.BatchShape(_target, 1);
        long labels = tshape.Skip(1).Aggregate(1L, (a, d) => a * d);
        if (_classes && data.LabelKind != LabelKind.ClassIndex)
            throw new OnnxKfacException($"{data.Source}: the loss '{_session.Manifest.Loss.Kind}' needs class-index labels, but the {what} data has real-valued targets");
        if (data.LabelLength != labels)
            throw new OnnxKfacException(
                $"{data.Source}: each example has {data.LabelLength} label value(s) but the loss target '{_target.Name}' takes {labels} ({TrainingSession.Format(tshape[1..])} per example)");
    }

    // ---- checkpoints ------------------------------------------------------------------------------

    /// <summary>
    /// Writes a checkpoint. <paramref name="resultIsBest"/> marks the final checkpoint of a run
    /// whose result is its best validated weights (stored as <c>best/NAME</c> tensors, with
    /// <c>result_is_best</c> = 1) rather than its last weights (the parameters).
    /// </summary>
    public void SaveCheckpoint(string path, LoaderPosition position, bool resultIsBest = false)
    {
        foreach (var p in _session.Parameters)
            foreach (var v in p.Value)
                if (!float.IsFinite(v)) throw new OnnxKfacException($"parameter '{p.Name}' holds a non-finite value; refusing to write a poisoned checkpoint to {path}");
        var cp = new Checkpoint { ModelFingerprint = _fingerprint, Parameters = _session.Parameters, Optimizer = _optimizer.SaveState(), Config = _options.CheckpointConfig };
        cp.Longs["step"] = _step;
        cp.Longs["skipped"] = _skipped;
        cp.Longs["since_improvement"] = _sinceImprovement;
        cp.Longs["loader_epoch"] = position.Epoch;
        cp.Longs["loader_index"] = position.Index;
        cp.Longs["loader_count"] = position.DatasetCount;
        cp.Words["loader_rng"] = [position.Rng0, position.Rng1, position.Rng2, position.Rng3];
        cp.Words["noise_rng"] = _session.NoiseState;
        cp.Doubles["best_loss"] = _bestLoss;
        if (resultIsBest) cp.Longs["result_is_best"] = 1;
        if (_bestMetrics is { } bm)
        {
            cp.Doubles["best_accuracy"] = bm.Accuracy ?? double.NaN;
            cp.Longs["best_examples"] = bm.Examples;
            for (int k = 0; k < _best.Length; k++) cp.Tensors["best/" + _session.Parameters[k].Name] = _best[k];
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
        _step = cp.Longs["step"];
        _skipped = cp.Longs["skipped"];
        _sinceImprovement = (int)cp.Longs["since_improvement"];
        var rng = cp.Words["loader_rng"];
        _resumePosition = new LoaderPosition((int)cp.Longs["loader_epoch"], (int)cp.Longs["loader_index"], (int)cp.Longs["loader_count"], rng[0], rng[1], rng[2], rng[3]);
        _session.NoiseState = cp.Words["noise_rng"];
        _bestLoss = cp.Doubles["best_loss"];
        if (cp.Longs.TryGetValue("best_examples", out long ex))
        {
            double acc = cp.Doubles["best_accuracy"];
            _bestMetrics = new Metrics(_bestLoss, double.IsNaN(acc) ? null : acc, (int)ex);
            for (int k = 0; k < _best.Length; k++) cp.Tensors["best/" + _session.Parameters[k].Name].AsSpan().CopyTo(_best[k]);
        }
    }

    private sealed class NullObserver : ITrainingObserver;
}
