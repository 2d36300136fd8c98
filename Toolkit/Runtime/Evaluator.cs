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

    /// <param name="session">The session whose current weights are evaluated.</param>
    /// <param name="batchSize">Examples per run.</param>
    /// <param name="collectives">How ranks combine their sums (default: one process).</param>
    public Evaluator(TrainingSession session, int batchSize = 256, ICollectives? collectives = null)
        : this(session, batchSize, collectives ?? SingleProcess.Instance, new BatchFeeder(session))
    {
    }

    internal Evaluator(TrainingSession session, int batchSize, ICollectives collectives, BatchFeeder feeder)
    {
        if (batchSize < 1) throw new OnnxKfacException($"batch size must be positive, got {batchSize}");
        _session = session;
        _batchSize = batchSize;
        _collectives = collectives;
        _feeder = feeder;
    }

    /// <summary>Loss (mean over examples) and, for classification, accuracy over a whole data set.</summary>
    public Metrics Evaluate(Dataset data)
    {
        int batch = _batchSize;
        var feed = _feeder.Open(data, "evaluation", _session.Bind(batch));
        // Each rank reads its own share (rank r: examples r·B … r·B + B − 1 of every K·B).
        using var loader = new DataLoader(data, new LoaderOptions { BatchSize = batch, Shuffle = false, Rank = _collectives.Rank, Ranks = _collectives.Size });
        double lossSum = 0;
        long correct = 0, counted = 0, examples = 0;
        bool sum = _session.Manifest.Loss.Reduction == "sum";
        string output = _session.Manifest.Loss.Output;
        while (feed.NextBatch(loader, out var binding, out int count))
        {
            double loss = _session.Evaluate(binding);
            lossSum += sum ? loss : loss * count;
            examples += count;
            if (_feeder.ClassCount > 0 && binding.InputShape(_feeder.Target.Name).Count == 1)
            {
                var logits = binding.EvalOutput(output);
                var labels = binding.Input<long>(_feeder.Target.Name);
                long ignore = _session.Manifest.Loss.IgnoreIndex ?? long.MinValue;
                for (int i = 0; i < count; i++)
                {
                    if (labels[i] == ignore) continue;
                    var row = logits.Slice(i * (int)_feeder.ClassCount, (int)_feeder.ClassCount);
                    int arg = 0;
                    for (int c = 1; c < row.Length; c++) if (row[c] > row[arg]) arg = c;
                    if (arg == labels[i]) correct++;
                    counted++;
                }
            }
        }
        // Each rank evaluates its own shard; the sums are combined before the means.
        Span<double> totals = [lossSum, correct, counted, examples];
        _collectives.AllReduceSum(totals);
        (lossSum, correct, counted, examples) = (totals[0], (long)totals[1], (long)totals[2], (long)totals[3]);
        if (examples == 0) throw new OnnxKfacException($"{data.Source}: the data set is empty");
        return new Metrics(sum ? lossSum : lossSum / examples, counted > 0 ? (double)correct / counted : null, (int)examples);
    }
}
