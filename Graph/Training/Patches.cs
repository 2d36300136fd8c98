using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Autodiff.Rules;
using OnnxKfac.Graph.Layers;
using OnnxKfac.Graph.Model;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Training;

/// <summary>
/// Conv input patches (im2col) in one standard op: a depthwise Conv whose kernel is one
/// one-hot filter per (channel, kernel offset), with the layer's strides, pads and
/// dilations. Output [N, C·Π k, out spatial...], channel-major like the layer's weight
/// flattened to [C_out, C_in/groups · Π k] (channels of group g are rows g·C/G..).
/// </summary>
internal static class Patches
{
    public static string Emit(GraphBuildContext g, LayerInfo layer, string outputName)
    {
        var geo = layer.Conv!;
        long k = geo.Kernel.Aggregate(1L, (a, b) => a * b);
        // The input's channel count, else the weight's (C_in/groups · Π k per row) where shape inference
        // lost the input's shape (ShuffleNet's channel shuffle reshapes by computed dims).
        long channels = g.Infos.GetValueOrDefault(layer.Input)?.Shape is { Length: > 1 } s && s[1] > 0 ? s[1]
            : layer.InFeatures > 0 && k > 0 && layer.InFeatures % k == 0 ? layer.InFeatures / k * layer.Groups
            : throw new OnnxKfacException($"conv patches for layer '{layer.Name}' need the input's channel count, which is unknown");
        // The one-hot kernel holds C·k² values; refuse sizes no real conv layer has before allocating.
        if (geo.Kernel.Any(d => d < 1) || k > 1 << 20 || channels > 1 << 20 || channels * k * k > 1 << 28)
            throw new OnnxKfacException($"conv patches for layer '{layer.Name}': kernel [{string.Join(",", geo.Kernel)}] over {channels} channels is too large to expand into patches (build without conv patches)");
        int type = EmitterState.FloatType((g.Infos.GetValueOrDefault(layer.Input) ?? g.Infos.GetValueOrDefault(layer.Weight))?.ElemType ?? (int)DataType.Float);
        var e = g.Emitter(layer.Name + "/kfac");
        string kernel = e.Constant(Spatial.Im2ColKernel(channels, geo.Kernel, type));
        var attrs = new List<Proto.AttributeProto>
        {
            Attributes.Ints("kernel_shape", geo.Kernel), Attributes.Ints("strides", geo.Strides),
            Attributes.Ints("dilations", geo.Dilations), Attributes.Int("group", channels),
        };
        if (geo.AutoPad is "NOTSET" or "") attrs.Add(Attributes.Ints("pads", geo.Pads!));
        else attrs.Add(Attributes.String("auto_pad", geo.AutoPad));
        string result = e.OpNamed(outputName, "Conv", [layer.Input, kernel], attrs.ToArray());
        var outShape = g.Infos.GetValueOrDefault(layer.PreActivation)?.Shape;
        g.SetInfo(result, new TensorInfo(type, outShape is null ? null : [outShape[0], channels * k, .. outShape[2..]]));
        return result;
    }
}
