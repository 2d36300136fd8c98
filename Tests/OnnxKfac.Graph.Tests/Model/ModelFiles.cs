using Google.Protobuf;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;

namespace OnnxKfac.Graph.Tests.ModelIO; // not ".Model": that would shadow OnnxKfac.Graph.Model for "Model.X" in sibling test namespaces

/// <summary>Models and folders for the load/save tests.</summary>
internal static class ModelFiles
{
    /// <summary>
    /// x [N,16] → Gemm(w1 [32,16] transB, b1 [32]) → Mul(scale) → MatMul(w2 [32,8]) → Add(b2) → y [N,8]:
    /// two weights large enough for external data (2 KiB, 1 KiB), small ones that stay inline,
    /// only ops with gradient rules on every branch.
    /// </summary>
    public static ModelProto Dense(int seed = 1)
    {
        var g = new GraphProto { Name = "dense" };
        g.Input.Add(ValueInfos.Tensor("x", 1, [-1, 16], ["N", ""]));
        g.Initializer.Add(TensorData.FromFloats("w1", [32, 16], Values(512, seed)));
        g.Initializer.Add(TensorData.FromFloats("b1", [32], Values(32, seed + 1)));
        g.Initializer.Add(TensorData.FromFloats("scale", [], [0.75f]));
        g.Initializer.Add(TensorData.FromFloats("w2", [32, 8], Values(256, seed + 2)));
        g.Initializer.Add(TensorData.FromFloats("b2", [8], Values(8, seed + 3)));
        g.Node.Add(new NodeProto { OpType = "Gemm", Name = "fc1", Input = { "x", "w1", "b1" }, Output = { "h0" }, Attribute = { Attributes.Int("transB", 1) } });
        g.Node.Add(new NodeProto { OpType = "Mul", Name = "scale_mul", Input = { "h0", "scale" }, Output = { "h" } });
        g.Node.Add(new NodeProto { OpType = "MatMul", Name = "fc2", Input = { "h", "w2" }, Output = { "z" } });
        g.Node.Add(new NodeProto { OpType = "Add", Name = "fc2_bias", Input = { "z", "b2" }, Output = { "y" } });
        g.Output.Add(ValueInfos.Tensor("y", 1, [-1, 8], ["N", ""]));
        var m = new ModelProto { IrVersion = 8, ProducerName = "OnnxKfac.Tests", ProducerVersion = "0.1", DocString = "dense test model", Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        m.MetadataProps.Add(new StringStringEntryProto { Key = "author", Value = "tests" });
        m.MetadataProps.Add(new StringStringEntryProto { Key = "ünïcode", Value = "välue" });
        return m;
    }

    public static float[] Values(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
    }

    public static TestTensor Input(int n = 3) => TestTensor.Random(1, [n, 16], 42);

    public static TestTensor Run(ModelProto m, TestTensor x)
    {
        using var ort = new Ort(m);
        return ort.Run(new Dictionary<string, TestTensor> { ["x"] = x })["y"];
    }

    /// <summary>Protobuf encoding of an unknown varint field.</summary>
    public static byte[] VarintField(int number, ulong value)
    {
        var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        o.WriteTag(number, WireFormat.WireType.Varint);
        o.WriteUInt64(value);
        o.Flush();
        return ms.ToArray();
    }

    /// <summary>Protobuf encoding of an unknown length-delimited field.</summary>
    public static byte[] BytesField(int number, byte[] value)
    {
        var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        o.WriteTag(number, WireFormat.WireType.LengthDelimited);
        o.WriteBytes(ByteString.CopyFrom(value));
        o.Flush();
        return ms.ToArray();
    }
}

/// <summary>A temporary folder deleted on dispose.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "onnxkfac-io-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string this[string name] => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
