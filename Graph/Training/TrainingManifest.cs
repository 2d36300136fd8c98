using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxKfac.Graph.Layers;

namespace OnnxKfac.Graph.Training;

/// <summary>The role of each input and output of a training graph.</summary>
public enum TensorRole
{
    Data, Target, Noise, Parameter,
    Loss, ModelOutput, Gradient, LayerInput, PreactivationGradient, SampledPreactivationGradient, Patches,
    /// <summary>Factor statistics A and G of a layer, and the sampled-target gradient of a parameter outside layers (K-FAC).</summary>
    FactorA, FactorG, SampledGradient,
    /// <summary>JVP graph input: a direction in parameter space, one per parameter and direction (Of: the parameter).</summary>
    Tangent,
    /// <summary>JVP graph output: J v_k, the Jacobian-vector product of the loss's output tensor (Of: that output).</summary>
    Jvp,
    /// <summary>JVP graph output: the [K, K] matrix v_iᵀ F v_j (F: the exact Fisher = Gauss-Newton of the loss).</summary>
    FisherQuadratic,
}

/// <summary>One input or output of the training graph. Shape: -1 for a dimension known only at run time.</summary>
public sealed record ManifestTensor(string Name, TensorRole Role, string ElemType, long[]? Shape)
{
    /// <summary>The parameter (for gradients) or layer (for taps) this tensor belongs to.</summary>
    public string? Of { get; init; }

    /// <summary>The direction k (0-based) of a JVP graph's tangent input or JVP output.</summary>
    public int? Direction { get; init; }
}

public sealed record ManifestParameter(string Name, string ElemType, long[] Shape, string Gradient)
{
    /// <summary>How many nodes read this parameter (through Identity copies included); above 1 it is tied.</summary>
    public int Uses { get; init; } = 1;

    /// <summary>Module-path names a glob also selects it by (<c>encoder.layers.0.linear1.weight</c> for <c>onnx::MatMul_262</c>); null: none.</summary>
    public IReadOnlyList<string>? Names { get; init; }
}

public sealed record ManifestLoss(string Kind, string Reduction, string Output, string Target, string Loss)
{
    public long? IgnoreIndex { get; init; }
    public double? LabelSmoothing { get; init; }
    public float[]? ClassWeights { get; init; }
}

/// <summary>The sampled-target backward pass of the true Fisher.</summary>
public sealed record ManifestFisher(string Distribution, string NoiseInput, string NoiseDistribution, string GradientScale);

public sealed record ManifestExclusion(string Name, string Reason);

/// <summary>
/// Names every input and output of a training graph and its role, the trainable
/// parameters, and the layers K-FAC factors. Written beside the graph as JSON.
/// </summary>
public sealed record TrainingManifest
{
    public const string CurrentFormat = "onnx-kfac/training-graph/2";

    public string Format { get; init; } = CurrentFormat;
    public required int SourceOpset { get; init; }
    public required int Opset { get; init; }
    public required ManifestLoss Loss { get; init; }
    public required IReadOnlyList<ManifestTensor> Inputs { get; init; }
    public required IReadOnlyList<ManifestTensor> Outputs { get; init; }
    public required IReadOnlyList<ManifestParameter> Parameters { get; init; }
    /// <summary>The layers K-FAC factors, each with the names of its outputs in the graph.</summary>
    public required IReadOnlyList<LayerInfo> Layers { get; init; }
    public ManifestFisher? Fisher { get; init; }
    public IReadOnlyList<ManifestExclusion> Excluded { get; init; } = [];
    /// <summary>Patterns that take only part of a module (see <see cref="ParameterSelection.Result.Warnings"/>).</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];

    public string ToJson() => JsonSerializer.Serialize(this, ManifestJson.Default.TrainingManifest);

    public static TrainingManifest FromJson(string json, string source)
    {
        try
        {
            var m = JsonSerializer.Deserialize(json, ManifestJson.Default.TrainingManifest) ?? throw new OnnxKfacException($"{source}: empty manifest");
            if (m.Format != CurrentFormat) throw new OnnxKfacException($"{source}: manifest format '{m.Format}', expected '{CurrentFormat}'");
            return m;
        }
        catch (JsonException e)
        {
            throw new OnnxKfacException($"{source}: not a training-graph manifest ({e.Message})", e);
        }
    }

    public ManifestTensor Input(TensorRole role) => Inputs.First(t => t.Role == role);

    public IEnumerable<ManifestTensor> OutputsOf(TensorRole role) => Outputs.Where(t => t.Role == role);
}

/// <summary>
/// The manifest's JSON (snake_case keys and enum values, nulls left out, indented), generated at
/// compile time so that trimmed and NativeAOT builds read and write it without reflection.
/// </summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, WriteIndented = true,
    Converters = [typeof(SnakeCaseEnumConverter<TensorRole>), typeof(SnakeCaseEnumConverter<LayerKind>)])]
[JsonSerializable(typeof(TrainingManifest))]
internal sealed partial class ManifestJson : JsonSerializerContext;

/// <summary>An enum as its snake_case name (<c>ModelOutput</c> is <c>"model_output"</c>), without reflection.</summary>
public sealed class SnakeCaseEnumConverter<TEnum>() : JsonStringEnumConverter<TEnum>(JsonNamingPolicy.SnakeCaseLower)
    where TEnum : struct, Enum;
