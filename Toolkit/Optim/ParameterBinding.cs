using OnnxKfac.Graph.Model;

namespace OnnxKfac.Toolkit.Optim;

/// <summary>A trainable parameter's resolved hyperparameters (its group's, or the defaults).</summary>
internal readonly record struct GroupSettings(double LearningRate, double WeightDecay, double Momentum, bool Frozen);

/// <summary>
/// The parameter list an optimizer was built over, resolved against its parameter groups
/// once at construction (glob matching allocates, so it never runs per step), plus the
/// checks shared by every optimizer: the step's parameters are the bound ones, and a saved
/// state belongs to this kind of optimizer and to a model with the same parameters.
/// </summary>
internal sealed class ParameterBinding
{
    private readonly IReadOnlyList<Parameter> _list;
    private readonly Parameter[] _all;

    public ParameterBinding(IReadOnlyList<Parameter> parameters, IReadOnlyList<ParameterGroup> groups, GroupSettings defaults)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        _list = parameters;
        _all = new Parameter[parameters.Count];
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < _all.Length; i++)
        {
            var p = parameters[i] ?? throw new ArgumentException($"Parameter {i} is null.", nameof(parameters));
            if (!names.Add(p.Name))
                throw new ArgumentException($"Parameter '{p.Name}' appears twice.", nameof(parameters));
            _all[i] = p;
        }

        var globs = groups.Select(g => new Glob(g.Pattern)).ToArray();
        var used = new bool[globs.Length];
        var trainable = new List<(Parameter, GroupSettings)>();
        foreach (var p in _all)
        {
            if (!p.Trainable) continue;
            var settings = defaults;
            for (int k = 0; k < globs.Length; k++)
            {
                if (!p.IsMatch(globs[k])) continue;
                var g = groups[k];
                used[k] = true;
                settings = new GroupSettings(
                    g.LearningRate ?? defaults.LearningRate,
                    g.WeightDecay ?? defaults.WeightDecay,
                    g.Momentum ?? defaults.Momentum,
                    g.Frozen);
                break;
            }
            trainable.Add((p, settings));
        }
        for (int k = 0; k < globs.Length; k++)
            if (!used[k])
                throw new ArgumentException(
                    $"Parameter group '{groups[k].Pattern}' matches no trainable parameter (or only ones an earlier group already took).",
                    "Groups");
        Trainable = [.. trainable];
    }

    /// <summary>Every trainable parameter with its settings, frozen ones included, in list order.</summary>
    public (Parameter Parameter, GroupSettings Settings)[] Trainable { get; }

    /// <summary>Throws unless <paramref name="context"/> carries the bound parameter list. Allocates nothing.</summary>
    public void Check(StepContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var list = context.Parameters;
        if (ReferenceEquals(list, _list)) return;
        bool same = list.Count == _all.Length;
        for (int i = 0; same && i < _all.Length; i++) same = ReferenceEquals(list[i], _all[i]);
        if (!same)
            throw new ArgumentException(
                "StepContext.Parameters is not the parameter list this optimizer was built over.", nameof(context));
    }

    /// <summary>Records the trainable parameters' names and shapes in <paramref name="state"/>.</summary>
    public void WriteShapes(OptimizerState state)
    {
        foreach (var (p, _) in Trainable) state.ParameterShapes[p.Name] = (long[])p.Shape.Clone();
    }

    /// <summary>
    /// Validates <paramref name="state"/> against this model: same optimizer kind, the same
    /// trainable parameters with the same shapes, and only the per-parameter entries named by
    /// <paramref name="tensorKinds"/> / <paramref name="longKinds"/> (<c>kind:parameter</c>),
    /// each tensor as long as its parameter. Throws <see cref="ArgumentException"/> naming the mismatch.
    /// </summary>
    public void Validate(OptimizerState state, string kind, IReadOnlyCollection<string> tensorKinds, IReadOnlyCollection<string> longKinds)
    {
        var byName = ValidateShapes(state, kind);
        foreach (var (key, data) in state.Tensors)
        {
            var p = Owner(key, tensorKinds, byName, "tensor");
            if (data is null || data.Length != p.Value.Length)
                throw Mismatch($"tensor '{key}' has {data?.Length ?? 0} elements, parameter '{p.Name}' {p.Value.Length}");
        }
        foreach (var key in state.Longs.Keys) Owner(key, longKinds, byName, "counter");
        if (state.DoubleTensors.Count > 0)
            throw Mismatch($"it has an unexpected tensor '{state.DoubleTensors.Keys.First()}'");
        if (state.Doubles.Count > 0)
            throw Mismatch($"it has an unexpected scalar '{state.Doubles.Keys.First()}'");
    }

    /// <summary>
    /// Checks that <paramref name="state"/> was written by <paramref name="kind"/> for the same
    /// trainable parameters with the same shapes; returns them by name.
    /// </summary>
    public Dictionary<string, Parameter> ValidateShapes(OptimizerState state, string kind)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Kind != kind)
            throw Mismatch($"it was written by '{state.Kind}', not '{kind}'");

        var byName = Trainable.ToDictionary(t => t.Parameter.Name, t => t.Parameter, StringComparer.Ordinal);
        foreach (var (name, shape) in state.ParameterShapes)
        {
            if (!byName.TryGetValue(name, out var p))
                throw Mismatch($"it has parameter '{name}', which this model has not (is it another model's?)");
            if (!shape.AsSpan().SequenceEqual(p.Shape))
                throw Mismatch($"parameter '{name}' has shape {Parameter.FormatShape(shape)} there but {Parameter.FormatShape(p.Shape)} here");
        }
        foreach (var name in byName.Keys)
            if (!state.ParameterShapes.ContainsKey(name))
                throw Mismatch($"it lacks parameter '{name}' (is it another model's?)");
        return byName;
    }

    private static Parameter Owner(string key, IReadOnlyCollection<string> kinds, Dictionary<string, Parameter> byName, string what)
    {
        int colon = key.IndexOf(':');
        if (colon <= 0 || !kinds.Contains(key[..colon]))
            throw Mismatch($"it has an unexpected {what} '{key}'");
        return byName.TryGetValue(key[(colon + 1)..], out var p) ? p
            : throw Mismatch($"{what} '{key}' names no parameter of this model");
    }

    public static string Key(string kind, string parameter) => kind + ":" + parameter;

    public static ArgumentException Mismatch(string why) =>
        new($"Cannot load optimizer state: {why}.", "state");
}
