using System.Diagnostics;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac.Blocks;
using OnnxKfac.Toolkit.Numerics;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Toolkit.Kfac;

/// <summary>
/// K-FAC (Martens &amp; Grosse 2015; KFC for convolutions) over a training graph built with
/// <see cref="KfacOptions.Configure"/>: the graph emits each layer's factor statistics (and the
/// sampled-target pass of the true Fisher); this stage keeps the running factors, their damped
/// inverses (refreshed every T_inv updates, by Cholesky through OpenBLAS or in an ONNX Runtime
/// program: <see cref="KfacOptions.InverseMethod"/>), preconditions every
/// gradient in a second program and applies the KL-clipped momentum update or the paper's
/// exact-quadratic α/μ update, with fixed, scheduled or Levenberg–Marquardt damping.
/// The formulas are in Toolkit/Kfac/README.md.
/// <code>
/// var graph = kfacOptions.Configure(new TrainingGraphOptions(loss));
/// using var session = TrainingSession.Create(model, graph);
/// using var kfac = new KfacOptimizer(session, kfacOptions);
/// </code>
/// </summary>
public sealed class KfacOptimizer : IOptimizer, IBatchObserver, IRecoverable, IDisposable
{
    internal const string KindName = "kfac";

    private readonly KfacOptions _options;
    private readonly ParameterBinding _binding;
    private readonly Slot[] _slots;
    private readonly IReadOnlyList<Parameter> _graphParameters;
    private readonly CurvatureBlock[] _blocks;
    private readonly IKfacProgram? _inverse;
    private readonly OrtProgram? _precondition;
    private readonly OpenBlasLibrary? _lapack;
    private readonly TrainingSessionOptions? _runtime;
    private DistributedInverses? _distributed;
    private readonly float[][]? _snapshot;
    private readonly double[] _rates, _ones, _fisher = new double[4], _quadratic = new double[3];
    private readonly int[] _slotOfParameter;
    private readonly string _lossOutput;
    private readonly bool _sumReduction;
    private readonly string[][] _tangentNames;
    private double _lambda;
    private bool _hasMemory, _hasInverses, _snapshotValid;
    private int _observed;
    private double _boost = 1;
    /// <summary>The factor rollbacks multiplied a fixed or scheduled damping by (10 per rollback).</summary>
    private double _raised = 1;

    /// <summary>K-FAC over a session whose graph was built with <see cref="KfacOptions.Configure"/>.</summary>
    public KfacOptimizer(TrainingSession session, KfacOptions options)
        : this(session.Parameters, session.Manifest, options, session.Options, session.SourceModel)
    {
        // The quadratic rule and Levenberg–Marquardt need Fisher-vector products: fail now, not at update 1.
        if (options.UpdateRule == KfacUpdateRule.Quadratic || options.DampingAdaptation == DampingAdaptation.LevenbergMarquardt)
            session.PrepareJacobianVectorProducts();
    }

    /// <param name="parameters">The session's parameters (the list the trainer steps over).</param>
    /// <param name="manifest">The training graph's manifest: layers and their factor outputs.</param>
    /// <param name="options">Hyperparameters.</param>
    /// <param name="runtime">How to run K-FAC's ONNX Runtime programs (threads, device); default CPU.</param>
    /// <param name="source">The source model, to say what reads a parameter that no layer covers.</param>
    public KfacOptimizer(IReadOnlyList<Parameter> parameters, TrainingManifest manifest, KfacOptions options,
        TrainingSessionOptions? runtime = null, ModelProto? source = null)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _options.Validate();
        if (_options.UpdateRule == KfacUpdateRule.Quadratic && (_options.Groups.Any(g => g.LearningRate is not null || g.Momentum is not null)))
            throw Checks.Error(nameof(KfacOptions.Groups), "lr/momentum", "the quadratic rule chooses its own step size and momentum; groups may set weight decay or frozen only");
        _binding = new ParameterBinding(parameters, _options.Groups,
            new GroupSettings(_options.LearningRate, _options.WeightDecay, _options.Momentum, Frozen: false));
        _graphParameters = parameters;
        var slots = _binding.Trainable.Where(t => !t.Settings.Frozen)
            .ToDictionary(t => t.Parameter.Name, t => new Slot(t.Parameter, t.Settings, momentum: true), StringComparer.Ordinal);
        _slots = [.. slots.Values];
        var frozen = new HashSet<string>(parameters.Select(p => p.Name).Where(n => !slots.ContainsKey(n)), StringComparer.Ordinal);
        Blocks = BlockPlan.Plan(manifest, _options, frozen, source);
        _blocks = [.. Blocks.Select(b => Create(b, slots, manifest))];
        _lambda = _options.Damping;

        _runtime = runtime;
        _lapack = _options.InverseMethod switch
        {
            KfacInverseMethod.Cholesky => LoadOpenBlas(),
            KfacInverseMethod.Auto => OpenBlasLibrary.TryLoad(),
            _ => null,
        };
        InverseMethod = _lapack is null ? KfacInverseMethod.OnnxRuntime : KfacInverseMethod.Cholesky;
        _inverse = BuildInverse(_blocks, "inverse");
        using var ortOptions = ProgramOptions(runtime);
        _precondition = Build(ortOptions, "preconditioning", (b, pb, bind) => b.EmitPrecondition(pb, bind));
        _perExample = _options.Preconditioning == KfacPreconditioning.Dense ? []
            : [.. _blocks.OfType<KroneckerBlock>().Where(b => b.CanPreconditionPerExample)];
        _perExampleRows = new int[_perExample.Length];
        if (_options.RollbackOnDivergence) _snapshot = [.. _slots.Select(s => new float[s.Parameter.Value.Length])];
        _lossOutput = manifest.Loss.Output;
        _sumReduction = manifest.Loss.Reduction == "sum";
        _tangentNames = [.. parameters.Select(p => new[] { JvpGraphBuilder.TangentName(p.Name, 0), JvpGraphBuilder.TangentName(p.Name, 1) })];
        _rates = new double[_slots.Length];
        _ones = [.. Enumerable.Repeat(1.0, _slots.Length)];
        var slotIndex = _slots.Select((s, k) => (s.Name, k)).ToDictionary(t => t.Name, t => t.k, StringComparer.Ordinal);
        _slotOfParameter = [.. parameters.Select(p => slotIndex.TryGetValue(p.Name, out int k) ? k : -1)];
    }

    /// <summary>The block of every trainable parameter and why (what <c>inspect --optimizer kfac</c> prints).</summary>
    public IReadOnlyList<KfacBlockInfo> Blocks { get; }

    public KfacOptions Options => _options;

    /// <summary>How the damped factors are inverted: <see cref="KfacOptions.InverseMethod"/> resolved (never Auto).</summary>
    public KfacInverseMethod InverseMethod { get; }

    /// <summary>
    /// The inverse route in words, for logs: "cholesky (OpenBLAS libopenblas.so.0, float32 where
    /// (tr F + s)/s ≤ 1e4, else float64, 1 thread)" or "onnxruntime (com.microsoft.Inverse, LU, float32)".
    /// </summary>
    public string InverseRoute => _lapack is null
        ? "onnxruntime (com.microsoft.Inverse, LU, float32)"
        : $"cholesky (OpenBLAS {_lapack.Path}, {PrecisionInWords}, {InverseThreads} thread{(InverseThreads == 1 ? "" : "s")})";

    /// <summary>Damped factor groups this rank's last Cholesky refresh inverted in float32 (0 before one, or on the ONNX Runtime route).</summary>
    public int LastRefreshSinglePrecision { get; private set; }

    /// <summary>Damped factor groups this rank inverts at a refresh (every rank's, with one process).</summary>
    public int FactorGroups => _blocks.Sum(b => b.DampedFactors.Sum(f => f.Groups));

    private string PrecisionInWords => _options.InversePrecision switch
    {
        KfacInversePrecision.Float32 => "float32",
        KfacInversePrecision.Float64 => "float64",
        _ => $"float32 where (tr F + s)/s ≤ {DampedFactor.SingleConditionBound:0e0}, else float64",
    };

    /// <summary>OpenBLAS's threads: the session's intra-op count (all cores when it is ONNX Runtime's default).</summary>
    private int InverseThreads => _runtime?.Threads is > 0 and int n ? n : Environment.ProcessorCount;

    /// <summary>How the error begins when <see cref="KfacInverseMethod.Cholesky"/> was asked for and OpenBLAS does not load.</summary>
    public const string CholeskyUnavailable = "K-FAC's Cholesky inverses need OpenBLAS";

    private static OpenBlasLibrary LoadOpenBlas()
    {
        try { return OpenBlasLibrary.Load(); }
        catch (OnnxKfacException e) { throw new OnnxKfacException($"{CholeskyUnavailable}: {e.Message}", e); }
    }

    /// <summary>The damping λ now.</summary>
    public double Damping => _lambda;

    /// <summary>What the last update did (for logs and tests).</summary>
    public KfacStepInfo LastStep { get; private set; } = new();

    /// <summary>The plan K-FAC would make for a training graph, without building programs (inspect).</summary>
    public static IReadOnlyList<KfacBlockInfo> Plan(TrainingManifest manifest, KfacOptions options, ModelProto? source = null) =>
        BlockPlan.Plan(manifest, options, new HashSet<string>(), source);

    private static CurvatureBlock Create(KfacBlockInfo info, Dictionary<string, Slot> slots, TrainingManifest manifest) => info.Kind switch
    {
        "kronecker" => new KroneckerBlock(info.Layer!, slots[info.Layer!.Weight], info.Parameters.Count > 1 ? slots[info.Parameters[1]] : null, info.Reason),
        "embedding" => new EmbeddingBlock(info.Layer!, slots[info.Parameters[0]], info.Reason),
        "diagonal" => new DiagonalBlock(slots[info.Parameters[0]],
            manifest.Outputs.First(o => o.Role == TensorRole.SampledGradient && o.Of == info.Parameters[0]).Name, info.Reason),
        _ => new IdentityBlock(slots[info.Parameters[0]], info.Reason),
    };

    /// <summary>
    /// ONNX Runtime options of K-FAC's own programs: the training session's threads and device, never
    /// spinning (<see cref="TrainingSessionOptions.IntraOpSpinning"/>: they run between the training
    /// graph's runs, and spinning pools of several sessions fight over the cores).
    /// </summary>
    private static Microsoft.ML.OnnxRuntime.SessionOptions ProgramOptions(TrainingSessionOptions? runtime) =>
        ((runtime ?? new TrainingSessionOptions()) with { IntraOpSpinning = false }).CreateOrtOptions();

    /// <summary>The inverse refresh over <paramref name="blocks"/> by the resolved method; null when none has a factor to invert.</summary>
    private IKfacProgram? BuildInverse(IEnumerable<CurvatureBlock> blocks, string what)
    {
        if (_lapack is not null) return CholeskyProgram.Create(_lapack, blocks, InverseThreads, _options.InversePrecision);
        using var ortOptions = ProgramOptions(_runtime);
        return Build(ortOptions, what, (b, pb, bind) => b.EmitInverse(pb, bind), blocks);
    }

    private OrtProgram? Build(Microsoft.ML.OnnxRuntime.SessionOptions options, string what, Action<CurvatureBlock, ProgramBuilder, ProgramBindings> emit,
        IEnumerable<CurvatureBlock>? blocks = null)
    {
        var pb = new ProgramBuilder();
        var bind = new ProgramBindings();
        foreach (var b in blocks ?? _blocks) emit(b, pb, bind);
        return pb.IsEmpty ? null : new OrtProgram(pb.Build(), options, bind.Inputs, bind.Outputs, what);
    }

    // ---- the step, phase by phase ------------------------------------------------------------------

    /// <inheritdoc/>
    public void ObserveBatch(StepContext context, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(context);
        Observe(context, batchSize, context.OneRunPerUpdate);
    }

    /// <param name="lastRun">Whether the update is this run alone, its outputs still there at <see cref="Step"/>.</param>
    private void Observe(StepContext context, int batchSize, bool lastRun)
    {
        if (!IsStatisticsUpdate(context.UpdateCount)) return;
        var pass = Pass(context);
        long t0 = Stopwatch.GetTimestamp();
        int dropped = 0;
        // One process: the blocks may fold the run's statistics at the update instead of summing them now.
        bool fromPass = lastRun && context.Collectives.Size == 1;
        foreach (var b in _blocks) if (!b.Observe(pass, batchSize, fromPass)) dropped++;
        _observed++;
        Timings.AddObservation(Stopwatch.GetTimestamp() - t0);
        LastStep = LastStep with { DroppedStatistics = LastStep.DroppedStatistics + dropped };
    }

    /// <inheritdoc/>
    public void Step(StepContext context)
    {
        _binding.Check(context);
        var pass = Pass(context);
        long update = context.UpdateCount;
        LastStep = new KfacStepInfo { Update = update, DroppedStatistics = _observed == 0 ? 0 : LastStep.DroppedStatistics };
        long t0 = Stopwatch.GetTimestamp();
        if (_observed == 0) Observe(context, BatchSize(pass), lastRun: true);   // stepped without the trainer's observation: this run is the update's
        UpdateEstimator(update, context.Collectives);
        long t1 = Stopwatch.GetTimestamp();
        RefreshInverses(update, context.Collectives);
        long t2 = Stopwatch.GetTimestamp();
        PrepareGradients();
        Precondition(context, pass);
        long t3 = Stopwatch.GetTimestamp();
        var m = _options.UpdateRule == KfacUpdateRule.KlClip ? KlClipUpdate(context, pass) : QuadraticUpdate(context, pass);
        long t4 = Stopwatch.GetTimestamp();
        Apply(m);
        AdaptDamping(context, pass, m);
        long t5 = Stopwatch.GetTimestamp();
        Timings.Add(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4);
    }

    /// <summary>Where K-FAC's own time went, summed over the updates so far (the benchmark's breakdown).</summary>
    public KfacTimings Timings { get; } = new();

    private static ITrainingPass Pass(StepContext context) => context.Pass ?? throw new InvalidOperationException(
        "K-FAC reads the training graph's factor statistics: step it with a StepContext whose Pass is the training session (the Trainer does)");

    /// <summary>The batch of the last run: the first dimension of the loss's output.</summary>
    private int BatchSize(ITrainingPass pass) => checked((int)pass.GetOutputShape(_lossOutput)[0]);

    private bool IsStatisticsUpdate(long update) => (update - 1) % _options.StatisticsEvery == 0;

    /// <inheritdoc/>
    public bool NeedsStatistics(long update) => IsStatisticsUpdate(update);

    /// <inheritdoc/>
    public void DiscardObserved()
    {
        foreach (var b in _blocks) b.Discard();
        _observed = 0;
    }

    /// <summary>Phase 1: fold the observed batches into the running factors (every T_cov updates).</summary>
    private void UpdateEstimator(long update, ICollectives collectives)
    {
        if (IsStatisticsUpdate(update))
        {
            ReduceStatistics(collectives);
            foreach (var b in _blocks) b.Fold(_options.FactorDecay, countEmpty: collectives.Size > 1 && Deferred(b));
        }
        _observed = 0;
    }

    /// <summary>Whether the ranks fold <paramref name="block"/>'s statistics apart and average its running factors before an inverse refresh.</summary>
    private bool Deferred(CurvatureBlock block) => _options.FactorReduction == FactorReduction.BeforeInverses && block.RunningFactors.Count > 0;

    /// <summary>
    /// Data-parallel: the statistic sums and batch counts of every block that folds after the
    /// ranks meet (all of them with <see cref="FactorReduction.EveryUpdate"/>, else the diagonal
    /// ones), added up over the ranks in one all-reduce of one bucket (every rank takes part,
    /// also one whose statistics were dropped: it adds zeros and no batches).
    /// </summary>
    private void ReduceStatistics(ICollectives collectives)
    {
        if (collectives.Size == 1) return;
        int length = 0;
        foreach (var b in _blocks)
        {
            if (Deferred(b)) continue;
            length++;
            foreach (var sum in b.StatisticSums) length += sum.Length;
        }
        if (length == 0) return;
        // The layout is the same on every rank (the same blocks observed the same micro-batches); it
        // only grows when an update holds more micro-batches than any before it.
        if (_statisticsBucket is null || _statisticsBucket.Length < length) _statisticsBucket = new double[length];
        var bucket = _statisticsBucket.AsSpan(0, length);
        int at = 0;
        foreach (var b in _blocks)
        {
            if (Deferred(b)) continue;
            foreach (var sum in b.StatisticSums) { sum.CopyTo(bucket[at..]); at += sum.Length; }
            bucket[at++] = b.StatisticBatches;
        }
        collectives.AllReduceSum(bucket);
        at = 0;
        foreach (var b in _blocks)
        {
            if (Deferred(b)) continue;
            foreach (var sum in b.StatisticSums) { bucket.Slice(at, sum.Length).CopyTo(sum); at += sum.Length; }
            b.StatisticBatches = (int)bucket[at++];
        }
    }

    private double[]? _statisticsBucket;

    /// <summary>
    /// Data-parallel with deferred reduction: every rank's running factors become their mean over
    /// the ranks, in one all-reduce. The running average is linear (F ← εF + (1−ε)S with one ε on
    /// every rank), so the mean of the ranks' estimates is the estimate of the ranks' mean
    /// statistics, and each rank may go on folding its own from there.
    /// </summary>
    private void SynchronizeFactors(ICollectives collectives)
    {
        if (!HasDeferred(collectives)) return;
        var bucket = _factorBucket.AsSpan();
        int at = 0;
        foreach (var b in _blocks)
        {
            if (!Deferred(b)) continue;
            foreach (var f in b.RunningFactors) { f.CopyTo(bucket[at..]); at += f.Length; }
        }
        collectives.AllReduceSum(bucket);
        double scale = 1.0 / collectives.Size;
        at = 0;
        foreach (var b in _blocks)
        {
            if (!Deferred(b)) continue;
            foreach (var f in b.RunningFactors) { for (int i = 0; i < f.Length; i++) f[i] = bucket[at + i] * scale; at += f.Length; }
        }
    }

    private double[]? _factorBucket;

    private bool HasDeferred(ICollectives collectives)
    {
        if (collectives.Size == 1) return false;
        _factorBucket ??= new double[_blocks.Where(Deferred).Sum(b => b.RunningFactors.Sum(f => f.Length))];
        return _factorBucket.Length > 0;
    }

    /// <inheritdoc/>
    public OptimizerState? SaveSharedState(ICollectives collectives)
    {
        ArgumentNullException.ThrowIfNull(collectives);
        if (!HasDeferred(collectives)) return null;
        // Keep this rank's own running factors, save the ranks' mean, put the own ones back.
        var own = new List<double[]>();
        foreach (var b in _blocks.Where(Deferred))
            foreach (var f in b.RunningFactors) own.Add((double[])f.Clone());
        SynchronizeFactors(collectives);
        var state = collectives.Rank == 0 ? SaveState() : null;
        int k = 0;
        foreach (var b in _blocks.Where(Deferred))
            foreach (var f in b.RunningFactors) own[k++].CopyTo(f, 0);
        return state;
    }

    /// <summary>Phase 2: damped inverses, on the first update and every T_inv updates after it.</summary>
    private void RefreshInverses(long update, ICollectives collectives)
    {
        if (_options.DampingAdaptation == DampingAdaptation.Fixed)
            _lambda = Math.Clamp(_options.Damping * _options.DampingSchedule.Factor(update) * _raised, _options.MinDamping, _options.MaxDamping);
        if (_inverse is null || (_hasInverses && (update - 1) % _options.InverseEvery != 0)) return;
        double gamma = Math.Sqrt(_lambda + _options.WeightDecay);
        SynchronizeFactors(collectives);
        for (int attempt = 0; ; attempt++)
        {
            foreach (var b in _blocks) b.PrepareInverse(gamma, _boost);
            if (collectives.Size == 1) _inverse.Run();
            else Distributed(collectives).Run();   // each rank inverts its share of the blocks, then all broadcast
            bool finite = true;
            foreach (var b in _blocks) finite &= b.InverseIsFinite();
            if (attempt == 0 && _lapack is not null) LastStep = LastStep with { NotPositiveDefinite = NotPositiveDefinite() };
            if (finite || attempt == 3) break;
            _boost *= 10;   // a singular or non-finite factor: more damping, then try again
        }
        _boost = 1;
        _hasInverses = true;
        LastRefreshSinglePrecision = _lapack is null ? 0 : Count(f => f.SinglePrecisionGroups);
        LastStep = LastStep with { RefreshedInverses = true, SinglePrecisionInverses = LastRefreshSinglePrecision };
    }

    /// <summary>Damped factor groups the last Cholesky refresh found not positive definite.</summary>
    private int NotPositiveDefinite() => Count(f => f.NotPositiveDefinite);

    /// <summary>A count over every damped factor of this rank's last Cholesky refresh (a loop: a refresh allocates nothing).</summary>
    private int Count(Func<DampedFactor, int> of)
    {
        int n = 0;
        foreach (var b in _blocks)
        {
            var factors = b.DampedFactors;
            for (int i = 0; i < factors.Count; i++) n += of(factors[i]);
        }
        return n;
    }

    private DistributedInverses Distributed(ICollectives collectives) => _distributed ??=
        new DistributedInverses(_blocks, collectives, owned => BuildInverse(owned, $"inverse (rank {collectives.Rank})"));

    /// <summary>Phase 3: the gradient K-FAC preconditions, ∇ + η θ.</summary>
    private void PrepareGradients()
    {
        foreach (var s in _slots)
        {
            FactorMath.AddScaled(s.Work, s.Parameter.Grad, (float)s.Settings.WeightDecay, s.Parameter.Value);
        }
    }

    /// <summary>Phase 4: V for every block (the program for Kronecker and embedding blocks, element-wise for the rest).</summary>
    private void Precondition(StepContext context, ITrainingPass pass)
    {
        var program = PerExample(context, pass, out int perExample) ?? _precondition;
        program?.Run();
        foreach (var b in _blocks) b.Precondition(_lambda, _options.WeightDecay);
        int replaced = 0;
        foreach (var s in _slots)
        {
            if (AllFinite(s.V)) continue;
            s.Work.AsSpan().CopyTo(s.V);   // never a NaN update: fall back to the gradient for this parameter
            replaced++;
        }
        LastStep = LastStep with { NonFinitePreconditioned = replaced, PerExampleBlocks = perExample };
        if (perExample > 0) Timings.AddPerExample();
    }

    /// <summary>
    /// The preconditioning program with the per-example form for the blocks that take it this update
    /// (their rows copied in), or null for the dense program. The form needs the gradient to be the
    /// last run's alone (<see cref="StepContext.GradientIsLastRun"/>: one micro-batch, one rank, no
    /// clipping) and that run to have had the taps (a statistics update: the graph between them has none);
    /// a block takes it where <see cref="KroneckerBlock.CanPreconditionPerExample"/> (η = 0, taps) and,
    /// with <see cref="KfacPreconditioning.Auto"/>, where it is cheaper for the run's rows.
    /// </summary>
    private OrtProgram? PerExample(StepContext context, ITrainingPass pass, out int count)
    {
        count = 0;
        if (_perExample.Length == 0 || !context.GradientIsLastRun || context.Collectives.Size > 1 || !IsStatisticsUpdate(context.UpdateCount))
            return null;
        var rows = _perExampleRows;
        for (int k = 0; k < _perExample.Length; k++)
        {
            int r = _perExample[k].Rows(pass);
            rows[k] = _options.Preconditioning == KfacPreconditioning.PerExample || _perExample[k].PerExampleIsCheaper(r) ? r : 0;
            if (rows[k] > 0) count++;
        }
        if (count == 0) return null;
        int n = BatchSize(pass);
        if (_perExamplePrograms.TryGetValue(n, out var cached))
        {
            // One program per batch size: rows that vary at one N (a sequence length that changes
            // from batch to batch) keep the dense form rather than build a program per update.
            if (!cached.Rows.AsSpan().SequenceEqual(rows))
            {
                count = 0;
                return null;
            }
        }
        else
        {
            var taken = new Dictionary<CurvatureBlock, int>();
            for (int k = 0; k < _perExample.Length; k++) if (rows[k] > 0) taken[_perExample[k]] = rows[k];
            using var ortOptions = ProgramOptions(_runtime);
            var program = Build(ortOptions, $"per-example preconditioning (batch {n})", (b, pb, bind) =>
            {
                if (taken.TryGetValue(b, out int r)) ((KroneckerBlock)b).EmitPreconditionPerExample(pb, bind, r);
                else b.EmitPrecondition(pb, bind);
            });
            cached = (program, (int[])rows.Clone());
            _perExamplePrograms[n] = cached;
        }
        for (int k = 0; k < _perExample.Length; k++) if (rows[k] > 0) _perExample[k].CopyRows(pass, rows[k]);
        return cached.Program;
    }

    private readonly KroneckerBlock[] _perExample;
    private readonly int[] _perExampleRows;
    /// <summary>Per batch size: the preconditioning program with the per-example form for the blocks whose rows are non-zero.</summary>
    private readonly Dictionary<int, (OrtProgram? Program, int[] Rows)> _perExamplePrograms = [];

    private static bool AllFinite(ReadOnlySpan<float> x) => FactorMath.AllFinite(x);

    /// <summary>The step to take: per slot, θ ← θ + Scale · Direction (Direction: the memory after this update).</summary>
    /// <summary>Rates per slot; Quadratic (δᵀFδ, δᵀδ, ∇ᵀδ) when the LM rule needs it (HasQuadratic).</summary>
    private readonly record struct Move(double[] SlotRates, bool HasQuadratic);

    /// <summary>Phase 5a (KL clip): ν, then b ← μ b + ν V; the move is −α b.</summary>
    private Move KlClipUpdate(StepContext context, ITrainingPass pass)
    {
        double factor = _options.Schedule.Factor(context.UpdateCount);
        double s = 0;
        var rates = _rates;
        for (int k = 0; k < _slots.Length; k++)
        {
            var slot = _slots[k];
            double lr = slot.Settings.LearningRate * factor;
            rates[k] = -lr;
            s += lr * lr * Dot(slot.V, slot.Work);
        }
        double nu = s > 0 && double.IsFinite(s) ? Math.Min(1, Math.Sqrt(_options.KlClip / s)) : 1;
        foreach (var slot in _slots)
        {
            float mu = (float)slot.Settings.Momentum;
            FactorMath.Combine(slot.Memory, _hasMemory ? mu : 0, (float)nu, slot.V);
        }
        _hasMemory = true;
        LastStep = LastStep with { Nu = nu, KlSum = s };
        if (!IsAdaptUpdate(context.UpdateCount)) return new Move(rates, false);
        // The LM rule needs M(δ) of the move actually taken: F-products of δ = rate·b.
        FisherProducts(context, pass, useSecond: false, firstIsV: false, rates);
        double gd = 0, dd = 0;
        for (int k = 0; k < _slots.Length; k++)
        {
            gd += rates[k] * Dot(_slots[k].Work, _slots[k].Memory);
            dd += rates[k] * rates[k] * Dot(_slots[k].Memory, _slots[k].Memory);
        }
        _quadratic[0] = _fisher[0];
        _quadratic[1] = dd;
        _quadratic[2] = gd;
        return new Move(rates, true);
    }

    /// <summary>
    /// Phase 5b (the paper's rule): Δ = −V and δ₀ = the previous update; α, μ minimise
    /// ½δᵀ(F + (λ+η)I)δ + ∇ᵀδ over δ = αΔ + μδ₀ with F from exact Fisher-vector products.
    /// </summary>
    private Move QuadraticUpdate(StepContext context, ITrainingPass pass)
    {
        // Q = [ΔᵀFΔ, ΔᵀFδ₀; δ₀ᵀFΔ, δ₀ᵀFδ₀] from the Jacobian-vector-product pass.
        FisherProducts(context, pass, useSecond: _hasMemory, firstIsV: true, null);
        var q = _fisher;
        double dd = 0, d0 = 0, o0 = 0, gD = 0, g0 = 0;
        var gram = _gram;
        foreach (var s in _slots)
        {
            FactorMath.Gram(s.V, s.Work, s.Memory, gram);   // V·V, V·∇, V·δ₀, ∇·∇, ∇·δ₀, δ₀·δ₀
            dd += gram[0];
            gD -= gram[1];
            if (!_hasMemory) continue;   // no δ₀ yet: whatever the memory holds plays no part
            d0 -= gram[2];
            g0 += gram[4];
            o0 += gram[5];
        }
        double damp = _lambda + _options.WeightDecay;
        double c11 = q[0] + damp * dd, c12 = q[1] + damp * d0, c22 = q[3] + damp * o0;
        double alpha, mu = 0;
        double det = c11 * c22 - c12 * c12;
        // Δ and δ₀ nearly parallel in the C metric (det/(c11·c22) = 1 − cos²) make the 2×2 solve
        // cancel catastrophically (the products come from float32): then μ = 0, α alone.
        if (_hasMemory && o0 > 0 && det > 1e-4 * Math.Abs(c11 * c22) && double.IsFinite(det))
        {
            alpha = (-gD * c22 + g0 * c12) / det;
            mu = (-g0 * c11 + gD * c12) / det;
        }
        else alpha = c11 > 0 ? -gD / c11 : 0;
        if (!double.IsFinite(alpha) || !double.IsFinite(mu))
            throw new OnnxKfacException($"K-FAC's quadratic model is degenerate at update {context.UpdateCount} (ΔᵀFΔ = {q[0]}, ∇ᵀΔ = {gD}); raise the damping");
        // δ = αΔ + μδ₀ becomes the new memory.
        float a = (float)alpha, m = (float)mu;
        foreach (var s in _slots) FactorMath.Combine(s.Memory, _hasMemory ? m : 0, -a, s.V);
        _hasMemory = true;
        double fdd = alpha * alpha * q[0] + 2 * alpha * mu * q[1] + mu * mu * q[3];
        double ddd = alpha * alpha * dd + 2 * alpha * mu * d0 + mu * mu * o0;
        LastStep = LastStep with { Alpha = alpha, Mu = mu, DeltaFDelta = q[0], GradDelta = gD };
        _quadratic[0] = fdd;
        _quadratic[1] = ddd;
        _quadratic[2] = alpha * gD + mu * g0;
        return new Move(_ones, true);
    }

    /// <summary>
    /// Fills [v₀ᵀFv₀, v₀ᵀFv₁, v₁ᵀFv₀, v₁ᵀFv₁] from the training session's Jacobian-vector-product
    /// pass on the current minibatch, for v₀ = −V (<paramref name="firstIsV"/>) or rate·memory,
    /// and v₁ = the memory (δ₀) when <paramref name="useSecond"/>, else zero.
    /// </summary>
    private void FisherProducts(StepContext context, ITrainingPass pass, bool useSecond, bool firstIsV, double[]? rates)
    {
        for (int j = 0; j < _graphParameters.Count; j++)
        {
            var t0 = pass.GetInput(_tangentNames[j][0]);
            var t1 = pass.GetInput(_tangentNames[j][1]);
            int k = _slotOfParameter[j];
            if (k < 0) { t0.Clear(); t1.Clear(); continue; }
            var slot = _slots[k];
            float scale = firstIsV ? -1f : (float)rates![k];
            var first = firstIsV ? slot.V : slot.Memory;
            FactorMath.Combine(t0, 0, scale, first);
            if (useSecond) slot.Memory.AsSpan().CopyTo(t1);
            else t1.Clear();
        }
        pass.RunExtra("jvp");
        var q = pass.GetOutput(JvpGraphBuilder.QuadraticName);
        for (int i = 0; i < 4; i++) _fisher[i] = q[i];
        ReduceOverExamples(context.Collectives, _fisher, BatchSize(pass));
    }

    /// <summary>
    /// Data-parallel: per-rank values of the loss's kind (a mean over the rank's examples, or a sum
    /// for a sum-reduced loss) become the value over all ranks' examples, weighted as the
    /// trainer weights gradients, so vᵀFv and the loss after a step are those of the whole batch.
    /// </summary>
    private void ReduceOverExamples(ICollectives collectives, Span<double> values, int examples)
    {
        if (collectives.Size == 1) return;
        var buffer = _reduceBuffer.AsSpan(0, values.Length + 1);
        double weight = _sumReduction ? 1 : examples;
        for (int i = 0; i < values.Length; i++) buffer[i] = values[i] * weight;
        buffer[^1] = examples;
        collectives.AllReduceSum(buffer);
        double scale = _sumReduction ? 1 : 1 / buffer[^1];
        for (int i = 0; i < values.Length; i++) values[i] = buffer[i] * scale;
    }

    private readonly double[] _reduceBuffer = new double[5];
    private readonly double[] _gram = new double[6];

    private static double Dot(float[] a, float[] b) => FactorMath.Dot(a, b);

    /// <summary>Phase 6: clip the move to the global norm, check it, apply it.</summary>
    private void Apply(Move move)
    {
        double norm2 = 0;
        for (int k = 0; k < _slots.Length; k++) norm2 += move.SlotRates[k] * move.SlotRates[k] * Dot(_slots[k].Memory, _slots[k].Memory);
        double clip = _options.ClipUpdateNorm is { } max && Math.Sqrt(norm2) > max ? max / Math.Sqrt(norm2) : 1;
        if (!double.IsFinite(norm2))
            throw new OnnxKfacException($"K-FAC computed a non-finite update at update {LastStep.Update}; no weight was changed. Raise the damping (--kfac-damping) or lower the learning rate");
        if (_snapshot is not null)
        {
            for (int k = 0; k < _slots.Length; k++) _slots[k].Parameter.Value.AsSpan().CopyTo(_snapshot[k]);
            _snapshotValid = true;
        }
        _thetaNormBefore = 0;
        _thetaNormAfter = 0;
        for (int k = 0; k < _slots.Length; k++)
        {
            float r = (float)(move.SlotRates[k] * clip);
            double eta = _slots[k].Settings.WeightDecay;
            // ‖θ‖² before and after only where η weighs them (the LM rule's L2 term).
            var (before, after) = FactorMath.Step(_slots[k].Parameter.Value, r, _slots[k].Memory, norms: eta != 0);
            _thetaNormBefore += eta * before;
            _thetaNormAfter += eta * after;
        }
        _clip = clip;
        LastStep = LastStep with { UpdateNorm = Math.Sqrt(norm2) * clip, Clipped = clip < 1, Damping = _lambda };
    }

    private double _thetaNormBefore, _thetaNormAfter, _clip = 1;
    private readonly double[] _afterLoss = new double[1];

    private bool IsAdaptUpdate(long update) =>
        _options.DampingAdaptation == DampingAdaptation.LevenbergMarquardt && update % _options.AdaptEvery == 0;

    /// <summary>Phase 7: every T₁ updates, ρ = (h(θ+δ) − h(θ)) / (M(δ) − M(0)) moves λ.</summary>
    private void AdaptDamping(StepContext context, ITrainingPass pass, Move move)
    {
        if (!IsAdaptUpdate(context.UpdateCount) || !move.HasQuadratic || double.IsNaN(context.Loss)) return;
        double c = _clip;
        // M(δ) − M(0) = ½ δᵀ(F + ηI)δ + ∇ᵀδ, with the L2 term of h included on both sides.
        double model = 0.5 * c * c * (_quadratic[0] + _options.WeightDecay * _quadratic[1]) + c * _quadratic[2];
        _afterLoss[0] = pass.EvaluateLoss();
        ReduceOverExamples(context.Collectives, _afterLoss, BatchSize(pass));
        double after = _afterLoss[0] + 0.5 * _thetaNormAfter;
        double before = context.Loss + 0.5 * _thetaNormBefore;
        double rho = model < 0 ? (after - before) / model : double.NegativeInfinity;
        _lambda = LevenbergMarquardt(_lambda, rho, _options);
        LastStep = LastStep with { Rho = rho, Damping = _lambda };
    }

    /// <summary>
    /// The Levenberg–Marquardt rule: ρ &gt; 3/4 ⇒ λ ← ω λ, ρ &lt; 1/4 (or NaN) ⇒ λ ← λ / ω, with
    /// ω = (19/20)^T₁, kept within [MinDamping, MaxDamping].
    /// </summary>
    public static double LevenbergMarquardt(double lambda, double rho, KfacOptions options)
    {
        double omega = Math.Pow(19.0 / 20.0, options.AdaptEvery);
        if (rho > 0.75) lambda *= omega;
        else if (rho < 0.25 || double.IsNaN(rho)) lambda /= omega;
        return Math.Clamp(lambda, options.MinDamping, options.MaxDamping);
    }

    // ---- recovery and state ---------------------------------------------------------------------------

    /// <inheritdoc/>
    public string DivergenceAdvice =>
        _options.UpdateRule == KfacUpdateRule.Quadratic
            ? "Raise the damping (--kfac-damping, --kfac-min-damping), use larger batches (the quadratic rule fits each minibatch exactly), or pass --kfac-rollback"
            : "Raise the damping (--kfac-damping), lower the learning rate or --kfac-kl-clip, or pass --kfac-rollback";

    /// <inheritdoc/>
    public bool TryRecover(out string message)
    {
        if (_snapshot is null || !_snapshotValid)
        {
            message = _snapshot is null ? "rollback is off" : "no good state to return to yet";
            return false;
        }
        for (int k = 0; k < _slots.Length; k++) _snapshot[k].AsSpan().CopyTo(_slots[k].Parameter.Value);
        foreach (var s in _slots) Array.Clear(s.Memory);
        _hasMemory = false;
        _lambda = Math.Min(_lambda * 10, _options.MaxDamping);
        _raised *= 10;
        _hasInverses = false;       // refresh with the raised damping on the next update
        _snapshotValid = false;
        message = $"K-FAC: non-finite loss; returned to the weights before the last update and raised the damping to {_lambda:G3}";
        return true;
    }

    /// <inheritdoc/>
    public OptimizerState SaveState()
    {
        var state = new OptimizerState(KindName);
        _binding.WriteShapes(state);
        foreach (var s in _slots) state.Tensors[ParameterBinding.Key("memory", s.Name)] = (float[])s.Memory.Clone();
        foreach (var b in _blocks) b.Save(state);
        state.Doubles["damping"] = _lambda;
        state.Doubles["damping_raised"] = _raised;
        state.Longs["has_memory"] = _hasMemory ? 1 : 0;
        state.Longs["has_inverses"] = _hasInverses ? 1 : 0;
        return state;
    }

    /// <inheritdoc/>
    public void LoadState(OptimizerState state)
    {
        var byName = _binding.ValidateShapes(state, KindName);
        foreach (var s in _slots)
        {
            string key = ParameterBinding.Key("memory", s.Name);
            if (!state.Tensors.TryGetValue(key, out var m) || m.Length != s.Memory.Length)
                throw ParameterBinding.Mismatch($"it lacks '{key}' or it has the wrong size");
        }
        var expected = new HashSet<string>(_blocks.SelectMany(b => b.StateKeys), StringComparer.Ordinal);
        foreach (var key in state.DoubleTensors.Keys.Concat(state.Longs.Keys.Where(k => k.Contains(':'))))
            if (!expected.Contains(key)) throw ParameterBinding.Mismatch($"it has '{key}', which no block of this model keeps (written with other curvature blocks?)");
        foreach (var s in _slots) state.Tensors[ParameterBinding.Key("memory", s.Name)].AsSpan().CopyTo(s.Memory);
        foreach (var b in _blocks) b.Load(state);
        _lambda = state.Doubles["damping"];
        _raised = state.Doubles.TryGetValue("damping_raised", out double raised) ? raised : 1;
        _hasMemory = state.Longs["has_memory"] != 0;
        _hasInverses = state.Longs["has_inverses"] != 0;
        _observed = 0;
        _snapshotValid = false;
        _ = byName;
    }

    public void Dispose()
    {
        _inverse?.Dispose();
        _distributed?.Dispose();
        _precondition?.Dispose();
        foreach (var (program, _) in _perExamplePrograms.Values) program?.Dispose();
    }

    /// <summary>The running factors of a Kronecker block (tests).</summary>
    internal (double[] A, double[] G, float[] AInverse, float[] GInverse) FactorsOf(string block) =>
        ((KroneckerBlock)_blocks.First(b => b.Name == block)).Factors;

    /// <summary>The preconditioned gradient V of a parameter from the last step (tests).</summary>
    internal float[] PreconditionedOf(string parameter) => _slots.First(s => s.Name == parameter).V;
}

/// <summary>What one K-FAC update did (a struct: recording it allocates nothing).</summary>
public readonly record struct KfacStepInfo()
{
    public long Update { get; init; }
    /// <summary>KL clip: the clipping factor ν and Σ α²⟨V, ∇⟩.</summary>
    public double Nu { get; init; } = double.NaN;
    public double KlSum { get; init; } = double.NaN;
    /// <summary>Quadratic rule: α, μ, ΔᵀFΔ and ∇ᵀΔ.</summary>
    public double Alpha { get; init; } = double.NaN;
    public double Mu { get; init; } = double.NaN;
    public double DeltaFDelta { get; init; } = double.NaN;
    public double GradDelta { get; init; } = double.NaN;
    /// <summary>Levenberg–Marquardt's reduction ratio (NaN when it did not run) and the damping after it.</summary>
    public double Rho { get; init; } = double.NaN;
    public double Damping { get; init; }
    public double UpdateNorm { get; init; }
    public bool Clipped { get; init; }
    public bool RefreshedInverses { get; init; }
    /// <summary>Blocks whose batch statistics were not finite and were left out of the running factors.</summary>
    public int DroppedStatistics { get; init; }
    /// <summary>Kronecker blocks preconditioned in the per-example form this update.</summary>
    public int PerExampleBlocks { get; init; }
    /// <summary>Parameters whose preconditioned gradient was not finite and fell back to the gradient.</summary>
    public int NonFinitePreconditioned { get; init; }
    /// <summary>
    /// Cholesky inverses: damped factors (per group) that were not positive definite at this update's
    /// refresh, before the retries with more damping (counted on the rank that inverted them).
    /// </summary>
    public int NotPositiveDefinite { get; init; }
    /// <summary>
    /// Cholesky inverses: damped factors (per group) this update's refresh inverted in float32
    /// (<see cref="KfacInversePrecision"/>; the rest went float64), counted on the rank that inverted them.
    /// </summary>
    public int SinglePrecisionInverses { get; init; }
}

/// <summary>K-FAC's time per phase, accumulated over updates (seconds).</summary>
public sealed class KfacTimings
{
    private long _stats, _inverses, _precondition, _coefficients, _apply;

    public long Updates { get; private set; }

    /// <summary>Updates that preconditioned at least one block in the per-example form.</summary>
    public long PerExampleUpdates { get; private set; }
    public double Statistics => Seconds(_stats);
    public double Inverses => Seconds(_inverses);
    public double Preconditioning => Seconds(_precondition);
    /// <summary>ν, or α and μ (with the Jacobian-vector-product pass).</summary>
    public double Coefficients => Seconds(_coefficients);
    /// <summary>Applying the update (and the Levenberg–Marquardt forward when it runs).</summary>
    public double Apply => Seconds(_apply);
    public double Total => Statistics + Inverses + Preconditioning + Coefficients + Apply;

    internal void Add(long stats, long inverses, long precondition, long coefficients, long apply)
    {
        _stats += stats; _inverses += inverses; _precondition += precondition; _coefficients += coefficients; _apply += apply;
        Updates++;
    }

    internal void AddObservation(long stats) => _stats += stats;

    internal void AddPerExample() => PerExampleUpdates++;

    public void Reset() { _stats = _inverses = _precondition = _coefficients = _apply = 0; Updates = PerExampleUpdates = 0; }

    private static double Seconds(long ticks) => (double)ticks / Stopwatch.Frequency;

    public override string ToString() =>
        $"statistics {1e3 * Statistics / Math.Max(1, Updates):F3} ms, inverses {1e3 * Inverses / Math.Max(1, Updates):F3} ms, " +
        $"preconditioning {1e3 * Preconditioning / Math.Max(1, Updates):F3} ms, coefficients {1e3 * Coefficients / Math.Max(1, Updates):F3} ms, " +
        $"apply {1e3 * Apply / Math.Max(1, Updates):F3} ms per update" +
        (PerExampleUpdates > 0 ? $"; per-example preconditioning in {PerExampleUpdates} of {Updates} updates" : "");
}
