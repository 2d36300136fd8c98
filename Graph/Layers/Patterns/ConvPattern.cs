using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Layers.Patterns;

/// <summary>Conv layers (1-D, 2-D, 3-D) with stride, padding, dilation and groups.</summary>
internal static class ConvPattern
{
    public static LayerMatch Conv(NodeProto n, LayerMatchContext c)
    {
        string? w = c.Param(n.Input[1]);
        if (w is null) return LayerMatch.Reject($"weight '{n.Input[1]}' is not a trainable parameter");
        var ws = c.Shape(w);
        if (ws is null || ws.Length < 3) return LayerMatch.Reject($"weight '{w}' has no known kernel shape");
        string? b = n.Input.Count > 2 && n.Input[2].Length > 0 ? c.Param(n.Input[2]) : null;
        var window = ConvWindow.TryRead(n, c.Shape(n.Input[0]), ws, out string? why);
        if (window is null) return LayerMatch.Reject(why!);
        return LayerMatchContext.Layer(n, LayerKind.Conv, w, n.Input[0]) with
        {
            Bias = b, InFeatures = ws[1] * ws[2..].Aggregate(1L, (a, x) => a * x), OutFeatures = ws[0], Conv = window,
        };
    }
}
