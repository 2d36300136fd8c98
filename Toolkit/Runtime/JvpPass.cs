using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// The Jacobian-vector-product graph of a training session (JvpGraphBuilder): it reads the
/// batch's data and target buffers and the parameters, plus a tangent buffer per parameter
/// and direction that the optimizer fills, and returns the [K, K] matrix v_iᵀ F v_j. Built
/// on first use; only that matrix is fetched, so ONNX Runtime computes nothing else.
/// </summary>
internal sealed class JvpPass : IDisposable
{
    private readonly Dictionary<string, TensorBuffer> _tangents = new(StringComparer.Ordinal);

    public JvpPass(TrainingSession owner, TrainingGraphOptions graphOptions, SessionOptions options)
    {
        var jg = JvpGraphBuilder.Build(owner.SourceModel, graphOptions with { KeepInitialValues = false }, Directions);
        Manifest = jg.Manifest;
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

    /// <summary>A binding of the JVP graph over one batch's input buffers.</summary>
    public OrtIoBinding Bind(Func<string, TensorBuffer?> batchInput, IReadOnlyDictionary<string, TensorBuffer> parameters)
    {
        var b = Session.CreateIoBinding();
        foreach (var input in Manifest.Inputs)
        {
            var buffer = input.Role switch
            {
                TensorRole.Tangent => _tangents[input.Name],
                TensorRole.Parameter => parameters[input.Name],
                _ => batchInput(input.Name) ?? throw new Graph.OnnxKfacException($"the Jacobian-vector-product graph reads input '{input.Name}', which the training graph has not"),
            };
            b.BindInput(input.Name, buffer.Value);
        }
        b.BindOutput(JvpGraphBuilder.QuadraticName, Quadratic.Value);
        return b;
    }

    public void Dispose()
    {
        Session.Dispose();
        foreach (var t in _tangents.Values) t.Dispose();
        Quadratic.Dispose();
    }
}
