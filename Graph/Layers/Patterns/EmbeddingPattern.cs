using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Layers.Patterns;

/// <summary>Embeddings: Gather of rows of a weight table by integer indices.</summary>
internal static class EmbeddingPattern
{
    public static LayerMatch Gather(NodeProto n, LayerMatchContext c)
    {
        string? w = c.Param(n.Input[0]);
        if (w is null) return LayerMatch.None; // gathers over activations or shapes are not layers
        if (n.GetInt("axis", 0) != 0) return LayerMatch.Reject("gathers along an axis other than 0");
        var ws = c.Shape(w);
        if (ws is null || ws.Length != 2) return LayerMatch.Reject($"table '{w}' is not a matrix");
        return LayerMatchContext.Layer(n, LayerKind.Embedding, w, n.Input[1]) with { InFeatures = ws[0], OutFeatures = ws[1] };
    }
}
