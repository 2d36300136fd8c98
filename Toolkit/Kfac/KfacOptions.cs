using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac.Blocks;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Kfac;

/// <summary>How K-FAC turns preconditioned gradients into an update (Toolkit/Kfac/README.md).</summary>
public enum KfacUpdateRule
{
    /// <summary>KL clipping, then momentum SGD at the learning rate (KAISA, ACKTR). The default.</summary>
    KlClip,
    /// <summary>The paper's: α and μ minimise the exact quadratic model on the minibatch (Fisher-vector products).</summary>
    Quadratic,
}

/// <summary>Whose gradients estimate G.</summary>
public enum FisherKind
{
    /// <summary>Targets sampled from the model's own predictive distribution (the true Fisher). Default.</summary>
    True,
    /// <summary>The real labels (the empirical Fisher): cheaper, worse.</summary>
    Empirical,
}

/// <summary>Data-parallel: when the ranks' Kronecker-factor statistics meet.</summary>
public enum FactorReduction
{
    /// <summary>
    /// Each rank folds its own statistics into its running factors, and the ranks average the
    /// running factors before each inverse refresh (and before a checkpoint). The running average
    /// is linear, so the refreshed inverses are the ones <see cref="EveryUpdate"/> computes, for
    /// about 1/T_inv of its traffic. Default.
    /// </summary>
    BeforeInverses,
    /// <summary>The statistic sums are all-reduced on every statistics update (KAISA's and kfac-jax's default).</summary>
    EveryUpdate,
}

/// <summary>How the damped factors (symmetric positive definite) are inverted at a refresh.</summary>
public enum KfacInverseMethod
{
    /// <summary><see cref="Cholesky"/> when OpenBLAS loads, else <see cref="OnnxRuntime"/>. Default.</summary>
    Auto,
    /// <summary>
    /// dpotrf + dpotri on the float64 factors through OpenBLAS's LAPACK (libopenblas.so.0, Debian's
    /// libopenblas0-pthread), on the host with the session's thread count; an error when OpenBLAS is missing.
    /// </summary>
    Cholesky,
    /// <summary><c>com.microsoft.Inverse</c> (LU, float32) in an ONNX Runtime program on the session's device.</summary>
    OnnxRuntime,
}

/// <summary>The arithmetic of the Cholesky route's <c>?potrf</c> + <c>?potri</c> (<see cref="KfacInverseMethod.Cholesky"/>).</summary>
public enum KfacInversePrecision
{
    /// <summary>
    /// Per factor group, float32 where the damped factor's condition number is provably small,
    /// κ(F + sI) ≤ (tr F + s) / s ≤ 10⁴ (an inverse then good to ~κ·2⁻²⁴ ≤ 6·10⁻⁴ relative,
    /// far inside K-FAC's own approximation), else float64; a float32 factorization that fails
    /// is redone in float64. Default.
    /// </summary>
    Auto,
    /// <summary>Always float32 (about twice as fast as float64; a group that fails is not retried in float64).</summary>
    Float32,
    /// <summary>Always float64.</summary>
    Float64,
}

/// <summary>
/// How a dense layer's Kronecker block computes V = (Ĝ + γ/π I)⁻¹ ∇W̄ (Â + πγ I)⁻¹
/// (Toolkit/Kfac/README.md, "Per-example preconditioning").
/// </summary>
public enum KfacPreconditioning
{
    /// <summary>Per update and layer, the cheaper of the two forms where the per-example one applies. Default.</summary>
    Auto,
    /// <summary>Always the dense products with ∇W̄.</summary>
    Dense,
    /// <summary>The per-example form wherever it applies, cheaper or not (tests, comparisons).</summary>
    PerExample,
}

/// <summary>How the damping λ moves.</summary>
public enum DampingAdaptation
{
    /// <summary>λ fixed (or following <see cref="KfacOptions.DampingSchedule"/>).</summary>
    Fixed,
    /// <summary>The Levenberg–Marquardt rule on the reduction ratio ρ every <see cref="KfacOptions.AdaptEvery"/> updates.</summary>
    LevenbergMarquardt,
}

/// <summary>The curvature block of a parameter no layer kind covers.</summary>
public enum FallbackBlock
{
    /// <summary>A diagonal Fisher from the sampled-target gradient (Adam-like, damped). Default.</summary>
    Diagonal,
    /// <summary>No preconditioning: the plain gradient (momentum SGD).</summary>
    Identity,
}

/// <summary>
/// The options of <see cref="KfacOptimizer"/>, each checked when set (an
/// <see cref="ArgumentException"/> names the option). Defaults are starting points for
/// classifiers (λ 0.01 and α 0.003 did best on the embedded default; λ 1e-3 with α 0.01 let its
/// validation loss climb); the autoencoders of the paper want <c>Damping = 150</c> with the
/// quadratic rule and Levenberg–Marquardt adaptation.
/// </summary>
public sealed record KfacOptions
{
    /// <summary>Learning rate α of the KL-clip rule, ≥ 0 (the quadratic rule chooses its own). Default 0.003.</summary>
    public double LearningRate { get; init => field = Checks.NonNegative(value, nameof(LearningRate)); } = 0.003;

    /// <summary>Momentum of the KL-clip rule, ≥ 0. Default 0.9.</summary>
    public double Momentum { get; init => field = Checks.NonNegative(value, nameof(Momentum)); } = 0.9;

    /// <summary>L2 coefficient η: added to the gradient (η θ) and to the damping (γ = √(λ + η)). Default 1e-5.</summary>
    public double WeightDecay { get; init => field = Checks.NonNegative(value, nameof(WeightDecay)); } = 1e-5;

    /// <summary>Initial Tikhonov damping λ, &gt; 0. Default 0.01.</summary>
    public double Damping { get; init => field = Positive(value, nameof(Damping)); } = 0.01;

    /// <summary>Lower bound of λ under adaptation or a schedule, &gt; 0. Default 1e-8.</summary>
    public double MinDamping { get; init => field = Positive(value, nameof(MinDamping)); } = 1e-8;

    /// <summary>Upper bound of λ, &gt; 0. Default 1e6.</summary>
    public double MaxDamping { get; init => field = Positive(value, nameof(MaxDamping)); } = 1e6;

    /// <summary>A schedule multiplying the initial damping (with <see cref="DampingAdaptation.Fixed"/>). Default constant.</summary>
    public ILearningRateSchedule DampingSchedule { get; init => field = Checks.NotNull(value, nameof(DampingSchedule)); } = ConstantSchedule.Instance;

    public DampingAdaptation DampingAdaptation { get; init; } = DampingAdaptation.Fixed;

    /// <summary>T₁: updates between Levenberg–Marquardt adjustments, ≥ 1. Default 5.</summary>
    public int AdaptEvery { get; init => field = AtLeastOne(value, nameof(AdaptEvery)); } = 5;

    public KfacUpdateRule UpdateRule { get; init; } = KfacUpdateRule.KlClip;

    /// <summary>κ of the KL-clip rule, &gt; 0. Default 1e-3.</summary>
    public double KlClip { get; init => field = Positive(value, nameof(KlClip)); } = 1e-3;

    /// <summary>The running factors' decay (ε = min(1 − 1/k, decay)), in [0, 1). Default 0.95.</summary>
    public double FactorDecay { get; init => field = Checks.UnitInterval(value, nameof(FactorDecay)); } = 0.95;

    /// <summary>T_cov: updates between factor-statistics updates, ≥ 1. Default 1.</summary>
    public int StatisticsEvery { get; init => field = AtLeastOne(value, nameof(StatisticsEvery)); } = 1;

    /// <summary>T_inv: updates between inverse refreshes, ≥ 1. Default 20.</summary>
    public int InverseEvery { get; init => field = AtLeastOne(value, nameof(InverseEvery)); } = 20;

    /// <summary>The fraction of each batch the statistics see, in (0, 1]. Default 1.</summary>
    public double StatisticsFraction
    {
        get;
        init => field = value is > 0 and <= 1 ? value : throw Checks.Error(nameof(StatisticsFraction), value, "must lie in (0, 1]");
    } = 1;

    /// <summary>
    /// The fraction of each batch (its first ⌈f·N⌉ examples) on which the quadratic model's Fisher
    /// products are computed, in (0, 1]. Default 1. They are ΔᵀFΔ, ΔᵀFδ₀, δ₀ᵀFδ₀ for the quadratic
    /// rule's α and μ on every update, and δᵀFδ for the Levenberg–Marquardt ρ of the KL-clip rule.
    /// Their Jacobian-vector-product pass (a forward and a Jacobian-vector product per direction)
    /// costs several forward passes over the examples it sees; the gradient and the loss of the
    /// quadratic model stay the whole batch's.
    /// </summary>
    public double QuadraticFraction
    {
        get;
        init => field = value is > 0 and <= 1 ? value : throw Checks.Error(nameof(QuadraticFraction), value, "must lie in (0, 1]");
    } = 1;

    public FisherKind Fisher { get; init; } = FisherKind.True;

    /// <summary>How the damped factors are inverted. Default <see cref="KfacInverseMethod.Auto"/>.</summary>
    public KfacInverseMethod InverseMethod { get; init; } = KfacInverseMethod.Auto;

    /// <summary>The Cholesky route's arithmetic (ignored by the ONNX Runtime route, float32 LU). Default <see cref="KfacInversePrecision.Auto"/>.</summary>
    public KfacInversePrecision InversePrecision { get; init; } = KfacInversePrecision.Auto;

    /// <summary>Data-parallel: when the ranks' factor statistics are reduced. Default <see cref="FactorReduction.BeforeInverses"/>.</summary>
    public FactorReduction FactorReduction { get; init; } = FactorReduction.BeforeInverses;

    public FallbackBlock Fallback { get; init; } = FallbackBlock.Diagonal;

    /// <summary>
    /// Block overrides, first match wins: a glob over parameter names and a block kind
    /// (<c>kronecker</c>, <c>embedding</c>, <c>diagonal</c>, <c>identity</c>). A layer whose weight matches takes the kind as a whole.
    /// </summary>
    public IReadOnlyList<BlockOverride> Blocks { get; init => field = [.. Checks.NotNull(value, nameof(Blocks))]; } = [];

    /// <summary>Learning-rate schedule (KL-clip rule). Default constant.</summary>
    public ILearningRateSchedule Schedule { get; init => field = Checks.NotNull(value, nameof(Schedule)); } = ConstantSchedule.Instance;

    /// <summary>Parameter groups (lr, weight decay, momentum, frozen), first match wins.</summary>
    public IReadOnlyList<ParameterGroup> Groups { get; init => field = [.. Checks.NotNull(value, nameof(Groups))]; } = [];

    /// <summary>Clip the update actually taken to this global L2 norm; null: no clipping.</summary>
    public double? ClipUpdateNorm { get; init => field = value is null ? null : Positive(value.Value, nameof(ClipUpdateNorm)); }

    /// <summary>
    /// Dense or per-example preconditioning of dense layers. Default <see cref="KfacPreconditioning.Auto"/>;
    /// the per-example form needs the taps that <see cref="Configure"/> requests for the batch size it is given.
    /// </summary>
    public KfacPreconditioning Preconditioning { get; init; } = KfacPreconditioning.Auto;

    /// <summary>On a non-finite loss, return to the last good weights and raise λ tenfold instead of stopping. Default false.</summary>
    public bool RollbackOnDivergence { get; init; }

    /// <summary>
    /// The training-graph outputs K-FAC reads: factor statistics, the sampled pass, sampled diagonal
    /// gradients, and the taps a_l, g_l of the dense layers that per-example preconditioning would
    /// serve (<see cref="Preconditioning"/>): with <see cref="KfacPreconditioning.Auto"/> only when
    /// <paramref name="batchSize"/> is given (the examples of one update, when an update is one
    /// batch of one process) and only for the layers where that form is cheaper at it.
    /// </summary>
    public TrainingGraphOptions Configure(TrainingGraphOptions graph, int? batchSize = null)
    {
        ArgumentNullException.ThrowIfNull(graph);
        return graph with
        {
            TapLayer = (graph.TapLayer, PerExampleTaps(batchSize)) switch
            {
                ({ } theirs, { } ours) => l => theirs(l) || ours(l),
                var (theirs, ours) => theirs ?? ours,
            },
            FactorStatistics = true,
            SampledFisher = Fisher == FisherKind.True,
            StatisticsFraction = StatisticsFraction,
            JvpFraction = QuadraticFraction,
            LayerTaps = false,
            SampledGradientsOutsideLayers = Fallback == FallbackBlock.Diagonal,
            SampledGradients = [.. Blocks.Where(b => b.Kind == "diagonal").Select(b => b.Pattern)],
        };
    }

    /// <summary>Which layers' taps the per-example form needs (null: none).</summary>
    private Func<LayerInfo, bool>? PerExampleTaps(int? batchSize)
    {
        // Only an update whose preconditioned gradient is exactly the gradient can use it: η = 0 somewhere.
        bool noDecay = WeightDecay == 0 || Groups.Any(g => g.WeightDecay == 0);
        if (Preconditioning == KfacPreconditioning.Dense || !noDecay) return null;
        if (Preconditioning == KfacPreconditioning.PerExample) return KroneckerBlock.PerExampleApplies;
        if (batchSize is not { } n) return null;
        // Rows ≥ N (a dense layer over extra axes sees N·T rows): the taps of layers cheaper at N.
        return l => KroneckerBlock.PerExampleApplies(l) && KroneckerBlock.PerExampleIsCheaper(l.InFeatures + (l.Bias is null ? 0 : 1), l.OutFeatures, n);
    }

    internal void Validate()
    {
        if (MinDamping > MaxDamping) throw Checks.Error(nameof(MinDamping), MinDamping, $"must not exceed MaxDamping ({MaxDamping})");
        if (Damping < MinDamping || Damping > MaxDamping)
            throw Checks.Error(nameof(Damping), Damping, $"must lie in [MinDamping, MaxDamping] = [{MinDamping}, {MaxDamping}]");
        foreach (var g in Groups) Checks.NotNull(g, nameof(Groups));
        if (Fisher == FisherKind.Empirical && Fallback == FallbackBlock.Diagonal)
            throw Checks.Error(nameof(Fallback), Fallback, "diagonal needs the sampled-target gradients of the true Fisher; use Identity with the empirical Fisher");
    }

    private static double Positive(double value, string option) =>
        double.IsFinite(value) && value > 0 ? value : throw Checks.Error(option, value, "must be a finite number > 0");

    private static int AtLeastOne(int value, string option) =>
        value >= 1 ? value : throw Checks.Error(option, value, "must be at least 1");
}

/// <summary>A user's choice of curvature block for the parameters a glob matches.</summary>
public sealed record BlockOverride
{
    public static readonly IReadOnlyList<string> Kinds = ["kronecker", "embedding", "diagonal", "identity"];

    public BlockOverride(string pattern, string kind)
    {
        ArgumentException.ThrowIfNullOrEmpty(pattern);
        string k = kind.Trim().ToLowerInvariant();
        if (!Kinds.Contains(k))
            throw new ArgumentException($"unknown block kind '{kind}'; expected one of: {string.Join(", ", Kinds)}", nameof(kind));
        Pattern = pattern;
        Kind = k;
    }

    public string Pattern { get; }
    public string Kind { get; }

    /// <summary>Parses <c>GLOB:KIND</c>.</summary>
    public static BlockOverride Parse(string text)
    {
        int colon = text.LastIndexOf(':');
        if (colon <= 0 || colon == text.Length - 1)
            throw new ArgumentException($"'{text}' should be GLOB:KIND, e.g. \"head.*:diagonal\" (kinds: {string.Join(", ", Kinds)})", "Blocks");
        return new BlockOverride(text[..colon].Trim(), text[(colon + 1)..]);
    }
}
