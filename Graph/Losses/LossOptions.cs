namespace OnnxKfac.Graph.Losses;

/// <summary>The losses the training graph can append, matching torch.nn's (each implemented by a <see cref="LossFunction"/>).</summary>
public enum LossKind
{
    /// <summary>torch.nn.CrossEntropyLoss on class indices (logits [N, C] or [N, C, d...]).</summary>
    CrossEntropy,
    /// <summary>torch.nn.MSELoss.</summary>
    Mse,
    /// <summary>torch.nn.L1Loss.</summary>
    L1,
    /// <summary>torch.nn.BCEWithLogitsLoss.</summary>
    BceWithLogits,
}

public enum LossReduction { Mean, Sum }

/// <summary>
/// A loss appended to one model output. Defaults are torch.nn's: mean reduction,
/// ignore_index -100, no class weights, no label smoothing.
/// </summary>
public sealed record LossOptions
{
    public LossOptions(LossKind kind) => Kind = kind;

    public LossKind Kind { get; init; }

    /// <summary>The loss this kind names (from <see cref="LossFunctions"/>).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public LossFunction Function => LossFunctions.For(Kind);

    /// <summary>The model output the loss reads; null: the model's only (or first) output.</summary>
    public string? Output { get; init; }

    public LossReduction Reduction { get; init; } = LossReduction.Mean;

    /// <summary>Cross-entropy class weights (length C), as torch's <c>weight</c>.</summary>
    public IReadOnlyList<float>? ClassWeights { get; init; }

    /// <summary>Cross-entropy targets equal to this are ignored, as torch's <c>ignore_index</c>.</summary>
    public long IgnoreIndex { get; init; } = -100;

    /// <summary>Cross-entropy label smoothing in [0, 1], as torch's <c>label_smoothing</c>.</summary>
    public double LabelSmoothing { get; init; }

    public void Validate() => Function.Validate(this);

    /// <summary>The command-line name of a loss kind.</summary>
    public static string Name(LossKind kind) => LossFunctions.For(kind).Name;

    public static LossKind ParseKind(string text) => LossFunctions.Parse(text).Kind;
}
