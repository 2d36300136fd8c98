using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Training;

/// <summary>What goes into a training graph besides loss and gradients.</summary>
public sealed record TrainingGraphOptions
{
    public TrainingGraphOptions(LossOptions loss) => Loss = loss;

    public LossOptions Loss { get; init; }

    /// <summary>Glob patterns of initializers to train (empty: the default set, see <see cref="ParameterSelection"/>).</summary>
    public IReadOnlyList<string> Trainable { get; init; } = [];

    /// <summary>Glob patterns of initializers to keep fixed.</summary>
    public IReadOnlyList<string> Frozen { get; init; } = [];

    /// <summary>Glob patterns of exporter-merged (or broken) ties to split; every other tie trains tied (see <see cref="Ties"/>).</summary>
    public IReadOnlyList<string> Untie { get; init; } = [];

    /// <summary>Expose each layer's input a_l and pre-activation gradient g_l (default on).</summary>
    public bool LayerTaps { get; init; } = true;

    /// <summary>
    /// With <see cref="LayerTaps"/> off, still expose a_l and g_l (no sampled or patch taps) for the
    /// layers this selects: K-FAC's per-example preconditioning reads them for the layers where it pays.
    /// </summary>
    public Func<LayerInfo, bool>? TapLayer { get; init; }

    /// <summary>Add the sampled-target backward pass for the true Fisher (a noise input, g_l outputs).</summary>
    public bool SampledFisher { get; init; }

    /// <summary>Expose conv input patches (im2col) for conv layers.</summary>
    public bool ConvPatches { get; init; }

    /// <summary>
    /// Emit each layer's Kronecker-factor statistics of the batch (A and G, see
    /// <c>Toolkit/Kfac/README.md</c>) as outputs: from the sampled-target pass when
    /// <see cref="SampledFisher"/> is on (true Fisher), else from the real loss's gradients
    /// (empirical Fisher).
    /// </summary>
    public bool FactorStatistics { get; init; }

    /// <summary>The fraction of each batch (its first ⌈f·N⌉ examples) the factor statistics see, in (0, 1]. Default 1.</summary>
    public double StatisticsFraction
    {
        get;
        init => field = value is > 0 and <= 1 ? value
            : throw new OnnxKfacException($"the statistics fraction must lie in (0, 1], got {value}");
    } = 1;

    /// <summary>
    /// The fraction of each batch (its first ⌈f·N⌉ examples) the Jacobian-vector-product pass sees,
    /// in (0, 1]. Default 1. The JVP graph (<see cref="JvpGraphBuilder"/>) takes any batch size; the
    /// runtime feeds it views of the batch's first rows (where the model takes any batch size).
    /// </summary>
    public double JvpFraction
    {
        get;
        init => field = value is > 0 and <= 1 ? value
            : throw new OnnxKfacException($"the Jacobian-vector-product fraction must lie in (0, 1], got {value}");
    } = 1;

    /// <summary>
    /// Keep the trainable initializers in the graph as default values of their inputs, so
    /// the file is self-contained (default). The runtime turns this off and feeds weights
    /// from its own buffers, which avoids a second copy inside ONNX Runtime.
    /// </summary>
    public bool KeepInitialValues { get; init; } = true;

    /// <summary>Only the loss and the model outputs: no backward pass (validation, evaluation).</summary>
    public bool LossOnly { get; init; }

    /// <summary>
    /// Also differentiate the sampled-target loss (see <see cref="SampledFisher"/>) w.r.t. the
    /// parameters that belong to no layer, or to a layer with a tied parameter (K-FAC's diagonal blocks estimate their Fisher
    /// diagonal from it), exposed as outputs of role <see cref="TensorRole.SampledGradient"/>.
    /// </summary>
    public bool SampledGradientsOutsideLayers { get; init; }

    /// <summary>Glob patterns of further parameters whose sampled-target gradient is exposed (layer parameters given a diagonal block).</summary>
    public IReadOnlyList<string> SampledGradients { get; init; } = [];

    public GradientRegistry? Registry { get; init; }

    /// <summary>The table of layer patterns K-FAC factors (null: <see cref="LayerPatterns.Default"/>).</summary>
    public LayerPatterns? LayerPatterns { get; init; }
}

/// <summary>A training graph and its manifest.</summary>
public sealed record TrainingGraph(ModelProto Model, TrainingManifest Manifest);

/// <summary>
/// Rewrites an inference model into one ONNX model that computes, in a single Run, the
/// loss, the model outputs, the gradient of every trainable parameter and the K-FAC
/// layer taps — all with standard ai.onnx ops.
/// </summary>
public static class TrainingGraphBuilder
{
    public const string LossName = "loss";
    public const string TargetName = "target";
    public const string NoiseName = "fisher_noise";

    public static TrainingGraph Build(ModelProto source, TrainingGraphOptions options)
    {
        options.Loss.Validate();
        var registry = options.Registry ?? GradientRegistry.Default;
        var model = Ties.Apply(source, options.Untie) is var tied && !ReferenceEquals(tied, source) ? tied : source.Clone();
        int sourceOpset = OpsetUpgrade.Apply(model);
        var g = new GraphBuildContext(model, sourceOpset);
        var graph = model.Graph;
        string output = ChooseOutput(graph, options.Loss.Output);

        var declared = TrainingInputs.Declare(g, options, output, registry);
        var selection = declared.Selection;
        var parameters = selection.Parameters;
        var paramNames = new HashSet<string>(parameters.Select(p => p.Name), StringComparer.Ordinal);
        var manifestInputs = declared.Inputs;
        string target = declared.Target;
        var outInfo = g.Infos.GetValueOrDefault(output);

        var (layers, _) = LayerMatcher.Match(g.Index, g.Infos, paramNames, options.LayerPatterns);
        if (!(options.LayerTaps || options.FactorStatistics || options.TapLayer is not null) || options.LossOnly) layers = [];

        string lossName = g.State.UniqueName(LossName);
        var loss = options.Loss.Function.Append(g, options.Loss, output, target, lossName);

        // Backward: parameter gradients and, in the same pass, the pre-activation gradients.
        var wrt = parameters.Select(p => p.Name).Concat(layers.Select(l => l.PreActivation)).Distinct(StringComparer.Ordinal).ToArray();
        var grads = options.LossOnly
            ? new Dictionary<string, string>()
            : new BackwardBuilder(g, registry).Build(new Dictionary<string, string> { [output] = loss.OutputGradient }, wrt);

        ManifestFisher? fisher = null;
        IReadOnlyDictionary<string, string>? sampled = null;
        ExampleSubset? subset = null;
        var sampledParams = SampledParameters(parameters.Select(p => p.Name), layers, options, selection.Names);
        if (options.SampledFisher && (layers.Count > 0 || sampledParams.Count > 0))
        {
            string noise = g.State.UniqueName(NoiseName);
            int type = outInfo?.ElemType ?? (int)DataType.Float;
            graph.Input.Add(ValueInfos.Tensor(noise, type, outInfo?.PlainShape));
            g.SetInfo(noise, new TensorInfo(type, outInfo?.Shape));
            manifestInputs.Add(new ManifestTensor(noise, TensorRole.Noise, TypeName(type), outInfo?.PlainShape) { Of = output });
            var pre = layers.Select(l => l.PreActivation).Concat(sampledParams).Distinct(StringComparer.Ordinal).ToArray();
            // With a statistics fraction, only the first ⌈f·N⌉ examples feed the statistics: the
            // sampled pass then runs over a forward clone of those examples alone (its rows keep
            // the full batch's 1/N scale, so they equal the full pass's first rows), whose
            // example-major tensors become slices of the full pass's once it is built. Parameter
            // gradients of the sampled loss (diagonal blocks) need the whole batch.
            subset = options.FactorStatistics && sampledParams.Count == 0
                ? ExampleSubset.TryBuild(g, [.. manifestInputs.Where(i => i.Role == TensorRole.Data).Select(i => i.Name)], output,
                    options.StatisticsFraction, EmitterState.FloatType(outInfo?.ElemType ?? 0))
                : null;
            if (subset is null)
            {
                string dSampled = options.Loss.Function.AppendSampled(g, output, noise);
                sampled = new BackwardBuilder(g, registry).Build(new Dictionary<string, string> { [output] = dSampled }, pre, "sampled/");
            }
            else
            {
                var e = g.Emitter("sampled/subset");
                string subsetNoise = e.Op("Slice", [noise, e.Int64s(0), subset.Count, e.Int64s(0)]);
                g.SetInfo(subsetNoise, g.Infos.GetValueOrDefault(subset.Map(output)) ?? new TensorInfo(type, null));
                string dSampled = options.Loss.Function.AppendSampled(g, subset.Map(output), subsetNoise, subset.Examples);
                var grads2 = new BackwardBuilder(g, registry).Build(new Dictionary<string, string> { [subset.Map(output)] = dSampled },
                    pre.Select(subset.Map).ToArray(), "sampled/");
                sampled = pre.ToDictionary(p => p, p => grads2[subset.Map(p)], StringComparer.Ordinal);
                subset.SliceRows(g);
            }
            fisher = new ManifestFisher(options.Loss.Function.SampledDistribution, noise, options.Loss.Function.NoiseDistribution, "1/N");
        }

        // Outputs: loss, model outputs, gradients, taps.
        var outputs = new List<ManifestTensor>();
        var modelOutputs = graph.Output.ToArray();
        graph.Output.Clear();
        AddOutput(graph, outputs, g, loss.Loss, TensorRole.Loss, new TensorInfo(outInfo?.ElemType ?? 1, []));
        foreach (var o in modelOutputs)
        {
            graph.Output.Add(o);
            var info = ShapeInference.FromValueInfo(o) ?? g.Infos.GetValueOrDefault(o.Name);
            outputs.Add(new ManifestTensor(o.Name, TensorRole.ModelOutput, TypeName(info?.ElemType ?? 0), info?.PlainShape));
        }
        var manifestParams = new List<ManifestParameter>();
        var ties = selection.Ties.ToDictionary(t => t.Name, t => Math.Max(t.Readers.Count, 1), StringComparer.Ordinal);
        foreach (var p in parameters)
        {
            // A loss-only graph lists its parameters with no gradient output.
            string gname = options.LossOnly ? "" : grads[p.Name];
            if (!options.LossOnly) AddOutput(graph, outputs, g, gname, TensorRole.Gradient, new TensorInfo(p.DataType, p.Dims.ToArray()), p.Name);
            manifestParams.Add(new ManifestParameter(p.Name, TypeName(p.DataType), p.Dims.ToArray(), gname) { Uses = ties.GetValueOrDefault(p.Name, 1), Names = Aliases(selection, p.Name) });
        }
        if (sampled is not null)
            foreach (var name in sampledParams)
            {
                var p = parameters.First(q => q.Name == name);
                string sg = g.Emitter("sampled").OpNamed(g.State.UniqueName(name + "/sampled_grad"), "Identity", [sampled[name]]);
                AddOutput(graph, outputs, g, sg, TensorRole.SampledGradient, new TensorInfo(p.DataType, p.Dims.ToArray()), name);
            }
        var manifestLayers = new List<LayerInfo>();
        foreach (var l in layers)
        {
            var e = g.Emitter(l.Name + "/kfac");
            string? a = null, gl = null, gs = null, patches = null;
            if (options.LayerTaps || options.TapLayer?.Invoke(l) == true)
            {
                a = e.OpNamed(g.State.UniqueName(l.Name + "/kfac/a"), l.InputTransposed ? "Transpose" : "Identity", [l.Input]);
                var aInfo = g.Infos.GetValueOrDefault(l.Input);
                if (l.InputTransposed && aInfo?.Shape is { Length: 2 } s) aInfo = aInfo with { Shape = [s[1], s[0]] };
                AddOutput(graph, outputs, g, a, TensorRole.LayerInput, aInfo, l.Name);
                gl = e.OpNamed(g.State.UniqueName(l.Name + "/kfac/g"), "Identity", [grads[l.PreActivation]]);
                AddOutput(graph, outputs, g, gl, TensorRole.PreactivationGradient, g.Infos.GetValueOrDefault(l.PreActivation), l.Name);
                if (sampled is not null && options.LayerTaps)
                {
                    gs = e.OpNamed(g.State.UniqueName(l.Name + "/kfac/g_sampled"), "Identity", [sampled[l.PreActivation]]);
                    AddOutput(graph, outputs, g, gs, TensorRole.SampledPreactivationGradient, g.Infos.GetValueOrDefault(l.PreActivation), l.Name);
                }
                if (options.ConvPatches && options.LayerTaps && l.Kind == LayerKind.Conv)
                {
                    patches = Patches.Emit(g, l, g.State.UniqueName(l.Name + "/kfac/patches"));
                    AddOutput(graph, outputs, g, patches, TensorRole.Patches, g.Infos.GetValueOrDefault(patches), l.Name);
                }
            }
            FactorOutputs? factors = null;
            if (options.FactorStatistics)
            {
                factors = subset is null
                    ? FactorStatistics.Emit(g, l, (sampled ?? grads)[l.PreActivation], output, options.StatisticsFraction,
                        loss.Denominator ?? "", empirical: sampled is null)
                    : FactorStatistics.Emit(g, l with { Input = subset.Map(l.Input), PreActivation = subset.Map(l.PreActivation) },
                        sampled![l.PreActivation], output, 1, loss.Denominator ?? "", empirical: false, subset.Ratio);
                AddOutput(graph, outputs, g, factors.A, TensorRole.FactorA, g.Infos.GetValueOrDefault(factors.A), l.Name);
                AddOutput(graph, outputs, g, factors.G, TensorRole.FactorG, g.Infos.GetValueOrDefault(factors.G), l.Name);
            }
            manifestLayers.Add(l with
            {
                Outputs = new LayerOutputs
                {
                    Input = a, PreactivationGradient = gl, SampledPreactivationGradient = gs, Patches = patches,
                    FactorA = factors?.A, FactorG = factors?.G,
                },
            });
        }
        g.Commit();
        Pruning.RemoveDeadNodes(graph);
        Pruning.FoldOutputIdentities(graph);
        model.ProducerName = "onnx-kfac";
        var o2 = options.Loss;
        var manifest = new TrainingManifest
        {
            SourceOpset = sourceOpset,
            Opset = g.Index.Opset,
            Loss = new ManifestLoss(LossOptions.Name(o2.Kind), o2.Reduction.ToString().ToLowerInvariant(), output, target, loss.Loss)
            {
                IgnoreIndex = o2.Function.HasClassOptions ? o2.IgnoreIndex : null,
                LabelSmoothing = o2.Function.HasClassOptions ? o2.LabelSmoothing : null,
                ClassWeights = o2.ClassWeights?.ToArray(),
            },
            Inputs = manifestInputs,
            Outputs = outputs,
            Parameters = manifestParams,
            Layers = manifestLayers,
            Fisher = fisher,
            Excluded = selection.Excluded,
            Warnings = selection.Warnings,
        };
        return new TrainingGraph(model, manifest);
    }

    /// <summary>The module-path names a glob may also select a parameter by (null: none besides its own).</summary>
    internal static IReadOnlyList<string>? Aliases(ParameterSelection.Result selection, string name) =>
        selection.Names.TryGetValue(name, out var n) && n.Count > 1 ? n.Skip(1).ToArray() : null;

    /// <summary>The parameters whose sampled-target gradient the graph exposes (see <see cref="TrainingGraphOptions.SampledGradients"/>).</summary>
    private static List<string> SampledParameters(IEnumerable<string> parameters, IReadOnlyList<LayerInfo> layers, TrainingGraphOptions options,
        IReadOnlyDictionary<string, IReadOnlyList<string>> names)
    {
        if (!options.SampledFisher || options.LossOnly) return [];
        // A layer with a tied member (one used by several layers) gets no Kronecker block: its
        // parameters are outside layers for K-FAC's fallback (see Toolkit/Kfac/BlockPlan).
        static string[] Members(LayerInfo l) => l.Bias is null ? [l.Weight] : [l.Weight, l.Bias];
        var uses = layers.SelectMany(Members).GroupBy(p => p, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        var inLayers = new HashSet<string>(layers.Select(Members).Where(m => m.All(p => uses[p] == 1)).SelectMany(m => m), StringComparer.Ordinal);
        var globs = options.SampledGradients.Select(p => new Glob(p)).ToArray();
        return parameters.Where(p => (options.SampledGradientsOutsideLayers && !inLayers.Contains(p)) || globs.Any(gl => names.GetValueOrDefault(p, [p]).Any(gl.IsMatch))).ToList();
    }

    /// <summary>The output the loss reads: the named one, or the model's only output.</summary>
    public static string ChooseOutput(GraphProto graph, string? requested)
    {
        if (requested is not null)
        {
            if (graph.Output.Any(o => o.Name == requested)) return requested;
            throw new OnnxKfacException($"the model has no output '{requested}'; its outputs are: {string.Join(", ", graph.Output.Select(o => o.Name))}");
        }
        if (graph.Output.Count == 1) return graph.Output[0].Name;
        throw new OnnxKfacException($"the model has {graph.Output.Count} outputs ({string.Join(", ", graph.Output.Select(o => o.Name))}); choose the one the loss reads with --output");
    }

    private static void AddOutput(GraphProto graph, List<ManifestTensor> list, GraphBuildContext g, string name, TensorRole role, TensorInfo? info, string? of = null)
    {
        graph.Output.Add(ValueInfos.Tensor(name, info?.ElemType ?? (int)DataType.Float, info?.PlainShape));
        list.Add(new ManifestTensor(name, role, TypeName(info?.ElemType ?? 0), info?.PlainShape) { Of = of });
    }

    private static string TypeName(int elemType) => TrainingInputs.TypeName(elemType);
}
