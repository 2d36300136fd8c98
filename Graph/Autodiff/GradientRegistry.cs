using OnnxKfac.Graph.Autodiff.Rules;

namespace OnnxKfac.Graph.Autodiff;

/// <summary>
/// The one table of gradient rules, keyed by ai.onnx op type. Each entry says which
/// inputs are differentiable; ops that carry no gradient (shape arithmetic, integer
/// ops, comparisons) are declared here too, so nothing is skipped silently.
/// </summary>
public sealed class GradientRegistry
{
    private readonly Dictionary<string, Entry> _rules = new(StringComparer.Ordinal);
    private readonly HashSet<string> _nonDifferentiable = new(StringComparer.Ordinal);

    /// <summary>A rule and the inputs it differentiates (null: every input).</summary>
    public sealed record Entry(GradientRule Rule, int[]? DifferentiableInputs)
    {
        public bool IsDifferentiable(int input) => DifferentiableInputs is null || DifferentiableInputs.Contains(input);
    }

    /// <summary>The registry with every built-in rule.</summary>
    public static GradientRegistry Default { get; } = CreateDefault();

    public static GradientRegistry CreateDefault()
    {
        var r = new GradientRegistry();
        r.DeclareNonDifferentiable(
            "Constant", "Shape", "Size", "ConstantOfShape", "Range", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
            "Not", "And", "Or", "Xor", "ArgMax", "ArgMin", "NonZero", "OneHot", "Sign", "Floor", "Ceil", "Round", "IsNaN", "IsInf",
            "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli", "EyeLike", "TopK_Indices");
        CoreRules.Register(r);
        ElementwiseRules.Register(r);
        ActivationRules.Register(r);
        SoftmaxRules.Register(r);
        ShapeRules.Register(r);
        ReductionRules.Register(r);
        ConvRules.Register(r);
        PoolRules.Register(r);
        NormalizationRules.Register(r);
        RecurrentRules.Register(r);
        return r;
    }

    /// <summary>Registers a rule; registering an op twice is a programming error, not a silent override.</summary>
    public void Add(string opType, GradientRule rule, int[]? differentiableInputs = null)
    {
        if (!_rules.TryAdd(opType, new Entry(rule, differentiableInputs)))
            throw new InvalidOperationException($"a gradient rule for '{opType}' is already registered");
    }

    /// <summary>Replaces the rule of an op (for users extending the default table).</summary>
    public void Replace(string opType, GradientRule rule, int[]? differentiableInputs = null) =>
        _rules[opType] = new Entry(rule, differentiableInputs);

    public void DeclareNonDifferentiable(params string[] opTypes)
    {
        foreach (var op in opTypes) _nonDifferentiable.Add(op);
    }

    public Entry? Find(string opType) => _rules.GetValueOrDefault(opType);

    public bool IsNonDifferentiable(string opType) => _nonDifferentiable.Contains(opType);

    public IReadOnlyCollection<string> SupportedOps => _rules.Keys.Order(StringComparer.Ordinal).ToArray();

    public IReadOnlyCollection<string> NonDifferentiableOps => _nonDifferentiable.Order(StringComparer.Ordinal).ToArray();
}
