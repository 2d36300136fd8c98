using Google.Protobuf;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Model;

/// <summary>Typed attribute access and construction for <see cref="NodeProto"/>.</summary>
public static class Attributes
{
    public static AttributeProto? Find(this NodeProto n, string name) =>
        n.Attribute.FirstOrDefault(a => a.Name == name);

    public static long GetInt(this NodeProto n, string name, long fallback) => n.Find(name) is { } a ? a.I : fallback;

    public static float GetFloat(this NodeProto n, string name, float fallback) => n.Find(name) is { } a ? a.F : fallback;

    public static string GetString(this NodeProto n, string name, string fallback) =>
        n.Find(name) is { } a ? a.S.ToStringUtf8() : fallback;

    public static long[]? GetInts(this NodeProto n, string name) => n.Find(name) is { } a ? a.Ints.ToArray() : null;

    public static float[]? GetFloats(this NodeProto n, string name) => n.Find(name) is { } a ? a.Floats.ToArray() : null;

    public static TensorProto? GetTensor(this NodeProto n, string name) => n.Find(name)?.T;

    public static AttributeProto Int(string name, long v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = v };

    public static AttributeProto Float(string name, float v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = v };

    public static AttributeProto String(string name, string v) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(v) };

    public static AttributeProto Ints(string name, IEnumerable<long> v)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.Add(v);
        return a;
    }

    public static AttributeProto Floats(string name, IEnumerable<float> v)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Floats };
        a.Floats.Add(v);
        return a;
    }

    public static AttributeProto Tensor(string name, TensorProto t) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Tensor, T = t };

    /// <summary>Sets (replaces) an attribute on a node.</summary>
    public static void SetAttribute(this NodeProto n, AttributeProto a)
    {
        for (int i = 0; i < n.Attribute.Count; i++)
            if (n.Attribute[i].Name == a.Name) { n.Attribute[i] = a; return; }
        n.Attribute.Add(a);
    }
}
