namespace OnnxKfac.Graph.Losses;

/// <summary>The losses the training graph can append, matching torch.nn's.</summary>
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

    /// <summary>The model output the loss reads; null: the model's only (or first) output.</summary>
    public string? Output { get; init; }

    public LossReduction Reduction { get; init; } = LossReduction.Mean;

    /// <summary>Cross-entropy class weights (length C), as torch's <c>weight</c>.</summary>
    public IReadOnlyList<float>? ClassWeights { get; init; }

    /// <summary>Cross-entropy targets equal to this are ignored, as torch's <c>ignore_index</c>.</summary>
    public long IgnoreIndex { get; init; } = -100;

    /// <summary>Cross-entropy label smoothing in [0, 1], as torch's <c>label_smoothing</c>.</summary>
    public double LabelSmoothing { get; init; }

    public void Validate()
    {
        if (Kind != LossKind.CrossEntropy && (ClassWeights is not null || LabelSmoothing != 0))
            throw new OnnxKfacException($"class weights and label smoothing apply to cross-entropy only, not {Name(Kind)}");
        if (LabelSmoothing is < 0 or > 1 || double.IsNaN(LabelSmoothing))
            throw new OnnxKfacException($"label smoothing must be in [0, 1], got {LabelSmoothing}");
        if (ClassWeights is { } w && w.Any(x => !float.IsFinite(x) || x < 0))
            throw new OnnxKfacException("class weights must be finite and non-negative");
    }

    /// <summary>The command-line name of a loss kind.</summary>
    public static string Name(LossKind kind) => kind switch
    {
        LossKind.CrossEntropy => "cross-entropy",
        LossKind.Mse => "mse",
        LossKind.L1 => "l1",
        LossKind.BceWithLogits => "bce-with-logits",
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    public static LossKind ParseKind(string text) => text.Trim().ToLowerInvariant() switch
    {
        "cross-entropy" or "crossentropy" or "ce" => LossKind.CrossEntropy,
        "mse" => LossKind.Mse,
        "l1" => LossKind.L1,
        "bce-with-logits" or "bcewithlogits" => LossKind.BceWithLogits,
        _ => throw new OnnxKfacException($"unknown loss '{text}'; expected one of: cross-entropy, mse, l1, bce-with-logits"),
    };
}
