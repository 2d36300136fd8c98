namespace OnnxKfac.Toolkit.Optim;

/// <summary>
/// Stochastic gradient descent with momentum, dampening, Nesterov momentum and (coupled, L2)
/// weight decay: the update of torch.optim.SGD. Per parameter, with g its gradient:
/// <code>
/// d = g + wd·p
/// b = d                           on the parameter's first update
/// b = μ·b + (1 - dampening)·d     afterwards
/// d = d + μ·b  (Nesterov)  or  d = b
/// p = p - lr·d                    lr = group rate × schedule factor
/// </code>
/// Without momentum (μ = 0) no buffer is kept and d is applied directly.
/// </summary>
public sealed class Sgd : IOptimizer
{
    internal const string KindName = "sgd";
    private const string BufferKind = "momentum_buffer";

    private readonly ParameterBinding _binding;
    private readonly Slot[] _slots;

    /// <param name="parameters">The model's parameters; the non-trainable and frozen ones are left alone.</param>
    /// <param name="options">Hyperparameters (default: <see cref="SgdOptions"/>'s defaults).</param>
    public Sgd(IReadOnlyList<Parameter> parameters, SgdOptions? options = null)
    {
        Options = options ?? new SgdOptions();
        Options.Validate();
        _binding = new ParameterBinding(parameters, Options.Groups,
            new GroupSettings(Options.LearningRate, Options.WeightDecay, Options.Momentum, Frozen: false));
        _slots = [.. _binding.Trainable.Where(t => !t.Settings.Frozen).Select(t => new Slot(t.Parameter, t.Settings))];
    }

    /// <summary>The options the optimizer was built with.</summary>
    public SgdOptions Options { get; }

    /// <inheritdoc/>
    public void Step(StepContext context)
    {
        _binding.Check(context);
        double factor = Options.Schedule.Factor(context.UpdateCount);
        float gradScale = (float)(1 - Options.Dampening);
        foreach (var s in _slots)
        {
            Kernels.Sgd(s.Parameter.Value, s.Parameter.Grad, s.Buffer,
                (float)s.Settings.WeightDecay, (float)s.Settings.Momentum, gradScale,
                (float)-(s.Settings.LearningRate * factor), first: !s.HasBuffer, Options.Nesterov);
            s.HasBuffer = s.Buffer.Length > 0;
        }
    }

    /// <inheritdoc/>
    public OptimizerState SaveState()
    {
        var state = new OptimizerState(KindName);
        _binding.WriteShapes(state);
        foreach (var s in _slots)
            if (s.HasBuffer)
                state.Tensors[ParameterBinding.Key(BufferKind, s.Parameter.Name)] = (float[])s.Buffer.Clone();
        return state;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// A parameter without a saved buffer starts afresh (its next update initialises the buffer);
    /// a saved buffer for a parameter that is now frozen or without momentum is ignored.
    /// </remarks>
    public void LoadState(OptimizerState state)
    {
        _binding.Validate(state, KindName, [BufferKind], []);
        foreach (var s in _slots)
        {
            bool found = state.Tensors.TryGetValue(ParameterBinding.Key(BufferKind, s.Parameter.Name), out var saved);
            s.HasBuffer = found && s.Buffer.Length > 0;
            if (s.HasBuffer) saved.AsSpan().CopyTo(s.Buffer);
            else s.Buffer.AsSpan().Clear();
        }
    }

    private sealed class Slot(Parameter parameter, GroupSettings settings)
    {
        public Parameter Parameter { get; } = parameter;
        public GroupSettings Settings { get; } = settings;
        public float[] Buffer { get; } = settings.Momentum != 0 ? new float[parameter.Value.Length] : [];
        public bool HasBuffer { get; set; }
    }
}
