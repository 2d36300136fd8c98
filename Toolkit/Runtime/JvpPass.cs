using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// The Jacobian-vector-product graph of a training session (JvpGraphBuilder): it reads the
/// batch's data and target buffers and the parameters, plus a tangent buffer per parameter
/// and direction that the optimizer fills, and returns the [K, K] matrix v_iᵀ F v_j. Built
/// on first use; only that matrix is fetched, so ONNX Runtime computes nothing else. With a
/// fraction f &lt; 1 (<see cref="TrainingGraphOptions.JvpFraction"/>) it runs over views of the
/// batch's first ⌈f·N⌉ examples, where the graph takes any batch size.
/// </summary>
internal sealed class JvpPass : IDisposable
{
    private readonly Dictionary<string, TensorBuffer> _tangents = new(StringComparer.Ordinal);

    public JvpPass(TrainingSession owner, TrainingGraphOptions graphOptions, SessionOptions options)
    {
        var jg = JvpGraphBuilder.Build(owner.SourceModel, graphOptions with { KeepInitialValues = false }, Directions);
        Manifest = jg.Manifest;
        Fraction = graphOptions.JvpFraction;
        // A prefix of the batch is a batch of its own only where the graph takes any batch size:
        // every data input and target batch-first and dynamic there, and the model output too.
        bool Dynamic(long[]? shape) => shape is { Length: > 0 } s && s[0] < 0;
        var output = Manifest.Outputs.FirstOrDefault(o => o.Name == Manifest.Loss.Output)?.Shape;
        TakesAnyBatch = Manifest.Inputs.Where(i => i.Role is TensorRole.Data or TensorRole.Target).All(i => Dynamic(i.Shape))
            && (output is null || Dynamic(output));
        Session = TrainingSession.CreateSession(jg.Model, options, "Jacobian-vector-product graph");
        foreach (var t in Manifest.Inputs.Where(i => i.Role == TensorRole.Tangent))
            _tangents[t.Name] = TensorBuffer.Create("float", t.Shape!, t.Name);
        Quadratic = TensorBuffer.Create("float", [Directions, Directions], JvpGraphBuilder.QuadraticName);
    }

    public const int Directions = 2;

    public TrainingManifest Manifest { get; }

    public InferenceSession Session { get; }

    public TensorBuffer Quadratic { get; }

    public Span<float> Tangent(string name) =>
        _tangents.TryGetValue(name, out var b) ? b.Span<float>() : throw new KeyNotFoundException($"the Jacobian-vector-product graph has no tangent input '{name}'");

    /// <summary>The fraction of each batch the products see (<see cref="TrainingGraphOptions.JvpFraction"/>).</summary>
    public double Fraction { get; }

    /// <summary>Whether the graph takes a batch of any size (else it always sees the whole batch).</summary>
    public bool TakesAnyBatch { get; }

    /// <summary>The examples of a batch of <paramref name="batchSize"/> the pass runs over: max(1, ⌈f·N⌉), or N.</summary>
    public int Examples(int batchSize) =>
        Fraction < 1 && TakesAnyBatch ? (int)Math.Max(1, Math.Min(batchSize, Math.Ceiling(batchSize * Fraction))) : batchSize;

    /// <summary>A binding of the JVP graph over one batch's input buffers (their first <see cref="Examples"/> rows).</summary>
    public JvpBatch Bind(int batchSize, Func<string, TensorBuffer?> batchInput, IReadOnlyDictionary<string, TensorBuffer> parameters)
    {
        int rows = Examples(batchSize);
        var b = Session.CreateIoBinding();
        var views = new List<OrtValue>();
        foreach (var input in Manifest.Inputs)
        {
            var buffer = input.Role switch
            {
                TensorRole.Tangent => _tangents[input.Name],
                TensorRole.Parameter => parameters[input.Name],
                _ => batchInput(input.Name) ?? throw new Graph.OnnxKfacException($"the Jacobian-vector-product graph reads input '{input.Name}', which the training graph has not"),
            };
            if (rows < batchSize && input.Role is TensorRole.Data or TensorRole.Target)
            {
                var view = buffer.Rows(rows);
                views.Add(view);
                b.BindInput(input.Name, view);
            }
            else b.BindInput(input.Name, buffer.Value);
        }
        b.BindOutput(JvpGraphBuilder.QuadraticName, Quadratic.Value);
        return new JvpBatch(b, views, rows, batchSize);
    }

    public void Dispose()
    {
        Session.Dispose();
        foreach (var t in _tangents.Values) t.Dispose();
        Quadratic.Dispose();
    }
}

/// <summary>The JVP graph bound over one batch: <see cref="Examples"/> of its <see cref="BatchSize"/> rows.</summary>
internal sealed class JvpBatch(OrtIoBinding binding, List<OrtValue> views, int examples, int batchSize) : IDisposable
{
    public OrtIoBinding Binding { get; } = binding;
    public int Examples { get; } = examples;
    public int BatchSize { get; } = batchSize;

    public void Dispose()
    {
        Binding.Dispose();
        foreach (var v in views) v.Dispose();
    }
}
