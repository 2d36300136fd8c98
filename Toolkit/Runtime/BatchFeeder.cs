using OnnxKfac.Graph;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// Moves examples from a <see cref="DataLoader"/> into a session's batch buffers: features
/// (float, or token ids staged for int64 inputs), labels, short last batches, and the checks
/// that a data set fits the model and its labels the classes. Shared by training and evaluation.
/// </summary>
internal sealed class BatchFeeder
{
    private readonly TrainingSession _session;
    private readonly ManifestTensor _input;
    private readonly ManifestTensor _target;
    private readonly bool _classes;
    private readonly long _classCount;
    private readonly int _labelsPerExample;
    private float[]? _staging;

    public BatchFeeder(TrainingSession session)
    {
        _session = session;
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
    }

    public ManifestTensor Target => _target;

    /// <summary>The class count of a classification target with one label per example, else -1.</summary>
    public long ClassCount => _classes ? _classCount : -1;

    /// <summary>
    /// Reads the loader's next batch into the full-size binding (or, for a short last batch,
    /// a binding of its own size), converts token ids for int64 inputs and checks the labels.
    /// False at the end of the epoch.
    /// </summary>
    public bool NextBatch(DataLoader loader, BatchBinding full, Span<float> features, int featureLength, out BatchBinding binding, out int count)
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
    public Span<float> FeatureBuffer(BatchBinding full, int length)
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

    public void CheckDataset(Dataset data, string what)
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
}
