using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Numerics;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// Runs a model's training graph on the stock ONNX Runtime. The weights live in the
/// <see cref="Parameters"/>' pinned arrays and their gradients are written straight into
/// <see cref="Parameter.Grad"/>: ONNX Runtime reads and writes the toolkit's buffers
/// through OrtValues over them, with no copies. Each batch size gets its buffers and
/// bindings once (<see cref="Bind"/>); a step then allocates nothing. Not thread-safe.
/// </summary>
public sealed class TrainingSession : IDisposable, ITrainingPass
{
    private readonly InferenceSession _train;
    private readonly Lazy<(InferenceSession Session, TrainingManifest Manifest)> _eval;
    private readonly TrainingSessionOptions _options;
    private readonly Dictionary<string, TensorBuffer> _paramValues = new(StringComparer.Ordinal);
    private readonly Dictionary<string, TensorBuffer> _paramGrads = new(StringComparer.Ordinal);
    private readonly Dictionary<int, BatchBinding> _bindings = [];
    private readonly IReadOnlyDictionary<string, long[]> _exampleShapes;
    private readonly RunOptions _runOptions = new();
    private readonly NoiseSource _noise;
    private readonly Lazy<JvpPass> _jvp;
    private readonly Lazy<(InferenceSession Session, TrainingManifest Manifest)> _light;
    private BatchBinding? _last;
    private bool _disposed;

    private TrainingSession(ModelProto source, TrainingGraphOptions graphOptions, TrainingSessionOptions options, IReadOnlyDictionary<string, long[]>? exampleShapes)
    {
        // Ties the exporter broke are kept and --untie'd merges split in the model itself, so the
        // parameters, checkpoints and the exported model all name the same initializers.
        source = Ties.Apply(source, graphOptions.Untie);
        graphOptions = graphOptions with { Untie = [] };
        SourceModel = source;
        _options = options;
        _exampleShapes = exampleShapes ?? new Dictionary<string, long[]>();
        var tg = TrainingGraphBuilder.Build(source, graphOptions with { KeepInitialValues = false, LossOnly = false });
        Manifest = tg.Manifest;
        TrainingModel = tg.Model;
        Parameters = CreateParameters(source, Manifest);
        foreach (var p in Parameters)
        {
            _paramValues[p.Name] = TensorBuffer.Wrap(p.Value, p.Shape, "float");
            _paramGrads[p.Name] = TensorBuffer.Wrap(p.Grad, p.Shape, "float");
        }
        using (var ortOptions = options.CreateOrtOptions())
            _train = CreateSession(tg.Model, ortOptions, "training graph");
        _eval = new Lazy<(InferenceSession, TrainingManifest)>(() =>
        {
            var eg = TrainingGraphBuilder.Build(source, graphOptions with { KeepInitialValues = false, LossOnly = true, SampledFisher = false });
            using var o = options.CreateOrtOptions();
            return (CreateSession(eg.Model, o, "evaluation graph"), eg.Manifest);
        });
        _noise = new NoiseSource(options.NoiseSeed);
        _light = new Lazy<(InferenceSession, TrainingManifest)>(() =>
        {
            var lg = TrainingGraphBuilder.Build(source, graphOptions with
            {
                KeepInitialValues = false, LossOnly = false, FactorStatistics = false, SampledFisher = false, LayerTaps = false, TapLayer = null,
                SampledGradientsOutsideLayers = false, SampledGradients = [],
            });
            using var o = options.CreateOrtOptions();
            return (CreateSession(lg.Model, o, "training graph without statistics"), lg.Manifest);
        });
        _jvp = new Lazy<JvpPass>(() =>
        {
            using var o = options.CreateOrtOptions();
            return new JvpPass(this, graphOptions, o);
        });
    }

    /// <summary>
    /// Builds the training graph of <paramref name="model"/> and opens a session over it.
    /// <paramref name="exampleShapes"/> gives the per-example shape of a data input whose
    /// non-batch dimensions are dynamic in the model.
    /// </summary>
    public static TrainingSession Create(ModelProto model, TrainingGraphOptions graph, TrainingSessionOptions? options = null,
        IReadOnlyDictionary<string, long[]>? exampleShapes = null) =>
        new(model, graph, options ?? new TrainingSessionOptions(), exampleShapes);

    public ModelProto SourceModel { get; }

    /// <summary>The training graph the session runs (parameters as inputs, no initial values).</summary>
    public ModelProto TrainingModel { get; }

    public TrainingManifest Manifest { get; }

    /// <summary>The trainable parameters, in manifest order; their arrays are what ONNX Runtime reads.</summary>
    public IReadOnlyList<Parameter> Parameters { get; }

    /// <summary>The data inputs of the model (not parameters, targets or noise).</summary>
    public IReadOnlyList<ManifestTensor> DataInputs => Manifest.Inputs.Where(i => i.Role == TensorRole.Data).ToArray();

    public ManifestTensor TargetInput => Manifest.Input(TensorRole.Target);

    public TrainingSessionOptions Options => _options;

    /// <summary>The state of the sampled-Fisher noise generator (for checkpoints).</summary>
    public ulong[] NoiseState
    {
        get => _noise.State;
        set => _noise.State = value;
    }

    /// <summary>False when a test writes the sampled-Fisher noise into the batch itself (the reference runs feed PyTorch's).</summary>
    internal bool DrawNoise { get; set; } = true;

    /// <summary>Data-parallel: which share of the global batch's sampled-Fisher noise this rank draws (rank, ranks).</summary>
    internal (int Rank, int Ranks) NoiseShard { get; set; } = (0, 1);

    /// <summary>Buffers and bindings for batches of <paramref name="batchSize"/> examples (made once, then reused).</summary>
    public BatchBinding Bind(int batchSize)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (batchSize <= 0) throw new OnnxKfacException($"batch size must be positive, got {batchSize}");
        if (!_bindings.TryGetValue(batchSize, out var b))
        {
            b = new BatchBinding(this, batchSize);
            _bindings[batchSize] = b;
        }
        return b;
    }

    /// <summary>
    /// Forward, loss and backward over the batch: gradients land in the parameters'
    /// <see cref="Parameter.Grad"/>, taps and outputs in <paramref name="batch"/>. Returns the loss.
    /// </summary>
    public double Run(BatchBinding batch) => Run(batch, statistics: true);

    /// <summary>
    /// As <see cref="Run(BatchBinding)"/>; with <paramref name="statistics"/> false and a graph
    /// that has K-FAC outputs (factor statistics, the sampled pass), runs a second graph without
    /// them (built on first use): loss, outputs and gradients only, for the updates between
    /// K-FAC's statistics updates (T_cov &gt; 1). The K-FAC outputs then keep their last values.
    /// </summary>
    public double Run(BatchBinding batch, bool statistics)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _last = batch;
        if (!statistics && HasKfacOutputs)
        {
            _light.Value.Session.RunWithBinding(_runOptions, batch.LightBinding);
            return batch.LightLoss;
        }
        if (DrawNoise && batch.NoiseBuffer is { } noise) _noise.FillShard(noise.Span<float>(), Manifest.Fisher!.NoiseDistribution == "normal", NoiseShard.Rank, NoiseShard.Ranks);
        _train.RunWithBinding(_runOptions, batch.TrainBinding);
        return batch.Loss;
    }

    private bool HasKfacOutputs => Manifest.Fisher is not null || Manifest.Layers.Any(l => l.Outputs.FactorA is not null);

    internal InferenceSession LightSession => _light.Value.Session;
    internal TrainingManifest LightManifest => _light.Value.Manifest;

    /// <summary>The loss (and model outputs, in <see cref="BatchBinding.EvalOutput"/>) without a backward pass.</summary>
    public double Evaluate(BatchBinding batch)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _eval.Value.Session.RunWithBinding(_runOptions, batch.EvalBinding);
        return batch.EvalLoss;
    }

    // ---- ITrainingPass ----------------------------------------------------------------------

    public ReadOnlySpan<float> GetOutput(string name) =>
        name == JvpGraphBuilder.QuadraticName && _jvp.IsValueCreated ? _jvp.Value.Quadratic.Span<float>()
        : (_last ?? throw new InvalidOperationException("no step has run yet")).Output(name);

    public IReadOnlyList<long> GetOutputShape(string name) =>
        (_last ?? throw new InvalidOperationException("no step has run yet")).OutputShape(name);

    /// <summary>A tangent input of the Jacobian-vector-product pass (<c>{parameter}/tangent{k}</c>); builds that pass on first use.</summary>
    public Span<float> GetInput(string name) => _jvp.Value.Tangent(name);

    /// <summary>
    /// Runs the Jacobian-vector-product pass (<c>"jvp"</c>) over the last batch; its result is the
    /// output <c>fisher_quadratic</c>, vᵢᵀFvⱼ of the batch's loss. With
    /// <see cref="TrainingGraphOptions.JvpFraction"/> &lt; 1 the pass sees the first ⌈f·N⌉ examples, and
    /// the products estimate the batch's from them (a sum-reduced loss's are scaled by N/⌈f·N⌉).
    /// </summary>
    public void RunExtra(string purpose)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (purpose != "jvp") throw new NotSupportedException($"the training session has no extra pass '{purpose}' (it has 'jvp')");
        var batch = _last ?? throw new InvalidOperationException("no step has run yet");
        var jvp = batch.JvpBinding;
        try { _jvp.Value.Session.RunWithBinding(_runOptions, jvp.Binding); }
        catch (OnnxRuntimeException e) { throw new OnnxKfacException($"ONNX Runtime failed on the Jacobian-vector-product pass: {e.Message.Split('\n')[0]}", e); }
        if (jvp.Examples < jvp.BatchSize && Manifest.Loss.Reduction == "sum")
        {
            float scale = (float)((double)jvp.BatchSize / jvp.Examples);
            foreach (ref float q in _jvp.Value.Quadratic.Span<float>()) q *= scale;
        }
    }

    /// <summary>
    /// The examples of a batch of <paramref name="batchSize"/> the Jacobian-vector-product pass runs over:
    /// ⌈f·N⌉ for <see cref="TrainingGraphOptions.JvpFraction"/> f, or N where the model's batch size is fixed.
    /// </summary>
    public int FisherProductExamples(int batchSize) => _jvp.Value.Examples(batchSize);

    /// <summary>Builds the Jacobian-vector-product graph now, so that a model it cannot handle fails before training.</summary>
    public void PrepareJacobianVectorProducts() => _ = _jvp.Value;

    internal JvpPass Jvp => _jvp.Value;

    public double EvaluateLoss() =>
        Evaluate(_last ?? throw new InvalidOperationException("no step has run yet"));

    // ---- internals ---------------------------------------------------------------------------

    internal InferenceSession Train => _train;
    internal InferenceSession EvalSession => _eval.Value.Session;
    internal TrainingManifest EvalManifest => _eval.Value.Manifest;
    internal IReadOnlyDictionary<string, TensorBuffer> ParameterValues => _paramValues;
    internal IReadOnlyDictionary<string, TensorBuffer> ParameterGrads => _paramGrads;

    /// <summary>The shape of a data/target/noise input for a batch, batch axis first.</summary>
    internal long[] BatchShape(ManifestTensor input, int batchSize)
    {
        if (_exampleShapes.TryGetValue(input.Name, out var example)) return [batchSize, .. example];
        var shape = input.Shape ?? throw new OnnxKfacException(
            $"input '{input.Name}' has no declared shape; give its per-example shape (--input-shape {input.Name}=d1,d2...)");
        if (shape.Length == 0) return [];
        var s = (long[])shape.Clone();
        s[0] = batchSize;
        for (int k = 1; k < s.Length; k++)
            if (s[k] < 0) throw new OnnxKfacException(
                $"input '{input.Name}' has dynamic dimension {k} (shape {Format(shape)}); give its per-example shape (--input-shape {input.Name}=...)");
        return s;
    }

    internal static string Format(long[]? shape) => shape is null ? "[?]" : "[" + string.Join(",", shape.Select(d => d < 0 ? "?" : d.ToString())) + "]";

    internal static InferenceSession CreateSession(ModelProto model, SessionOptions options, string what)
    {
        try
        {
            return new InferenceSession(model.ToByteArray(), options);
        }
        catch (OnnxRuntimeException e)
        {
            throw new OnnxKfacException($"ONNX Runtime refused the {what}: {e.Message.Split('\n')[0]}", e);
        }
    }

    private static Parameter[] CreateParameters(ModelProto source, TrainingManifest manifest)
    {
        var inits = source.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var result = new Parameter[manifest.Parameters.Count];
        for (int k = 0; k < result.Length; k++)
        {
            var mp = manifest.Parameters[k];
            var t = inits[mp.Name];
            if (t.DataType != (int)TensorProto.Types.DataType.Float)
                throw new OnnxKfacException($"parameter '{mp.Name}' is {TensorData.TypeName(t.DataType)}; training supports float32 parameters (export the model in float32)");
            var p = Parameter.Create(mp.Name, t.Dims.ToArray());
            if (mp.Names is { } names) p = new Parameter(p.Name, p.Shape, p.Value, p.Grad) { Aliases = names };
            TensorData.ToFloats(t).CopyTo(p.Value, 0);
            result[k] = p;
        }
        return result;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _bindings.Values) b.Dispose();
        foreach (var v in _paramValues.Values) v.Dispose();
        foreach (var v in _paramGrads.Values) v.Dispose();
        _train.Dispose();
        if (_eval.IsValueCreated) _eval.Value.Session.Dispose();
        if (_jvp.IsValueCreated) _jvp.Value.Dispose();
        if (_light.IsValueCreated) _light.Value.Session.Dispose();
        _runOptions.Dispose();
    }
}
