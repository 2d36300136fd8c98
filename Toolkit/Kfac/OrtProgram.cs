using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Toolkit.Runtime;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Toolkit.Kfac;

/// <summary>
/// A small ONNX model of K-FAC's dense math (batched inverses, preconditioning products),
/// built node by node. Tensors are float32; shapes are static.
/// </summary>
internal sealed class ProgramBuilder
{
    private readonly GraphProto _graph = new() { Name = "onnx-kfac-kfac" };
    private int _next;

    public string Input(string name, long[] shape)
    {
        _graph.Input.Add(ValueInfos.Tensor(name, (int)DataType.Float, shape));
        return name;
    }

    public void Output(string tensor, string name, long[] shape)
    {
        _graph.Node.Add(Node("Identity", [tensor], [name]));
        _graph.Output.Add(ValueInfos.Tensor(name, (int)DataType.Float, shape));
    }

    public string Op(string op, IEnumerable<string> inputs, params AttributeProto[] attributes)
    {
        string output = $"t{_next++}";
        var node = Node(op, inputs, [output]);
        node.Attribute.Add(attributes);
        if (op == "Inverse") node.Domain = "com.microsoft";
        _graph.Node.Add(node);
        return output;
    }

    public string Int64s(params long[] values)
    {
        string name = $"c{_next++}";
        _graph.Initializer.Add(TensorData.FromInt64s(name, [values.Length], values));
        return name;
    }

    public string Int64Scalar(long value)
    {
        string name = $"c{_next++}";
        _graph.Initializer.Add(TensorData.FromInt64s(name, [], [value]));
        return name;
    }

    /// <summary>The identity matrix [d, d] like the first matrix of a [G, d, d] tensor.</summary>
    public string EyeOfFirst(string x) => Op("EyeLike", [Op("Gather", [x, Int64Scalar(0)], Attributes.Int("axis", 0))]);

    public string Reshape(string x, params long[] shape) => Op("Reshape", [x, Int64s(shape)]);

    public string Transpose(string x, params long[] perm) => Op("Transpose", [x], Attributes.Ints("perm", perm));

    public string MatMul(string a, string b) => Op("MatMul", [a, b]);

    /// <summary>Columns [start, end) of the last axis.</summary>
    public string SliceLast(string x, long start, long end) => Op("Slice", [x, Int64s(start), Int64s(end), Int64s(-1)]);

    private NodeProto Node(string op, IEnumerable<string> inputs, IEnumerable<string> outputs)
    {
        var n = new NodeProto { OpType = op, Name = $"n{_next++}" };
        n.Input.Add(inputs);
        n.Output.Add(outputs);
        return n;
    }

    public ModelProto Build()
    {
        var model = new ModelProto { IrVersion = 9, ProducerName = "onnx-kfac", Graph = _graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 18 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        return model;
    }

    public bool IsEmpty => _graph.Output.Count == 0;
}

/// <summary>A step of K-FAC's dense math over buffers bound once (an ONNX Runtime session, or LAPACK on the host).</summary>
internal interface IKfacProgram : IDisposable
{
    void Run();
}

/// <summary>
/// A <see cref="ProgramBuilder"/> model in an ONNX Runtime session whose inputs and outputs are
/// bound once to pinned buffers the optimizer owns: a run allocates nothing.
/// </summary>
internal sealed class OrtProgram : IKfacProgram
{
    private readonly InferenceSession _session;
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _run = new();
    private readonly List<TensorBuffer> _owned = [];

    public OrtProgram(ModelProto model, SessionOptions options, IEnumerable<(string Name, float[] Data, long[] Shape)> inputs,
        IEnumerable<(string Name, float[] Data, long[] Shape)> outputs, string what)
    {
        try { _session = new InferenceSession(model.ToByteArray(), options); }
        catch (OnnxRuntimeException e) { throw new OnnxKfacException($"ONNX Runtime refused K-FAC's {what} program: {e.Message.Split('\n')[0]}", e); }
        _binding = _session.CreateIoBinding();
        foreach (var (name, data, shape) in inputs)
        {
            var b = TensorBuffer.Wrap(data, shape, "float");
            _owned.Add(b);
            _binding.BindInput(name, b.Value);
        }
        foreach (var (name, data, shape) in outputs)
        {
            var b = TensorBuffer.Wrap(data, shape, "float");
            _owned.Add(b);
            _binding.BindOutput(name, b.Value);
        }
    }

    public void Run() => _session.RunWithBinding(_run, _binding);

    public void Dispose()
    {
        _binding.Dispose();
        foreach (var b in _owned) b.Dispose();
        _session.Dispose();
        _run.Dispose();
    }
}
