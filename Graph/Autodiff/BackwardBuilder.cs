using OnnxKfac.Graph.Autodiff.Rules;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Autodiff;

/// <summary>
/// The graph under construction shared by the forward rewrite, the loss and every
/// backward pass: the model (already at the training opset), its index, static shapes,
/// and the naming/constant state of the nodes being added.
/// </summary>
public sealed class GraphBuildContext
{
    public GraphBuildContext(ModelProto model, int sourceOpset)
    {
        Model = model;
        SourceOpset = sourceOpset;
        RecurrentRules.Unroll(model); // LSTM/GRU/RNN become standard ops before anything reads the graph
        Index = new GraphIndex(model);
        Infos = ShapeInference.Infer(model);
        State = new EmitterState(model.Graph, Index.Opset);
    }

    public ModelProto Model { get; }
    public GraphIndex Index { get; }
    public Dictionary<string, TensorInfo> Infos { get; }

    /// <summary>The opset of the model as loaded (before any upgrade).</summary>
    public int SourceOpset { get; }

    internal EmitterState State { get; }

    public NodeEmitter Emitter(string scope) => new(State, scope);

    /// <summary>Records static information for a tensor the builder created.</summary>
    public void SetInfo(string tensor, TensorInfo info) => Infos[tensor] = info;

    /// <summary>Appends every emitted node and constant to the model's graph (once, at the end).</summary>
    public void Commit()
    {
        Model.Graph.Node.Add(State.Nodes);
        Model.Graph.Initializer.Add(State.Initializers);
        State.Nodes.Clear();
        State.Initializers.Clear();
    }

    /// <summary>A stable scope name for a forward node (its name, else op type and first output).</summary>
    public static string NodeScope(NodeProto n) => n.Name.Length > 0 ? n.Name : n.OpType + "(" + n.Output.FirstOrDefault() + ")";
}

/// <summary>
/// Reverse-mode differentiation over the nodes between the requested tensors and the
/// seeded outputs only: walks them in reverse topological order, calls one rule per node,
/// and sums gradient contributions. Gradient tensors are named <c>{scope}{tensor}_grad</c>.
/// </summary>
public sealed class BackwardBuilder
{
    private readonly GraphBuildContext _g;
    private readonly GradientRegistry _registry;
    private Dictionary<string, List<string>> _contributions = new(StringComparer.Ordinal);

    public BackwardBuilder(GraphBuildContext graph, GradientRegistry? registry = null)
    {
        _g = graph;
        _registry = registry ?? GradientRegistry.Default;
    }

    internal int SourceOpset => _g.SourceOpset;

    internal TensorInfo? Info(string tensor) => _g.Infos.GetValueOrDefault(tensor);

    /// <summary>
    /// The values of a small constant tensor (an initializer that is not a graph input, or a
    /// Constant node's output), or null. Callers use it only for inputs that need no gradient,
    /// so a trained initializer is never mistaken for a constant.
    /// </summary>
    internal double[]? ConstantValues(string tensor)
    {
        Proto.TensorProto? t = null;
        if (_g.Index.Initializers.TryGetValue(tensor, out var init) && !_g.Index.GraphInputs.ContainsKey(tensor)) t = init;
        else if (_g.Index.Producer(tensor) is { OpType: "Constant" } node) t = node.GetTensor("value");
        if (t is null || TensorData.ElementCount(t.Dims) > 16) return null;
        return TensorData.ToDoubles(t);
    }

    /// <summary>
    /// Builds d(seeded outputs)/d(<paramref name="wrt"/>). <paramref name="seeds"/> maps
    /// each output tensor to the tensor holding its incoming gradient. Returns, for every
    /// tensor of <paramref name="wrt"/>, the name of its gradient (zeros when it does not
    /// reach a seed), named <c>{scope}{tensor}_grad</c>.
    /// </summary>
    public IReadOnlyDictionary<string, string> Build(IReadOnlyDictionary<string, string> seeds, IReadOnlyCollection<string> wrt, string scope = "")
    {
        _contributions = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        var nodes = _g.Model.Graph.Node;
        var index = _g.Index;

        // Forward reach: tensors that depend differentiably on a wrt tensor.
        var forward = new HashSet<string>(wrt, StringComparer.Ordinal);
        var active = new List<NodeProto>();
        foreach (var n in nodes)
        {
            if (IsDefaultDomain(n) && _registry.IsNonDifferentiable(n.OpType)) continue;
            var entry = Lookup(n);
            bool touched = false;
            for (int i = 0; i < n.Input.Count; i++)
                if (n.Input[i].Length > 0 && forward.Contains(n.Input[i]) && (entry is null || entry.IsDifferentiable(i)))
                    touched = true;
            if (!touched) continue;
            active.Add(n);
            // Integer and boolean outputs carry no gradient: they end the path (x -> Cast(int) -> Mod).
            foreach (var o in n.Output)
                if (o.Length > 0 && (Info(o)?.ElemType is not { } t || t == 0 || TensorData.IsFloat(t))) forward.Add(o);
        }

        // Backward reach: active nodes from which a seed can be reached.
        var backward = new HashSet<string>(seeds.Keys, StringComparer.Ordinal);
        var relevant = new List<NodeProto>();
        var noRule = new List<NodeProto>();
        for (int k = active.Count - 1; k >= 0; k--)
        {
            var n = active[k];
            if (!n.Output.Any(backward.Contains)) continue;
            relevant.Add(n);
            var entry = Lookup(n);
            if (entry is null) noRule.Add(n); // keep walking through its inputs: one error names them all
            for (int i = 0; i < n.Input.Count; i++)
                if (n.Input[i].Length > 0 && (entry is null || entry.IsDifferentiable(i)) && forward.Contains(n.Input[i]))
                    backward.Add(n.Input[i]);
        }
        if (noRule.Count > 0) throw NoRule(noRule);

        foreach (var (tensor, grad) in seeds) AddContribution(tensor, grad);

        foreach (var n in relevant) // already in reverse topological order
        {
            var entry = Lookup(n)!;
            var outGrads = new string?[n.Output.Count];
            bool any = false;
            for (int o = 0; o < n.Output.Count; o++)
            {
                outGrads[o] = Accumulate(n.Output[o], scope, stableName: false);
                any |= outGrads[o] is not null;
            }
            if (!any) continue;
            var needs = new bool[n.Input.Count];
            for (int i = 0; i < n.Input.Count; i++)
                needs[i] = n.Input[i].Length > 0 && entry.IsDifferentiable(i) && forward.Contains(n.Input[i]) && backward.Contains(n.Input[i]);
            var ctx = new GradientContext(this, n, outGrads, needs, _g.Emitter(scope + GraphBuildContext.NodeScope(n) + "/grad"));
            entry.Rule(ctx);
        }

        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var w in wrt)
        {
            string name = scope + w + "_grad";
            string? g = Accumulate(w, scope, stableName: true);
            var emit = _g.Emitter(scope + w + "/grad");
            if (g is null)
            {
                int type = EmitterState.FloatType(Info(w)?.ElemType ?? 0);
                g = emit.ZerosLike(w, type);
            }
            if (g != name) g = emit.OpNamed(_g.State.IsTaken(name) ? _g.State.UniqueName(name) : name, "Identity", [g]);
            result[w] = g;
        }
        return result;
    }

    private static bool IsDefaultDomain(NodeProto n) => n.Domain is "" or "ai.onnx";

    private GradientRegistry.Entry? Lookup(NodeProto n) => IsDefaultDomain(n) ? _registry.Find(n.OpType) : null;

    internal void AddContribution(string tensor, string grad)
    {
        if (!_contributions.TryGetValue(tensor, out var list)) _contributions[tensor] = list = [];
        list.Add(grad);
        if (!_g.Infos.ContainsKey(grad) && Info(tensor) is { } info) _g.Infos[grad] = info with { Value = null };
    }

    /// <summary>The summed gradient of a tensor (null when nothing flows into it).</summary>
    private string? Accumulate(string tensor, string scope, bool stableName)
    {
        if (!_contributions.TryGetValue(tensor, out var list) || list.Count == 0) return null;
        if (list.Count == 1) return list[0];
        string name = scope + tensor + "_grad";
        string sum = _g.State.IsTaken(name)
            ? _g.Emitter(scope + tensor + "/grad").Op("Sum", list)
            : _g.Emitter(scope + tensor + "/grad").OpNamed(name, "Sum", list);
        if (Info(tensor) is { } info) _g.Infos[sum] = info with { Value = null };
        list.Clear();
        list.Add(sum);
        return sum;
    }

    /// <summary>One error for every node on the gradient path without a rule (in graph order).</summary>
    private UnsupportedOpException NoRule(List<NodeProto> nodes)
    {
        static string Op(NodeProto n) => (n.Domain.Length > 0 ? n.Domain + "." : "") + n.OpType;
        nodes.Reverse();
        string what = nodes.Count == 1
            ? $"{GraphIndex.Describe(nodes[0])}: no gradient rule for op '{Op(nodes[0])}'"
            : $"{nodes.Count} nodes on the gradient path have no gradient rule ({string.Join(", ", nodes.Select(Op).Distinct().Select(o => $"op '{o}'"))}): " +
              string.Join("; ", nodes.Select(GraphIndex.Describe));
        return new($"{what} at opset {_g.SourceOpset}; supported ops: {string.Join(", ", _registry.SupportedOps)}");
    }

    internal string Unbroadcast(NodeEmitter e, string grad, string input, TensorInfo? gradInfo)
    {
        var gi = gradInfo;
        var xi = Info(input);
        int? gr = gi?.Rank, xr = xi?.Rank;
        if (gi?.Shape is { } gs && xi?.Shape is { } xs && gs.SequenceEqual(xs) && xs.All(d => d >= 0)) return grad;
        if (gr is { } rg && xr is { } rx && rg >= rx)
        {
            var gs2 = gi!.Shape!;
            var xs2 = xi!.Shape!;
            int lead = rg - rx;
            var axes = new List<long>();
            bool dynamic = false;
            for (int k = 0; k < rg; k++)
            {
                if (k < lead) { axes.Add(k); continue; }
                long xd = xs2[k - lead], gd = gs2[k];
                if (xd == 1 && gd != 1) axes.Add(k);
                else if (xd < 0 && !(TensorInfo.IsSymbol(xd) && xd == gd)) dynamic = true; // unknown input dim: could be a broadcast 1 (a shared symbol cannot)
            }
            if (!dynamic)
            {
                if (axes.Count == 0) return grad;
                string summed = e.ReduceSum(grad, axes.ToArray(), keepDims: true);
                string shaped = xs2.All(d => d >= 0) ? e.Reshape(summed, e.Int64s(xs2)) : e.Reshape(summed, e.Shape(input));
                _g.Infos[shaped] = xi with { Value = null };
                return shaped;
            }
        }
        // Fully dynamic: pad shape(input) with leading ones to the gradient's rank and
        // sum every axis where the padded input shape is 1.
        string gShape = e.Shape(grad);
        string xShape = e.Shape(input);
        string ones = e.Op("Expand", [e.Int64s(1), e.Sub(e.Op("Shape", [gShape]), e.Op("Shape", [xShape]))]);
        string padded = e.Op("Concat", [ones, xShape], Attributes.Int("axis", 0));
        string isOne = e.Op("Equal", [padded, e.Int64s(1)]);
        string axesT = e.Reshape(e.Op("NonZero", [isOne]), e.Int64s(-1));
        string reduced = e.Op("ReduceSum", [grad, axesT], Attributes.Int("keepdims", 1), Attributes.Int("noop_with_empty_axes", 1));
        string result = e.Reshape(reduced, xShape);
        if (xi is not null) _g.Infos[result] = xi with { Value = null };
        return result;
    }

    internal string RequestForwardOutput(NodeProto node, int index)
    {
        while (node.Output.Count <= index) node.Output.Add("");
        if (node.Output[index].Length == 0)
        {
            string name = _g.State.UniqueName(GraphBuildContext.NodeScope(node) + "/output" + index);
            node.Output[index] = name;
        }
        return node.Output[index];
    }
}
