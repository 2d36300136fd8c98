using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// The buffers of one batch size: data inputs and targets the caller fills, and the
/// outputs ONNX Runtime writes (loss, model outputs, layer taps), each a pinned array
/// bound once. Output shapes are learned from one probe run at bind time.
/// </summary>
public sealed class BatchBinding : IDisposable
{
    private readonly Dictionary<string, TensorBuffer> _inputs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, TensorBuffer> _outputs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, TensorBuffer> _evalOutputs = new(StringComparer.Ordinal);
    private readonly TrainingSession _session;
    private readonly TensorBuffer _loss;
    private OrtIoBinding? _evalBinding;
    private JvpBatch? _jvpBinding;
    private OrtIoBinding? _lightBinding;
    private TensorBuffer? _lightLoss;
    private readonly Dictionary<string, TensorBuffer> _lightOutputs = new(StringComparer.Ordinal);
    private TensorBuffer? _evalLoss;

    internal BatchBinding(TrainingSession session, int batchSize)
    {
        _session = session;
        BatchSize = batchSize;
        var m = session.Manifest;
        foreach (var input in m.Inputs.Where(i => i.Role is TensorRole.Data or TensorRole.Target or TensorRole.Noise))
        {
            var shape = input.Role == TensorRole.Noise ? NoiseShape(m, input, batchSize) : session.BatchShape(input, batchSize);
            _inputs[input.Name] = TensorBuffer.Create(input.ElemType, shape, input.Name);
        }
        if (m.Fisher is { } f) NoiseBuffer = _inputs[f.NoiseInput];
        TrainBinding = session.Train.CreateIoBinding();
        foreach (var (name, buffer) in _inputs) TrainBinding.BindInput(name, buffer.Value);
        foreach (var (name, buffer) in session.ParameterValues) TrainBinding.BindInput(name, buffer.Value);
        foreach (var (name, buffer) in ProbeAndAllocate(session.Train, TrainBinding, m, _outputs, session)) TrainBinding.BindOutput(name, buffer.Value);
        _loss = _outputs[m.Loss.Loss];
    }

    public int BatchSize { get; }

    internal OrtIoBinding TrainBinding { get; }

    internal TensorBuffer? NoiseBuffer { get; }

    /// <summary>The evaluation graph (loss and outputs only) over this batch's inputs (made on first use).</summary>
    internal OrtIoBinding EvalBinding =>
        _evalBinding ??= BindAnother(_session.EvalSession, _session.EvalManifest, _evalOutputs, gradsTo: null, out _evalLoss);

    /// <summary>The Jacobian-vector-product pass over this batch's inputs (made on first use).</summary>
    internal JvpBatch JvpBinding =>
        _jvpBinding ??= _session.Jvp.Bind(BatchSize, name => _inputs.GetValueOrDefault(name), _session.ParameterValues);

    /// <summary>The training graph without K-FAC's outputs, over this batch's inputs (made on first use).</summary>
    internal OrtIoBinding LightBinding =>
        _lightBinding ??= BindAnother(_session.LightSession, _session.LightManifest, _lightOutputs, gradsTo: _session, out _lightLoss);

    /// <summary>
    /// A binding of another graph of the session over this batch's input buffers and the
    /// parameters, its outputs allocated (gradients into the parameters' own buffers when
    /// <paramref name="gradsTo"/> is given); <paramref name="loss"/> is its loss buffer.
    /// </summary>
    private OrtIoBinding BindAnother(InferenceSession graph, TrainingManifest manifest, Dictionary<string, TensorBuffer> outputs,
        TrainingSession? gradsTo, out TensorBuffer? loss)
    {
        var b = graph.CreateIoBinding();
        foreach (var input in manifest.Inputs)
        {
            if (_inputs.TryGetValue(input.Name, out var buf)) b.BindInput(input.Name, buf.Value);
            else if (_session.ParameterValues.TryGetValue(input.Name, out var p)) b.BindInput(input.Name, p.Value);
        }
        foreach (var (name, buffer) in ProbeAndAllocate(graph, b, manifest, outputs, gradsTo)) b.BindOutput(name, buffer.Value);
        loss = outputs[manifest.Loss.Loss];
        return b;
    }

    internal double LightLoss => _lightLoss!.Span<float>()[0];

    /// <summary>The loss of the last training run over this binding.</summary>
    public double Loss => _loss.Span<float>()[0];

    internal double EvalLoss => _evalLoss!.Span<float>()[0];

    /// <summary>A data input, target or noise buffer to fill before a run.</summary>
    public Span<T> Input<T>(string name) where T : unmanaged =>
        Find(_inputs, name, "the training graph has no data input").Span<T>();

    public IReadOnlyList<long> InputShape(string name) => _inputs[name].Shape;

    /// <summary>The pinned array behind a data input or target (float[] or long[]).</summary>
    internal Array InputArray(string name) => Find(_inputs, name, "the training graph has no data input").Data;

    /// <summary>A training-graph output from the last <see cref="TrainingSession.Run"/> (model outputs, taps).</summary>
    public ReadOnlySpan<float> Output(string name) => Find(_outputs, name, "the training graph has no output").Span<float>();

    public IReadOnlyList<long> OutputShape(string name) => Find(_outputs, name, "the training graph has no output").Shape;

    /// <summary>A model output from the last <see cref="TrainingSession.Evaluate"/>.</summary>
    public ReadOnlySpan<float> EvalOutput(string name) => Find(_evalOutputs, name, "the evaluation graph has no output").Span<float>();

    private static TensorBuffer Find(Dictionary<string, TensorBuffer> buffers, string name, string missing) =>
        buffers.TryGetValue(name, out var b) ? b : throw new KeyNotFoundException($"{missing} '{name}'");

    private static long[] NoiseShape(TrainingManifest m, ManifestTensor noise, int batchSize)
    {
        var output = m.Outputs.First(o => o.Name == m.Loss.Output);
        if (output.Shape is null || output.Shape.Skip(1).Any(d => d < 0))
            throw new OnnxKfacException($"the sampled Fisher needs the shape of output '{output.Name}', which is dynamic beyond the batch axis");
        return [batchSize, .. output.Shape[1..]];
    }

    /// <summary>
    /// Runs once with ONNX Runtime allocating the outputs to learn their shapes for this
    /// batch size, then allocates pinned buffers; gradients bind to the parameters' own arrays.
    /// </summary>
    private static IEnumerable<(string, TensorBuffer)> ProbeAndAllocate(InferenceSession session, OrtIoBinding binding,
        TrainingManifest m, Dictionary<string, TensorBuffer> outputs, TrainingSession? gradsTo)
    {
        var names = m.Outputs.Select(o => o.Name).ToArray();
        foreach (var name in names) binding.BindOutputToDevice(name, OrtMemoryInfo.DefaultInstance);
        using (var options = new RunOptions())
        {
            try { session.RunWithBinding(options, binding); }
            catch (OnnxRuntimeException e) { throw new OnnxKfacException($"ONNX Runtime failed on a batch: {e.Message.Split('\n')[0]}", e); }
        }
        var shapes = new Dictionary<string, (long[] Shape, string Type)>(StringComparer.Ordinal);
        using (var values = binding.GetOutputValues())
        {
            for (int k = 0; k < names.Length; k++)
            {
                var info = values[k].GetTensorTypeAndShape();
                shapes[names[k]] = (info.Shape, info.ElementDataType.ToString().ToLowerInvariant());
            }
        }
        binding.ClearBoundOutputs();
        var result = new List<(string, TensorBuffer)>();
        foreach (var o in m.Outputs)
        {
            if (gradsTo is not null && o.Role == TensorRole.Gradient && gradsTo.ParameterGrads.TryGetValue(o.Of!, out var g))
            {
                result.Add((o.Name, g));
                continue;
            }
            var (shape, type) = shapes[o.Name];
            var buffer = TensorBuffer.Create(type, shape, o.Name);
            outputs[o.Name] = buffer;
            result.Add((o.Name, buffer));
        }
        return result;
    }

    public void Dispose()
    {
        TrainBinding.Dispose();
        _evalBinding?.Dispose();
        _jvpBinding?.Dispose();
        _lightBinding?.Dispose();
        foreach (var b in _lightOutputs.Values) b.Dispose();
        foreach (var b in _inputs.Values) b.Dispose();
        foreach (var b in _outputs.Values) b.Dispose();
        foreach (var b in _evalOutputs.Values) b.Dispose();
    }
}
