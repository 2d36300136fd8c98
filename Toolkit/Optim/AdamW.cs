namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// Adam with decoupled weight decay (Loshchilov &amp; Hutter): the update of torch.optim.AdamW.
/// Per parameter, with g its gradient and t its own update count (from 1):
/// <code>
/// p = p·(1 - lr·wd)
/// m = β1·m + (1 - β1)·g
/// v = β2·v + (1 - β2)·g²
/// v̂ = max(v̂, v) with AMSGrad, else v
/// p = p - (lr / (1 - β1^t)) · m / (sqrt(v̂) / sqrt(1 - β2^t) + eps)
/// </code>
/// lr is the group rate times the schedule factor; eps sits outside the square root.
/// </summary>
public sealed class AdamW : IOptimizer
{
    internal const string KindName = "adamw";
    private const string StepKind = "step";
    private const string MeanKind = "exp_avg";
    private const string SquareKind = "exp_avg_sq";
    private const string MaxKind = "max_exp_avg_sq";

    private readonly ParameterBinding _binding;
    private readonly Slot[] _slots;

    /// <param name="parameters">The model's parameters; the non-trainable and frozen ones are left alone.</param>
    /// <param name="options">Hyperparameters (default: <see cref="AdamWOptions"/>'s defaults).</param>
    public AdamW(IReadOnlyList<Parameter> parameters, AdamWOptions? options = null)
    {
        Options = options ?? new AdamWOptions();
        Options.Validate();
        _binding = new ParameterBinding(parameters, Options.Groups,
            new GroupSettings(Options.LearningRate, Options.WeightDecay, Options.Beta1, Frozen: false));
        _slots = [.. _binding.Trainable.Where(t => !t.Settings.Frozen).Select(t => new Slot(t.Parameter, t.Settings, Options.AmsGrad))];
    }

    /// <summary>The options the optimizer was built with.</summary>
    public AdamWOptions Options { get; }

    /// <inheritdoc/>
    public void Step(StepContext context)
    {
        _binding.Check(context);
        double factor = Options.Schedule.Factor(context.UpdateCount);
        double beta2 = Options.Beta2;
        foreach (var s in _slots)
        {
            long t = ++s.Step;
            double lr = s.Settings.LearningRate * factor;
            double beta1 = s.Settings.Momentum;
            double stepSize = lr / (1 - Math.Pow(beta1, t));
            double bias2Sqrt = Math.Sqrt(1 - Math.Pow(beta2, t));
            bool decoupled = Options.DecoupledWeightDecay;
            Kernels.AdamW(s.Parameter.Value, s.Parameter.Grad, s.Mean, s.Square, s.Max,
                decoupled ? (float)(1 - lr * s.Settings.WeightDecay) : 1f,
                (float)beta1, (float)(1 - beta1), (float)beta2, (float)(1 - beta2),
                (float)bias2Sqrt, (float)Options.Epsilon, (float)-stepSize,
                decoupled ? 0f : (float)s.Settings.WeightDecay);
        }
    }

    /// <inheritdoc/>
    public OptimizerState SaveState()
    {
        var state = new OptimizerState(KindName);
        _binding.WriteShapes(state);
        foreach (var s in _slots)
        {
            if (s.Step == 0) continue;
            string name = s.Parameter.Name;
            state.Longs[ParameterBinding.Key(StepKind, name)] = s.Step;
            state.Tensors[ParameterBinding.Key(MeanKind, name)] = (float[])s.Mean.Clone();
            state.Tensors[ParameterBinding.Key(SquareKind, name)] = (float[])s.Square.Clone();
            if (Options.AmsGrad) state.Tensors[ParameterBinding.Key(MaxKind, name)] = (float[])s.Max.Clone();
        }
        return state;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// A parameter without saved moments starts afresh (t = 0). With AMSGrad on, a parameter
    /// whose moments were saved without AMSGrad is an error; saved maxima are ignored when
    /// AMSGrad is off.
    /// </remarks>
    public void LoadState(OptimizerState state)
    {
        _binding.Validate(state, KindName, [MeanKind, SquareKind, MaxKind], [StepKind]);
        foreach (var s in _slots)
        {
            string name = s.Parameter.Name;
            if (!state.Longs.TryGetValue(ParameterBinding.Key(StepKind, name), out long step)) continue;
            if (step < 1)
                throw ParameterBinding.Mismatch($"counter '{ParameterBinding.Key(StepKind, name)}' is {step}");
            foreach (var kind in Options.AmsGrad ? new[] { MeanKind, SquareKind, MaxKind } : [MeanKind, SquareKind])
                if (!state.Tensors.ContainsKey(ParameterBinding.Key(kind, name)))
                    throw ParameterBinding.Mismatch(
                        $"parameter '{name}' has a step count but no '{kind}'{(kind == MaxKind ? " (saved without AMSGrad?)" : "")}");
        }
        foreach (var key in state.Tensors.Keys)
        {
            string name = key[(key.IndexOf(':') + 1)..];
            if (!state.Longs.ContainsKey(ParameterBinding.Key(StepKind, name)))
                throw ParameterBinding.Mismatch($"tensor '{key}' comes without a step count '{ParameterBinding.Key(StepKind, name)}'");
        }
        foreach (var s in _slots)
        {
            string name = s.Parameter.Name;
            if (state.Longs.TryGetValue(ParameterBinding.Key(StepKind, name), out long step))
            {
                s.Step = step;
                state.Tensors[ParameterBinding.Key(MeanKind, name)].AsSpan().CopyTo(s.Mean);
                state.Tensors[ParameterBinding.Key(SquareKind, name)].AsSpan().CopyTo(s.Square);
                if (Options.AmsGrad) state.Tensors[ParameterBinding.Key(MaxKind, name)].AsSpan().CopyTo(s.Max);
            }
            else
            {
                s.Step = 0;
                Array.Clear(s.Mean);
                Array.Clear(s.Square);
                Array.Clear(s.Max);
            }
        }
    }

    private sealed class Slot(Parameter parameter, GroupSettings settings, bool amsGrad)
    {
        public Parameter Parameter { get; } = parameter;
        public GroupSettings Settings { get; } = settings;
        public float[] Mean { get; } = new float[parameter.Value.Length];
        public float[] Square { get; } = new float[parameter.Value.Length];
        public float[] Max { get; } = amsGrad ? new float[parameter.Value.Length] : [];
        public long Step { get; set; }
    }
}
