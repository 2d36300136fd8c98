using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Training;

/// <summary>
/// Builds the JVP graph of a model: on one minibatch and for K directions v_k in parameter
/// space, the exact Jacobian-vector products J v_k of the loss's output tensor z and the
/// matrix Q_ij = v_iᵀ F v_j = (J v_i)ᵀ H (J v_j), F the exact Fisher (= Gauss-Newton) of the
/// loss and H its Hessian w.r.t. z in closed form (<see cref="LossFunction.FisherMatrix"/>).
/// This is what K-FAC's paper update rule needs for its quadratic model.
/// <para>
/// Inputs: the data inputs and the loss target as in the training graph (same names), the
/// parameters (the set <see cref="TrainingGraphBuilder"/> selects for the same options, same
/// names) and, per direction k and parameter p, a tangent <c>{p}/tangent{k}</c> shaped like
/// p (role <see cref="TensorRole.Tangent"/>, <c>Of</c> = p, <c>Direction</c> = k).
/// Outputs: the loss, the model outputs, J v_k as <c>{z}/jvp{k}</c> (role
/// <see cref="TensorRole.Jvp"/>, <c>Direction</c> = k) and <c>fisher_quadratic</c>
/// [K, K] (role <see cref="TensorRole.FisherQuadratic"/>).
/// </para>
/// <para>
/// Double-backward construction, reusing the reverse rules: the reverse pass from z seeded
/// with a cotangent u (an internal zeros tensor shaped like z) gives Jᵀu for every parameter,
/// linear in u. With s_k = Σ_p ⟨Jᵀu_p, v_k,p⟩, ∂s_k/∂u = J v_k: a second reverse pass over
/// the committed graph, seeded at each Jᵀu_p with v_k,p (which is what the reverse pass of
/// the sum s_k would feed there), differentiates the first pass w.r.t. u, where forward
/// activations are constants. Nothing reads u itself afterwards, and pruning removes
/// the first pass except what the second reads (forward-only products such as transposed
/// weights, and run-time shapes of dynamic tensors).
/// </para>
/// </summary>
public static class JvpGraphBuilder
{
    public const string QuadraticName = "fisher_quadratic";

    /// <summary>The tangent input of parameter <paramref name="parameter"/> for direction <paramref name="k"/>.</summary>
    public static string TangentName(string parameter, int k) => $"{parameter}/tangent{k}";

    public static TrainingGraph Build(ModelProto source, TrainingGraphOptions options, int directions = 2)
    {
        if (directions < 1) throw new OnnxKfacException($"the JVP graph needs at least one direction, got {directions}");
        options.Loss.Validate();
        var loss = options.Loss.Function;
        var registry = options.Registry ?? GradientRegistry.Default;
        var model = Ties.Apply(source, options.Untie) is var tied && !ReferenceEquals(tied, source) ? tied : source.Clone();
        int sourceOpset = OpsetUpgrade.Apply(model);
        var g = new GraphBuildContext(model, sourceOpset);
        var graph = model.Graph;
        string output = TrainingGraphBuilder.ChooseOutput(graph, options.Loss.Output);

        // Parameters, data and target inputs exactly as the training graph has them.
        var declared = TrainingInputs.Declare(g, options, output, registry);
        var selection = declared.Selection;
        var parameters = selection.Parameters;
        var inputs = declared.Inputs;
        string target = declared.Target;
        var outInfo = g.Infos.GetValueOrDefault(output);
        string lossName = g.State.UniqueName(TrainingGraphBuilder.LossName);
        var lossTensors = loss.Append(g, options.Loss, output, target, lossName);

        var tangents = new string[directions][];
        for (int k = 0; k < directions; k++)
        {
            tangents[k] = new string[parameters.Count];
            for (int i = 0; i < parameters.Count; i++)
            {
                var p = parameters[i];
                string name = g.State.UniqueName(TangentName(p.Name, k));
                graph.Input.Add(ValueInfos.Tensor(name, p.DataType, p.Dims.ToArray()));
                g.SetInfo(name, new TensorInfo(p.DataType, p.Dims.ToArray()));
                inputs.Add(new ManifestTensor(name, TensorRole.Tangent, TypeName(p.DataType), p.Dims.ToArray()) { Of = p.Name, Direction = k });
                tangents[k][i] = name;
            }
        }

        // First pass: Jᵀu for every parameter, u a zeros cotangent shaped like the output (its
        // value never matters: the second pass differentiates w.r.t. it, and everything is linear in it).
        var e = g.Emitter("jvp");
        int outType = EmitterState.FloatType(outInfo?.ElemType ?? 0);
        string u = e.OpNamed(g.State.UniqueName(output + "/jvp/cotangent"), "ConstantOfShape", [e.Shape(output)],
            Attributes.Tensor("value", TensorData.Scalar("value", outType, 0, asVector: true)));
        g.SetInfo(u, new TensorInfo(outType, outInfo?.Shape));
        var vjp = new BackwardBuilder(g, registry).Build(new Dictionary<string, string> { [output] = u }, parameters.Select(p => p.Name).ToArray(), "jvp/");
        g.Commit();

        // Second pass, once per direction, over the committed graph (fresh index and shapes).
        var g2 = new GraphBuildContext(model, sourceOpset);
        var jvps = new string[directions];
        for (int k = 0; k < directions; k++)
        {
            var seeds = new Dictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < parameters.Count; i++) seeds[vjp[parameters[i].Name]] = tangents[k][i];
            var du = new BackwardBuilder(g2, registry).Build(seeds, [u], $"jvp{k}/");
            jvps[k] = g2.Emitter($"jvp{k}").OpNamed(g2.State.UniqueName($"{output}/jvp{k}"), "Identity", [du[u]]);
            g2.SetInfo(jvps[k], new TensorInfo(outType, outInfo?.Shape));
        }
        string q = loss.FisherMatrix(g2.Emitter("fisher_quadratic"), g2, options.Loss, output, target, jvps, g2.State.UniqueName(QuadraticName));

        // Outputs: loss, model outputs, J v_k, Q.
        var outputs = new List<ManifestTensor>();
        var modelOutputs = graph.Output.ToArray();
        graph.Output.Clear();
        AddOutput(graph, outputs, lossTensors.Loss, TensorRole.Loss, outType, []);
        foreach (var o in modelOutputs)
        {
            graph.Output.Add(o);
            var info = ShapeInference.FromValueInfo(o) ?? g2.Infos.GetValueOrDefault(o.Name);
            outputs.Add(new ManifestTensor(o.Name, TensorRole.ModelOutput, TypeName(info?.ElemType ?? 0), info?.PlainShape));
        }
        for (int k = 0; k < directions; k++)
            AddOutput(graph, outputs, jvps[k], TensorRole.Jvp, outType, outInfo?.PlainShape, output, k);
        AddOutput(graph, outputs, q, TensorRole.FisherQuadratic, outType, [directions, directions]);
        g2.Commit();
        RerouteShapeReads(graph, u, g2.Infos);
        Pruning.RemoveDeadNodes(graph);
        model.ProducerName = "onnx-kfac";

        var o2 = options.Loss;
        var ties = selection.Ties.ToDictionary(t => t.Name, t => Math.Max(t.Readers.Count, 1), StringComparer.Ordinal);
        var manifest = new TrainingManifest
        {
            SourceOpset = sourceOpset,
            Opset = g2.Index.Opset,
            Loss = new ManifestLoss(loss.Name, o2.Reduction.ToString().ToLowerInvariant(), output, target, lossTensors.Loss)
            {
                IgnoreIndex = loss.HasClassOptions ? o2.IgnoreIndex : null,
                LabelSmoothing = loss.HasClassOptions ? o2.LabelSmoothing : null,
                ClassWeights = o2.ClassWeights?.ToArray(),
            },
            Inputs = inputs,
            Outputs = outputs,
            // No gradients in this graph: parameters are listed with an empty gradient name.
            Parameters = parameters.Select(p => new ManifestParameter(p.Name, TypeName(p.DataType), p.Dims.ToArray(), "") { Uses = ties.GetValueOrDefault(p.Name, 1), Names = TrainingGraphBuilder.Aliases(selection, p.Name) }).ToArray(),
            Layers = [],
            Excluded = selection.Excluded,
        };
        return new TrainingGraph(model, manifest);
    }

    /// <summary>
    /// The second pass reads nothing of the first pass's values (it is linear in u), but its
    /// rules take run-time shapes of first-pass tensors (Shape/Size under a dynamic batch),
    /// which would keep the whole first pass alive. Each such read is pointed at a tensor
    /// computed before the first pass whose static dims are provably the same ones (numbers
    /// or named symbols such as the batch; a Shape may read a slice of a longer shape), so
    /// pruning removes the first pass. Reads with no such twin are left as they are.
    /// </summary>
    private static void RerouteShapeReads(GraphProto graph, string cotangent, Dictionary<string, TensorInfo> infos)
    {
        static bool Known(long d) => d >= 0 || TensorInfo.IsSymbol(d);
        static string Key(IEnumerable<long> dims) => "[" + string.Join(",", dims) + "]";
        // Every run of known dims of every earlier tensor: (tensor, start) by the dims' key; Size by the whole shape.
        var slices = new Dictionary<string, (string Tensor, int Start)>(StringComparer.Ordinal);
        var wholes = new Dictionary<string, string>(StringComparer.Ordinal);
        void Offer(string tensor)
        {
            if (infos.GetValueOrDefault(tensor)?.Shape is not { } s) return;
            if (s.All(Known)) wholes.TryAdd(Key(s), tensor);
            for (int a = 0; a < s.Length; a++)
                for (int b = a + 1; b <= s.Length && Known(s[b - 1]); b++)
                    slices.TryAdd(Key(s[a..b]), (tensor, a));
        }
        foreach (var i in graph.Input) Offer(i.Name);
        var dependent = new HashSet<string>(StringComparer.Ordinal) { cotangent };
        bool before = true;
        foreach (var n in graph.Node)
        {
            if (n.Output.Contains(cotangent)) before = false;
            if (before)
            {
                foreach (var o in n.Output) if (o.Length > 0) Offer(o);
                continue;
            }
            if (n.Input.Count == 1 && dependent.Contains(n.Input[0]) && infos.GetValueOrDefault(n.Input[0])?.Shape is { } shape)
            {
                if (n.OpType == "Size" && shape.All(Known) && wholes.TryGetValue(Key(shape), out var whole))
                    n.Input[0] = whole;
                else if (n.OpType == "Shape")
                {
                    int r = shape.Length;
                    int Clamp(long v) => (int)Math.Clamp(v < 0 ? v + r : v, 0, r);
                    int start = Clamp(n.GetInt("start", 0)), end = Clamp(n.GetInt("end", r));
                    if (end > start && shape[start..end].All(Known) && slices.TryGetValue(Key(shape[start..end]), out var twin))
                    {
                        n.Input[0] = twin.Tensor;
                        var attrs = n.Attribute.Where(a => a.Name is not ("start" or "end")).ToArray();
                        n.Attribute.Clear();
                        n.Attribute.Add(attrs);
                        n.Attribute.Add(Attributes.Int("start", twin.Start));
                        n.Attribute.Add(Attributes.Int("end", twin.Start + end - start));
                    }
                }
            }
            if (n.Input.Any(dependent.Contains))
                foreach (var o in n.Output) if (o.Length > 0) dependent.Add(o);
        }
    }

    private static void AddOutput(GraphProto graph, List<ManifestTensor> list, string name, TensorRole role, int elemType, long[]? shape, string? of = null, int? direction = null)
    {
        graph.Output.Add(ValueInfos.Tensor(name, elemType, shape));
        list.Add(new ManifestTensor(name, role, TypeName(elemType), shape) { Of = of, Direction = direction });
    }

    private static string TypeName(int elemType) => TrainingInputs.TypeName(elemType);
}
