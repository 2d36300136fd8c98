using OnnxKfac.Graph;
using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// Loss and accuracy of a session's model over a data set, with the evaluation graph (no
/// backward pass) and no optimizer.
/// </summary>
public sealed class Evaluator
{
    private readonly TrainingSession _session;
    private readonly int _batchSize;
    private readonly ICollectives _collectives;
    private readonly BatchFeeder _feeder;
    private readonly int? _topK;

    /// <summary>Above this many classes no confusion matrix (nor macro F1) is kept: C² sums are reduced per evaluation.</summary>
    public const int MaxConfusionClasses = 1000;

    /// <param name="session">The session whose current weights are evaluated.</param>
    /// <param name="batchSize">Examples per run.</param>
    /// <param name="collectives">How ranks combine their sums (default: one process).</param>
    /// <param name="topK">Classifiers: also measure the top-k accuracy for this k (null: not measured).</param>
    public Evaluator(TrainingSession session, int batchSize = 256, ICollectives? collectives = null, int? topK = null)
        : this(session, batchSize, collectives ?? SingleProcess.Instance, new BatchFeeder(session), topK)
    {
    }

    internal Evaluator(TrainingSession session, int batchSize, ICollectives collectives, BatchFeeder feeder, int? topK = null)
    {
        if (batchSize < 1) throw new OnnxKfacException($"batch size must be positive, got {batchSize}");
        if (topK is < 1) throw new OnnxKfacException($"top-k must be at least 1, got {topK}");
        _session = session;
        _batchSize = batchSize;
        _collectives = collectives;
        _feeder = feeder;
        _topK = topK;
    }

    /// <summary>
    /// Loss (mean over examples) and, for classification, accuracy, confusion counts (hence
    /// macro F1) and the top-k accuracy over a whole data set. Every count is a sum reduced
    /// over the ranks, so a data-parallel evaluation gives the one-process figures.
    /// </summary>
    public Metrics Evaluate(Dataset data)
    {
        _feeder.CheckDataset(data, "evaluation");
        int classes = ClassifierClasses;
        if (_topK is { } k && classes > 0 && k > classes)
            throw new OnnxKfacException($"top-k {k} is more than the model's {classes} classes");
        // Sums, reduced over ranks in one call: loss, correct, counted, examples, top-k correct, then C × C confusion counts.
        const int Loss = 0, Correct = 1, Counted = 2, Examples = 3, TopKCorrect = 4, Confusion = 5;
        bool confusion = classes <= MaxConfusionClasses;
        var totals = new double[Confusion + (confusion ? classes * classes : 0)];
        bool sum = _session.Manifest.Loss.Reduction == "sum";
        string output = _session.Manifest.Loss.Output;
        long ignore = _session.Manifest.Loss.IgnoreIndex ?? long.MinValue;
        ForEachBatch(data, _collectives, (binding, count, loss) =>
        {
            totals[Loss] += sum ? loss : loss * count;
            totals[Examples] += count;
            if (classes == 0) return;
            var logits = binding.EvalOutput(output);
            var labels = binding.Input<long>(_feeder.Target.Name);
            for (int i = 0; i < count; i++)
            {
                if (labels[i] == ignore) continue;
                var row = logits.Slice(i * classes, classes);
                int arg = 0;
                for (int c = 1; c < row.Length; c++) if (row[c] > row[arg]) arg = c;
                int label = (int)labels[i];
                if (arg == label) totals[Correct]++;
                totals[Counted]++;
                if (confusion) totals[Confusion + label * classes + arg]++;
                if (_topK is { } topK)
                {
                    // In the top k when fewer than k classes score strictly higher than the label.
                    int above = 0;
                    for (int c = 0; c < row.Length; c++) if (row[c] > row[label]) above++;
                    if (above < topK) totals[TopKCorrect]++;
                }
            }
        });
        // Each rank evaluates its own shard; the sums are combined before the means.
        _collectives.AllReduceSum(totals);
        long counted = (long)totals[Counted], examples = (long)totals[Examples];
        if (examples == 0) throw new OnnxKfacException($"{data.Source}: the data set is empty");
        var metrics = new Metrics(sum ? totals[Loss] : totals[Loss] / examples, counted > 0 ? totals[Correct] / counted : null, (int)examples);
        if (classes == 0) return metrics;
        var counts = confusion ? new long[classes * classes] : null;
        for (int c = 0; counts is not null && c < counts.Length; c++) counts[c] = (long)totals[Confusion + c];
        return metrics with
        {
            Confusion = counts is null ? null : new ConfusionMatrix(classes, counts),
            TopK = _topK,
            TopKAccuracy = _topK is null || counted == 0 ? null : totals[TopKCorrect] / counted,
        };
    }

    /// <summary>
    /// The model's output (the loss's, <see cref="TrainingManifest"/>'s <c>Loss.Output</c>) for
    /// every example of <paramref name="data"/>, in order, in one process: <paramref name="sink"/>
    /// receives each batch's outputs (count × values per example). Labels are read but unused
    /// (give zeros for unlabelled data).
    /// </summary>
    public void Predict(Dataset data, PredictionSink sink)
    {
        ArgumentNullException.ThrowIfNull(sink);
        _feeder.CheckDataset(data, "prediction");
        string output = _session.Manifest.Loss.Output;
        ForEachBatch(data, SingleProcess.Instance, (binding, count, _) =>
        {
            var values = binding.EvalOutput(output);
            int perExample = values.Length / binding.BatchSize;
            sink(values[..(count * perExample)], count, perExample);
        });
    }

    /// <summary>The class count when the loss is a classifier's with one label per example (else 0).</summary>
    private int ClassifierClasses =>
        _feeder.ClassCount > 0 && _session.BatchShape(_feeder.Target, 1).Length == 1 ? (int)_feeder.ClassCount : 0;

    private delegate void BatchAction(BatchBinding binding, int count, double loss);

    /// <summary>Runs the evaluation graph over this rank's share of the data, in order.</summary>
    private void ForEachBatch(Dataset data, ICollectives ranks, BatchAction action)
    {
        int batch = _batchSize;
        // Each rank reads its own share (rank r: examples r·B … r·B + B − 1 of every K·B).
        var feed = _feeder.Open(data, "evaluation", _session.Bind(batch));
        using var loader = new DataLoader(data, new LoaderOptions { BatchSize = batch, Shuffle = false, Rank = ranks.Rank, Ranks = ranks.Size });
        while (feed.NextBatch(loader, out var binding, out int count))
            action(binding, count, _session.Evaluate(binding));
    }
}

/// <summary>Receives one batch of model outputs: <paramref name="count"/> examples of <paramref name="perExample"/> values each.</summary>
public delegate void PredictionSink(ReadOnlySpan<float> outputs, int count, int perExample);
