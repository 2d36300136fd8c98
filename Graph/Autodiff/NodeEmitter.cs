using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Autodiff;

/// <summary>
/// Appends standard ai.onnx nodes to a graph under construction, naming every node and
/// tensor from a scope (e.g. <c>fc1/MatMul/grad</c>) plus a counter, so the same
/// model and options always give the same names. Integer constants become shared
/// initializers; float constants are cached per value and type.
/// </summary>
public sealed class NodeEmitter
{
    private readonly EmitterState _state;

    internal NodeEmitter(EmitterState state, string scope)
    {
        _state = state;
        Scope = scope;
    }

    public string Scope { get; }

    /// <summary>The opset the emitted nodes conform to (at least 18).</summary>
    public int Opset => _state.Opset;

    /// <summary>An emitter for a nested scope.</summary>
    public NodeEmitter In(string scope) => new(_state, Scope.Length == 0 ? scope : Scope + "/" + scope);

    /// <summary>Emits a single-output node and returns its output tensor name.</summary>
    public string Op(string opType, IEnumerable<string> inputs, params AttributeProto[] attributes) =>
        Ops(opType, inputs, 1, attributes)[0];

    /// <summary>Emits a single-output node whose output gets exactly <paramref name="outputName"/>.</summary>
    public string OpNamed(string outputName, string opType, IEnumerable<string> inputs, params AttributeProto[] attributes)
    {
        _state.Claim(outputName);
        var node = new NodeProto { OpType = opType, Name = _state.UniqueName(Scope + "/" + opType) };
        node.Input.Add(inputs);
        node.Output.Add(outputName);
        node.Attribute.Add(attributes);
        _state.Nodes.Add(node);
        return outputName;
    }

    /// <summary>Emits a node with <paramref name="outputCount"/> outputs.</summary>
    public string[] Ops(string opType, IEnumerable<string> inputs, int outputCount, params AttributeProto[] attributes)
    {
        string name = _state.UniqueName(Scope + "/" + opType);
        var node = new NodeProto { OpType = opType, Name = name };
        node.Input.Add(inputs);
        var outs = new string[outputCount];
        for (int k = 0; k < outputCount; k++)
        {
            outs[k] = outputCount == 1 ? name : name + ":" + k;
            if (outputCount > 1) _state.Claim(outs[k]);
        }
        node.Output.Add(outs);
        node.Attribute.Add(attributes);
        _state.Nodes.Add(node);
        return outs;
    }

    /// <summary>A 1-D int64 constant (shared across the graph).</summary>
    public string Int64s(params long[] values) => _state.Int64Constant(values, vector: true);

    /// <summary>A 0-D int64 constant.</summary>
    public string Int64(long value) => _state.Int64Constant([value], vector: false);

    /// <summary>A 0-D constant of float element type <paramref name="elemType"/>.</summary>
    public string Scalar(double value, int elemType) => _state.FloatConstant(value, elemType);

    /// <summary>A constant tensor added as an initializer under a name in this scope.</summary>
    public string Constant(TensorProto tensor)
    {
        tensor.Name = _state.UniqueName(Scope + "/" + (string.IsNullOrEmpty(tensor.Name) ? "const" : tensor.Name));
        _state.Claim(tensor.Name);
        _state.Initializers.Add(tensor);
        return tensor.Name;
    }

    // ---- small conveniences, each one standard op ----------------------------------------

    public string Add(string a, string b) => Op("Add", [a, b]);
    public string Sub(string a, string b) => Op("Sub", [a, b]);
    public string Mul(string a, string b) => Op("Mul", [a, b]);
    public string Div(string a, string b) => Op("Div", [a, b]);
    public string Neg(string a) => Op("Neg", [a]);
    public string Shape(string x) => Op("Shape", [x]);
    public string Reshape(string x, string shape) => Op("Reshape", [x, shape]);
    public string Transpose(string x, long[] perm) => Op("Transpose", [x], Attributes.Ints("perm", perm));
    public string Cast(string x, int to) => Op("Cast", [x], Attributes.Int("to", to));
    public string MatMul(string a, string b) => Op("MatMul", [a, b]);

    public string ReduceSum(string x, long[] axes, bool keepDims) =>
        Op("ReduceSum", [x, Int64s(axes)], Attributes.Int("keepdims", keepDims ? 1 : 0));

    public string ReduceMean(string x, long[] axes, bool keepDims) =>
        Op("ReduceMean", [x, Int64s(axes)], Attributes.Int("keepdims", keepDims ? 1 : 0));

    /// <summary>Zeros with the shape of <paramref name="like"/> and float type <paramref name="elemType"/>.</summary>
    public string ZerosLike(string like, int elemType) =>
        Op("ConstantOfShape", [Shape(like)], Attributes.Tensor("value", TensorData.Scalar("value", elemType, 0, asVector: true)));

    /// <summary>Sum of one or more tensors (no node for a single one).</summary>
    public string Sum(IReadOnlyList<string> terms) => terms.Count == 1 ? terms[0] : Op("Sum", terms);
}

/// <summary>The shared naming and constant state behind every <see cref="NodeEmitter"/> of one graph.</summary>
internal sealed class EmitterState
{
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly HashSet<string> _reserved = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _counters = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _constants = new(StringComparer.Ordinal);

    public EmitterState(GraphProto graph, int opset)
    {
        Opset = opset;
        Nodes = [];
        Initializers = [];
        foreach (var n in graph.Node)
        {
            if (n.Name.Length > 0) _names.Add(n.Name);
            foreach (var o in n.Output) _names.Add(o);
        }
        foreach (var i in graph.Input) _names.Add(i.Name);
        foreach (var t in graph.Initializer) _names.Add(t.Name);
        foreach (var o in graph.Output) _names.Add(o.Name);
    }

    public int Opset { get; }
    public List<NodeProto> Nodes { get; }
    public List<TensorProto> Initializers { get; }

    public bool IsTaken(string name) => _names.Contains(name);

    /// <summary>Takes a name for a new tensor: free, or reserved earlier by <see cref="UniqueName"/>.</summary>
    public void Claim(string name)
    {
        if (_reserved.Remove(name)) return;
        if (!_names.Add(name)) throw new InvalidOperationException($"tensor name '{name}' is already used in the graph");
    }

    /// <summary>
    /// <paramref name="stem"/>, or <c>stem_1</c>, <c>stem_2</c>... whichever is free first;
    /// reserved, so one later <see cref="Claim"/> of it succeeds.
    /// </summary>
    public string UniqueName(string stem)
    {
        string candidate = stem;
        if (_names.Contains(candidate))
        {
            int k = _counters.GetValueOrDefault(stem);
            do { k++; candidate = stem + "_" + k; } while (_names.Contains(candidate));
            _counters[stem] = k;
        }
        _names.Add(candidate);
        _reserved.Add(candidate);
        return candidate;
    }

    public string Int64Constant(long[] values, bool vector)
    {
        string key = (vector ? "v:" : "s:") + string.Join(",", values);
        if (_constants.TryGetValue(key, out var name)) return name;
        string stem = "const/i64/" + (vector ? "[" + string.Join("_", values.Select(v => v.ToString(System.Globalization.CultureInfo.InvariantCulture))) + "]" : values[0].ToString(System.Globalization.CultureInfo.InvariantCulture));
        name = UniqueName(stem.Length > 80 ? stem[..80] : stem);
        Initializers.Add(TensorData.FromInt64s(name, vector ? [values.Length] : [], values));
        _constants[key] = name;
        return name;
    }

    public string FloatConstant(double value, int elemType)
    {
        string text = value.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        string key = $"f{elemType}:{text}";
        if (_constants.TryGetValue(key, out var name)) return name;
        name = UniqueName($"const/{TensorData.TypeName(elemType)}/{text}");
        Initializers.Add(TensorData.Scalar(name, elemType, value));
        _constants[key] = name;
        return name;
    }

    public static int FloatType(int elemType) => elemType == 0 ? (int)DataType.Float : elemType;
}
