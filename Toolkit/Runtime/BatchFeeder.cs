using OnnxKfac.Graph;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// Moves examples from a <see cref="DataLoader"/> into a session's batch buffers: every data
/// input of the model (float, or integer ids for int64 inputs), labels, short last batches, and
/// the checks that a data set fits the model: which data feeds which input, shapes, float data
/// never cast into ids, ids inside the vocabulary of the embedding they index, labels inside
/// the classes. Shared by training and evaluation.
/// </summary>
internal sealed class BatchFeeder
{
    private readonly TrainingSession _session;
    private readonly ManifestTensor[] _inputs;
    private readonly ManifestTensor _target;
    private readonly bool _classes;
    private readonly long _classCount;
    private readonly int _labelsPerExample;
    private readonly Dictionary<string, IReadOnlyList<IndexLimit>> _limits = new(StringComparer.Ordinal);
    private readonly HashSet<Dataset> _checked = new(ReferenceEqualityComparer.Instance);

    public BatchFeeder(TrainingSession session)
    {
        _session = session;
        _inputs = [.. session.DataInputs];
        if (_inputs.Length == 0) throw new OnnxKfacException("the model has no data input to feed");
        var index = new GraphIndex(session.SourceModel);
        foreach (var input in _inputs)
        {
            if (input.ElemType is not ("float" or "int64" or "bool"))
                throw new OnnxKfacException($"model input '{input.Name}' is {input.ElemType}; the trainer feeds float, int64 and bool inputs");
            if (input.ElemType == "int64") _limits[input.Name] = IndexInputs.Find(index, input.Name);
        }
        _target = session.TargetInput;
        _classes = _target.ElemType == "int64";
        var output = session.Manifest.Outputs.First(o => o.Name == session.Manifest.Loss.Output);
        _classCount = _classes && output.Shape is { Length: >= 2 } s ? s[1] : -1;
        _labelsPerExample = (int)Elements(session.BatchShape(_target, 1));
    }

    public ManifestTensor Target => _target;

    /// <summary>The class count of a classification target with one label per example, else -1.</summary>
    public long ClassCount => _classes ? _classCount : -1;

    /// <summary>
    /// Checks <paramref name="data"/> against the model (once per data set) and returns the feed
    /// that fills <paramref name="full"/>'s buffers from a loader over it.
    /// </summary>
    public Feed Open(Dataset data, string what, BatchBinding full)
    {
        var targets = CheckDataset(data, what);
        var buffers = new Array[targets.Length];
        var masks = new List<(long[] From, bool[] To)>();
        for (int i = 0; i < targets.Length; i++)
        {
            var buffer = full.InputArray(targets[i].Name);
            if (buffer is bool[] mask)
            {
                // The loader writes integers; a bool input is staged as 0/1 and converted per batch.
                var staged = new long[mask.Length];
                masks.Add((staged, mask));
                buffer = staged;
            }
            buffers[i] = buffer;
        }
        return new Feed(this, full, buffers, full.InputArray(_target.Name), [.. masks]);
    }

    /// <summary>
    /// Checks that <paramref name="data"/> fits the model and returns, for each of its inputs,
    /// the model input it feeds. One unnamed input feeds a model with one data input; named
    /// inputs feed the model inputs of the same names, and every model input needs one.
    /// </summary>
    public ManifestTensor[] CheckDataset(Dataset data, string what)
    {
        if (data.Count == 0) throw new OnnxKfacException($"{data.Source}: the {what} data set is empty");
        var targets = Map(data);
        if (_checked.Contains(data)) return targets;
        for (int i = 0; i < targets.Length; i++) CheckInput(data, i, targets[i]);
        var tshape = _session.BatchShape(_target, 1);
        long labels = Elements(tshape);
        if (_classes && data.LabelKind != LabelKind.ClassIndex)
            throw new OnnxKfacException($"{data.Source}: the loss '{_session.Manifest.Loss.Kind}' needs class-index labels, but the {what} data has real-valued targets");
        if (data.LabelLength != labels)
            throw new OnnxKfacException(
                $"{data.Source}: each example has {data.LabelLength} label value(s) but the loss target '{_target.Name}' takes {labels} ({TrainingSession.Format(tshape[1..])} per example)");
        _checked.Add(data);
        return targets;
    }

    private ManifestTensor[] Map(Dataset data)
    {
        var given = data.Inputs;
        string modelInputs = string.Join(", ", _inputs.Select(i => $"'{i.Name}'"));
        if (given.Count == 1 && given[0].Name is null)
        {
            if (_inputs.Length != 1)
                throw new OnnxKfacException(
                    $"{data.Source}: the data has one block of features but the model has {_inputs.Length} data inputs ({modelInputs}); give one named tensor per input");
            return [_inputs[0]];
        }
        var byName = _inputs.ToDictionary(i => i.Name, StringComparer.Ordinal);
        var result = new ManifestTensor[given.Count];
        for (int i = 0; i < given.Count; i++)
            result[i] = byName.GetValueOrDefault(given[i].Name ?? "") ?? throw new OnnxKfacException(
                $"{given[i].Source}: '{given[i].Name}' is not a data input of the model (its data inputs: {modelInputs})");
        foreach (var input in _inputs)
            if (!result.Contains(input))
                throw new OnnxKfacException(
                    $"{data.Source}: no data for model input '{input.Name}' (the data has {string.Join(", ", given.Select(g => $"'{g.Name}'"))})");
        return result;
    }

    private void CheckInput(Dataset data, int i, ManifestTensor input)
    {
        var d = data.Inputs[i];
        var shape = _session.BatchShape(input, 1);
        long expected = Elements(shape);
        if (d.Length != expected)
            throw new OnnxKfacException(
                $"{d.Source}: examples have {d.Length} features (shape [{string.Join(",", d.Shape)}]) but model input '{input.Name}' expects {TrainingSession.Format(shape[1..])} = {expected} per example");
        if (input.ElemType == "float") return;
        string what = input.ElemType == "bool" ? "a bool mask (0 or 1)" : "int64 ids";
        if (!d.IsInteger)
            throw new OnnxKfacException(
                $"{d.Source}: holds float values but model input '{input.Name}' takes {what}; float data is never cast: store it as integers (e.g. numpy int64 or uint8)");
        if (data.Normalization is not null)
            throw new OnnxKfacException($"{data.Source}: a normalization does not apply to model input '{input.Name}', which takes {what}");
        if (input.ElemType == "bool") CheckMask(data, i, input);
        else if (_limits[input.Name] is { Count: > 0 } limits) CheckIds(data, i, input, limits);
    }

    /// <summary>A bool input's data holds only 0 and 1 (a key-padding mask): anything else names the file, the input and the row.</summary>
    private static void CheckMask(Dataset data, int i, ManifestTensor input) =>
        CheckRange(data, i, input, 2, v => $"holds {v}", "; a bool input takes 0 or 1");

    /// <summary>Every id of an input that indexes an embedding lies in [0, rows): a bad one names the file, the input and the row.</summary>
    private static void CheckIds(Dataset data, int i, ManifestTensor input, IReadOnlyList<IndexLimit> limits)
    {
        var limit = limits.MinBy(l => l.Size)!;
        CheckRange(data, i, input, limit.Size, id => $"holds id {id}",
            $", outside the vocabulary [0, {limit.Size}) of '{limit.Table}' that {limit.Node} looks it up in", " (Gather would silently read a row from the end)");
    }

    /// <summary>Every integer of input <paramref name="i"/> lies in [0, <paramref name="size"/>); the first that does not is one error naming file, input, row and position, then <paramref name="why"/> (and <paramref name="ifNegative"/> for a negative value).</summary>
    private static void CheckRange(Dataset data, int i, ManifestTensor input, long size, Func<long, string> what, string why, string ifNegative = "")
    {
        var d = data.Inputs[i];
        var values = new long[d.Length];
        for (int e = 0; e < data.Count; e++)
        {
            data.ReadIds(i, e, values);
            for (int k = 0; k < values.Length; k++)
            {
                long v = values[k];
                if (v >= 0 && v < size) continue;
                throw new OnnxKfacException(
                    $"{d.Source}: row {data.SourceIndex(e)} of input '{input.Name}' {what(v)} (value {k} of the row){why}" + (v < 0 ? ifNegative : ""));
            }
        }
    }

    /// <summary>Checks a batch's class labels against the class count.</summary>
    private void CheckLabels(BatchBinding b, int count, int firstExample)
    {
        if (!_classes || _classCount <= 0) return;
        var labels = b.Input<long>(_target.Name);
        long ignore = _session.Manifest.Loss.IgnoreIndex ?? long.MinValue;
        for (int i = 0; i < count * _labelsPerExample; i++)
            if ((labels[i] < 0 || labels[i] >= _classCount) && labels[i] != ignore)
                throw new OnnxKfacException($"label {labels[i]} of example {firstExample + i / _labelsPerExample} (in batch order) is out of range: the model has {_classCount} classes (0..{_classCount - 1})");
    }

    /// <summary>A short last batch: the full binding's first <paramref name="count"/> examples copied into a binding of that size.</summary>
    private BatchBinding CopyToPartial(BatchBinding full, int count)
    {
        var part = _session.Bind(count);
        foreach (var input in _inputs.Append(_target))
        {
            var to = part.InputArray(input.Name);
            Array.Copy(full.InputArray(input.Name), to, to.Length);
        }
        return part;
    }

    private static long Elements(long[] batchShape) => batchShape.Skip(1).Aggregate(1L, (a, d) => a * d);

    /// <summary>Fills one binding's buffers from loaders over one data set.</summary>
    internal sealed class Feed(BatchFeeder feeder, BatchBinding full, Array[] inputs, Array labels, (long[] From, bool[] To)[] masks)
    {
        /// <summary>
        /// Reads the loader's next batch into the full-size binding (or, for a short last batch,
        /// a binding of its own size) and checks the labels. False at the end of the epoch.
        /// </summary>
        public bool NextBatch(DataLoader loader, out BatchBinding binding, out int count)
        {
            binding = full;
            if (!loader.TryNextBatch(inputs, labels, out count)) return false;
            foreach (var (from, to) in masks)
                for (int k = 0; k < to.Length; k++) to[k] = from[k] != 0;
            if (count != full.BatchSize) binding = feeder.CopyToPartial(full, count);
            feeder.CheckLabels(binding, count, loader.Position.Index - count);
            return true;
        }
    }
}
