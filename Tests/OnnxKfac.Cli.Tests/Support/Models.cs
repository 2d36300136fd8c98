using Google.Protobuf;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Cli.Tests.Support;

/// <summary>Tiny models built from ops that have gradient rules on every branch (MatMul, Add, Gemm, Identity).</summary>
internal static class Models
{
    public const int F = (int)DataType.Float;

    public static float[] Values(int n, int seed, float scale = 0.5f)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(scale * (2 * rng.NextDouble() - 1))).ToArray();
    }

    public static ValueInfoProto Input(string name, int type, params object[] dims)
    {
        var vi = ValueInfos.Tensor(name, type, dims.Select(d => d is long or int ? Convert.ToInt64(d) : -1L).ToArray(),
            dims.Select(d => d as string ?? "").ToArray());
        return vi;
    }

    public static NodeProto Node(string op, string name, string[] inputs, string[] outputs, params AttributeProto[] attrs)
    {
        var n = new NodeProto { OpType = op, Name = name };
        n.Input.Add(inputs);
        n.Output.Add(outputs);
        n.Attribute.Add(attrs);
        return n;
    }

    public static ModelProto Model(GraphProto g, int opset = 17)
    {
        var m = new ModelProto { IrVersion = 8, ProducerName = "OnnxKfac.Cli.Tests", ProducerVersion = "1", Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        return m;
    }

    /// <summary>
    /// x [N,4] → MatMul fc1.weight [4,5] → Add fc1.bias → MatMul fc2.weight [5,3] → Add fc2.bias → logits [N,3].
    /// Plus a single-element exporter constant 'onnx::Mul_7' (1.0, a name as torch.onnx gives folded constants) multiplied in.
    /// </summary>
    public static ModelProto Linear2(int classes = 3)
    {
        var g = new GraphProto { Name = "linear2" };
        g.Input.Add(Input("x", F, "N", 4));
        g.Initializer.Add(TensorData.FromFloats("fc1.weight", [4, 5], Values(20, 1)));
        g.Initializer.Add(TensorData.FromFloats("fc1.bias", [5], Values(5, 2)));
        g.Initializer.Add(TensorData.FromFloats("fc2.weight", [5, classes], Values(5 * classes, 3)));
        g.Initializer.Add(TensorData.FromFloats("fc2.bias", [classes], Values(classes, 4)));
        g.Initializer.Add(TensorData.FromFloats("onnx::Mul_7", [], [1f]));
        g.Node.Add(Node("MatMul", "fc1/MatMul", ["x", "fc1.weight"], ["h0"]));
        g.Node.Add(Node("Add", "fc1/Add", ["h0", "fc1.bias"], ["h1"]));
        g.Node.Add(Node("Mul", "scale/Mul", ["h1", "onnx::Mul_7"], ["h"]));
        g.Node.Add(Node("MatMul", "fc2/MatMul", ["h", "fc2.weight"], ["z0"]));
        g.Node.Add(Node("Add", "fc2/Add", ["z0", "fc2.bias"], ["logits"]));
        g.Output.Add(Input("logits", F, "N", classes));
        return Model(g);
    }

    /// <summary>Two data inputs a, b [N,4]: (a + b) @ w [4,3] + bias → y [N,3].</summary>
    public static ModelProto TwoInputs()
    {
        var g = new GraphProto { Name = "two_inputs" };
        g.Input.Add(Input("a", F, "N", 4));
        g.Input.Add(Input("b", F, "N", 4));
        g.Initializer.Add(TensorData.FromFloats("w", [4, 3], Values(12, 5)));
        g.Initializer.Add(TensorData.FromFloats("bias", [3], Values(3, 6)));
        g.Node.Add(Node("Add", "sum", ["a", "b"], ["s"]));
        g.Node.Add(Node("MatMul", "mm", ["s", "w"], ["z"]));
        g.Node.Add(Node("Add", "add", ["z", "bias"], ["y"]));
        g.Output.Add(Input("y", F, "N", 3));
        return Model(g);
    }

    /// <summary>Two outputs: logits [N,3] and aux = -logits; plus a weight shared by two MatMuls (tied).</summary>
    public static ModelProto TwoOutputsTied()
    {
        var g = new GraphProto { Name = "two_outputs" };
        g.Input.Add(Input("x", F, "N", 3));
        g.Initializer.Add(TensorData.FromFloats("shared.weight", [3, 3], Values(9, 7)));
        g.Node.Add(Node("MatMul", "first", ["x", "shared.weight"], ["h"]));
        g.Node.Add(Node("MatMul", "second", ["h", "shared.weight"], ["logits"]));
        g.Node.Add(Node("Neg", "neg", ["logits"], ["aux"]));
        g.Output.Add(Input("logits", F, "N", 3));
        g.Output.Add(Input("aux", F, "N", 3));
        return Model(g);
    }

    /// <summary>x [N,3,3] @ w [3,3] → Det → y [N]: Det has no gradient rule.</summary>
    public static ModelProto WithDet()
    {
        var g = new GraphProto { Name = "det" };
        g.Input.Add(Input("x", F, "N", 3, 3));
        g.Initializer.Add(TensorData.FromFloats("w", [3, 3], Values(9, 8)));
        g.Node.Add(Node("MatMul", "mm", ["x", "w"], ["h"]));
        g.Node.Add(Node("Det", "the_det", ["h"], ["y"]));
        g.Output.Add(Input("y", F, "N"));
        return Model(g);
    }

    /// <summary>x [N,3,3] @ w [3,3] → h; y = Det(h) + ReduceProd(h, axes [1,2]) [N]: two ops without a gradient rule.</summary>
    public static ModelProto WithDetAndReduceProd()
    {
        var g = new GraphProto { Name = "det_prod" };
        g.Input.Add(Input("x", F, "N", 3, 3));
        g.Initializer.Add(TensorData.FromFloats("w", [3, 3], Values(9, 8)));
        g.Node.Add(Node("MatMul", "mm", ["x", "w"], ["h"]));
        g.Node.Add(Node("Det", "the_det", ["h"], ["d"]));
        g.Node.Add(Node("ReduceProd", "the_prod", ["h"], ["p"], Attributes.Ints("axes", [1, 2]), Attributes.Int("keepdims", 0)));
        g.Node.Add(Node("Add", "sum", ["d", "p"], ["y"]));
        g.Output.Add(Input("y", F, "N"));
        return Model(g);
    }

    public static string Save(ModelProto m, string path)
    {
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    public static string SaveTensor(TensorProto t, string path)
    {
        File.WriteAllBytes(path, t.ToByteArray());
        return path;
    }

    public static TensorProto Floats(string name, long[] dims, float[] values) => TensorData.FromFloats(name, dims, values);

    public static TensorProto Int64s(string name, long[] dims, params long[] values) => TensorData.FromInt64s(name, dims, values);

    public static TensorProto Int32s(string name, long[] dims, params int[] values)
    {
        var t = new TensorProto { Name = name, DataType = (int)DataType.Int32 };
        t.Dims.Add(dims);
        t.Int32Data.Add(values);
        return t;
    }

    public static TensorProto ReadTensor(string path) => TensorProto.Parser.ParseFrom(File.ReadAllBytes(path));
}
