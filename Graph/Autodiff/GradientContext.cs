using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Autodiff;

/// <summary>
/// What a gradient rule sees: the forward node (in the training graph's opset, at least
/// 18), which output gradients exist, which input gradients are wanted, static shape
/// information, and an emitter scoped to <c>{node}/grad</c>.
/// </summary>
public sealed class GradientContext
{
    private readonly BackwardBuilder _builder;
    private readonly string?[] _outputGrads;
    private readonly bool[] _needs;

    internal GradientContext(BackwardBuilder builder, NodeProto node, string?[] outputGrads, bool[] needs, NodeEmitter emit)
    {
        _builder = builder;
        Node = node;
        _outputGrads = outputGrads;
        _needs = needs;
        Emit = emit;
    }

    public NodeProto Node { get; }

    public NodeEmitter Emit { get; }

    /// <summary>The opset of the training graph (at least 18; forward nodes were converted to it).</summary>
    public int Opset => Emit.Opset;

    public int InputCount => Node.Input.Count;

    /// <summary>Forward input <paramref name="i"/> ("" when an optional input is absent).</summary>
    public string X(int i) => i < Node.Input.Count ? Node.Input[i] : "";

    public bool HasInput(int i) => X(i).Length > 0;

    /// <summary>Forward output <paramref name="i"/>.</summary>
    public string Y(int i = 0) => Node.Output[i];

    /// <summary>The gradient flowing into output <paramref name="i"/>, or null when none does.</summary>
    public string? DY(int i) => i < _outputGrads.Length ? _outputGrads[i] : null;

    /// <summary>
    /// The gradient of output 0, which the rules of single-output ops require: when a
    /// gradient reaches only another output (an op given outputs it does not have), the
    /// node is refused instead of the rule failing on a missing tensor.
    /// </summary>
    public string DY() => DY(0) ?? throw Unsupported(
        $"a gradient reaches output '{Node.Output.Skip(1).FirstOrDefault(o => o.Length > 0)}' but not output 0, and the rule differentiates output 0 only");

    /// <summary>The gradient of output <paramref name="i"/>, zeros when none flows (multi-output ops).</summary>
    public string DYOrZeros(int i) => DY(i) ?? Emit.ZerosLike(Y(i), ElemType(Y(i)));

    /// <summary>Whether a gradient for input <paramref name="i"/> is wanted.</summary>
    public bool Needs(int i) => i < _needs.Length && _needs[i];

    /// <summary>Adds a gradient contribution for input <paramref name="i"/> (ignored when not wanted).</summary>
    public void SetGrad(int i, string grad)
    {
        if (Needs(i)) _builder.AddContribution(X(i), grad);
    }

    public TensorInfo? Info(string tensor) => _builder.Info(tensor);

    /// <summary>The float element type of a tensor, from static inference or the node's first input.</summary>
    public int ElemType(string tensor)
    {
        int t = Info(tensor)?.ElemType ?? 0;
        if (t == 0) t = Info(X(0))?.ElemType ?? 0;
        return EmitterState.FloatType(t);
    }

    /// <summary>The rank of a tensor; a clear error naming the node when it is unknown.</summary>
    public int Rank(string tensor) =>
        Info(tensor)?.Rank ?? throw new UnsupportedOpException(
            $"{GraphIndex.Describe(Node)}: the gradient needs the rank of '{tensor}', which static shape inference could not determine (add value_info with shapes to the model)");

    public long AttrInt(string name, long fallback) => Node.GetInt(name, fallback);
    public float AttrFloat(string name, float fallback) => Node.GetFloat(name, fallback);
    public string AttrString(string name, string fallback) => Node.GetString(name, fallback);
    public long[]? AttrInts(string name) => Node.GetInts(name);

    /// <summary>The constant int64 values of input <paramref name="i"/> when known ahead of time.</summary>
    public long[]? ConstInput(int i) =>
        HasInput(i) && Info(X(i))?.Value is { } v && v.All(TensorInfo.IsConcrete) ? v : null;

    /// <summary>
    /// The values of input <paramref name="i"/> when it is a small constant (initializer or
    /// Constant node) that needs no gradient; null otherwise.
    /// </summary>
    public double[]? ConstValues(int i) => HasInput(i) && !Needs(i) ? _builder.ConstantValues(X(i)) : null;

    /// <summary>A scalar constant in the element type of <paramref name="like"/>.</summary>
    public string Scalar(double value, string like) => Emit.Scalar(value, ElemType(like));

    /// <summary>
    /// Reduces <paramref name="grad"/> (shaped like the broadcast result) to the shape of
    /// <paramref name="input"/>: ReduceSum over the broadcast axes, then Reshape. No nodes
    /// when the shapes are statically equal. A gradient the rule just emitted is taken to be
    /// shaped like the node's first output. The one helper every broadcasting op uses.
    /// </summary>
    public string Unbroadcast(string grad, string input) =>
        _builder.Unbroadcast(Emit, grad, input, Info(grad) ?? Info(Y(0)));

    /// <summary>
    /// Makes the forward node produce its optional output <paramref name="index"/> (e.g.
    /// MaxPool's Indices, LayerNormalization's InvStdDev) and returns its name.
    /// </summary>
    public string RequestForwardOutput(int index) => _builder.RequestForwardOutput(Node, index);

    /// <summary>An axis attribute in [-rank, rank), made non-negative; anything else is an error naming the node.</summary>
    public int Axis(long axis, int rank) =>
        axis >= -rank && axis < rank ? (int)(axis < 0 ? axis + rank : axis) : throw Unsupported($"axis {axis} is out of range for rank {rank}");

    /// <summary>An error naming this node, for forms of an op the rule does not support.</summary>
    public UnsupportedOpException Unsupported(string why) =>
        new($"{GraphIndex.Describe(Node)} at opset {_builder.SourceOpset}: {why}");
}

/// <summary>A gradient rule: reads the context, emits standard ops, sets input gradients.</summary>
public delegate void GradientRule(GradientContext context);
