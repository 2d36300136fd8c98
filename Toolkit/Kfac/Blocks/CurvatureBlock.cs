using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Kfac.Blocks;

/// <summary>One trainable parameter as K-FAC holds it: the gradient it preconditions and what it keeps.</summary>
internal sealed class Slot(Parameter parameter, GroupSettings settings, bool momentum)
{
    public Parameter Parameter { get; } = parameter;
    public GroupSettings Settings { get; } = settings;

    /// <summary>∇ + η θ, the gradient K-FAC preconditions (pinned: ONNX Runtime reads it).</summary>
    public float[] Work { get; } = GC.AllocateArray<float>(parameter.Value.Length, pinned: true);

    /// <summary>The preconditioned gradient V (pinned: ONNX Runtime writes it).</summary>
    public float[] V { get; } = GC.AllocateArray<float>(parameter.Value.Length, pinned: true);

    /// <summary>KL-clip: the momentum buffer b. Quadratic rule: the previous update δ₀.</summary>
    public float[] Memory { get; } = momentum ? new float[parameter.Value.Length] : [];

    public string Name => Parameter.Name;
}

/// <summary>Named pinned buffers a K-FAC program binds.</summary>
internal sealed class ProgramBindings
{
    public List<(string Name, float[] Data, long[] Shape)> Inputs { get; } = [];
    public List<(string Name, float[] Data, long[] Shape)> Outputs { get; } = [];
}

/// <summary>
/// One block of K-FAC's block-diagonal Fisher: the parameters it covers, its statistics, its
/// (damped) inverse and how it preconditions their gradients. Dense math that is more than
/// element-wise goes into the programs the optimizer builds from every block's
/// <see cref="DampedFactors"/> (Cholesky through OpenBLAS, or <see cref="EmitInverse"/>'s ONNX
/// Runtime program) and <see cref="EmitPrecondition"/>.
/// </summary>
internal abstract class CurvatureBlock(string name, string kind, string reason, Slot[] slots)
{
    public string Name { get; } = name;
    public string Kind { get; } = kind;
    public string Reason { get; } = reason;
    public Slot[] Slots { get; } = slots;

    /// <summary>The π of factored Tikhonov damping at the last inverse refresh (1 where it does not apply).</summary>
    public virtual double Pi => 1;

    /// <summary>Adds one (micro-)batch's statistics from the training graph's outputs. False: a non-finite statistic was dropped.</summary>
    /// <param name="lastRun">
    /// The update is this run alone (one micro-batch, one rank) and the pass keeps its outputs until
    /// <see cref="Fold"/>: a block may then only check them here and fold them straight from the pass.
    /// </param>
    public virtual bool Observe(ITrainingPass pass, int batchSize, bool lastRun) => true;

    /// <summary>
    /// The float64 sums of this block's statistics over the update's (micro-)batches, which a
    /// data-parallel run adds up over the ranks (in one bucket with every other block's) before
    /// <see cref="Fold"/>; empty for blocks without statistics.
    /// </summary>
    public virtual IReadOnlyList<double[]> StatisticSums => [];

    /// <summary>How many batches <see cref="StatisticSums"/> hold (summed over the ranks with them).</summary>
    public virtual int StatisticBatches { get => 0; set { } }

    /// <summary>Forgets the observed batches (sums and count).</summary>
    public virtual void Discard()
    {
        foreach (var sum in StatisticSums) Array.Clear(sum);
        StatisticBatches = 0;
    }

    /// <summary>
    /// Running estimates that are a linear running average of the statistics, so ranks that fold
    /// their own statistics may average them later (data-parallel K-FAC's deferred reduction);
    /// empty for a block whose statistics must meet before they fold.
    /// </summary>
    public virtual IReadOnlyList<double[]> RunningFactors => [];

    /// <summary>
    /// Folds the observed batches into the running estimates, ε = min(1 − 1/k, <paramref name="decay"/>).
    /// <paramref name="countEmpty"/>: an update with no batch left (its statistics were dropped)
    /// still advances k and keeps the estimates, so ranks that fold apart keep one ε.
    /// </summary>
    public virtual void Fold(double decay, bool countEmpty = false) { }

    /// <summary>Computes π and the damping of every <see cref="DampedFactors"/> for γ = √(λ + η).</summary>
    public virtual void PrepareInverse(double gamma, double boost) { }

    /// <summary>The factors whose damped inverses this block needs (Kronecker: A and G; embedding: G).</summary>
    public virtual IReadOnlyList<DampedFactor> DampedFactors => [];

    /// <summary>This block's part of the ONNX Runtime inverse program (<see cref="KfacInverseMethod.OnnxRuntime"/>).</summary>
    public void EmitInverse(ProgramBuilder pb, ProgramBindings b)
    {
        foreach (var f in DampedFactors) f.Emit(pb, b);
    }

    /// <summary>The buffers an inverse refresh writes (what data-parallel K-FAC broadcasts from the rank that computed them).</summary>
    public IEnumerable<float[]> InverseBuffers => DampedFactors.Select(f => f.Inverse);

    /// <summary>The cost of this block's inverses (Σ d³), to spread them over ranks.</summary>
    public double InverseCost => DampedFactors.Sum(f => f.Cost);

    /// <summary>After the inverse program: whether every inverse is finite.</summary>
    public virtual bool InverseIsFinite() => true;

    public virtual void EmitPrecondition(ProgramBuilder pb, ProgramBindings b) { }

    /// <summary>Completes V after the preconditioning program (element-wise blocks, or a fallback to ∇ when the inverse failed).</summary>
    public abstract void Precondition(double lambda, double eta);

    public virtual void Save(OptimizerState state) { }

    public virtual void Load(OptimizerState state) { }

    /// <summary>The state entries this block writes (for validation).</summary>
    public virtual IEnumerable<string> StateKeys => [];

    protected static double Epsilon(long k, double decay) => Math.Min(1 - 1.0 / k, decay);

    protected static void Fold(double[] ema, double[] sum, int batches, double epsilon) =>
        FactorMath.Fold(ema, sum, epsilon, (1 - epsilon) / batches);


    protected static bool AllFinite(ReadOnlySpan<float> x) => FactorMath.AllFinite(x);

    protected static double[] Load(OptimizerState state, string key, int length)
    {
        if (!state.DoubleTensors.TryGetValue(key, out var data))
            throw new ArgumentException($"Cannot load optimizer state: it lacks '{key}' (written with other curvature blocks?).", "state");
        if (data.Length != length)
            throw new ArgumentException($"Cannot load optimizer state: '{key}' has {data.Length} values, this model needs {length}.", "state");
        return data;
    }
}

/// <summary>No curvature: V = ∇ (momentum SGD on the parameter).</summary>
internal sealed class IdentityBlock(Slot slot, string reason) : CurvatureBlock(slot.Name, "identity", reason, [slot])
{
    public override void Precondition(double lambda, double eta) => Slots[0].Work.AsSpan().CopyTo(Slots[0].V);
}
