using System.Text.Json.Serialization;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Model;

/// <summary>
/// The sliding-window geometry of a Conv, ConvTranspose, MaxPool or AveragePool node as
/// ONNX Runtime resolves it: kernel, strides, dilations, group, the begin/end pads after
/// auto_pad (explicit, VALID, SAME_UPPER, SAME_LOWER; ConvTranspose also output_shape),
/// and the spatial sizes of input and output. The one place shape inference, the
/// convolution and pooling gradient rules and the layer matcher read a window from.
/// Sizes known only at run time are -1.
/// </summary>
public sealed record ConvWindow
{
    /// <summary>The kernel's spatial sizes (-1 where neither kernel_shape nor the weight tells).</summary>
    public required long[] Kernel { get; init; }
    public required long[] Strides { get; init; }
    public required long[] Dilations { get; init; }
    /// <summary>[begin..., end...] after auto_pad; null when auto_pad or output_shape needs a spatial size known only at run time.</summary>
    public long[]? Pads { get; init; }
    public long Group { get; init; } = 1;
    /// <summary>The auto_pad attribute as written ("NOTSET" when absent).</summary>
    public string AutoPad { get; init; } = "NOTSET";
    /// <summary>ConvTranspose's output_padding (zeros for the other ops).</summary>
    public long[]? OutputPadding { get; init; }
    /// <summary>The input's spatial sizes.</summary>
    public required long[] In { get; init; }
    /// <summary>The output's spatial sizes.</summary>
    public required long[] Out { get; init; }

    [JsonIgnore] public int Rank => Kernel.Length;

    [JsonIgnore] public IEnumerable<int> Axes => Enumerable.Range(0, Rank);

    /// <summary>The input's spatial sizes when all are known, else null.</summary>
    [JsonIgnore] public long[]? StaticIn => In.All(d => d >= 0) ? In : null;

    /// <summary>The dilated kernel's extent on spatial axis <paramref name="k"/>.</summary>
    public long Extent(int k) => Dilations[k] * (Kernel[k] - 1) + 1;

    public long Begin(int k) => Pads![k];

    public long End(int k) => Pads![Rank + k];

    /// <summary>
    /// Reads the window of node <paramref name="n"/> (Conv, ConvTranspose, MaxPool or
    /// AveragePool) over an input of shape <paramref name="input"/> (N, C, spatial...) and,
    /// for the convolutions, a weight of shape <paramref name="weight"/>; either may be
    /// null (unknown). Attributes no valid model holds are reported through
    /// <paramref name="invalid"/>, which turns the reason into the caller's exception.
    /// </summary>
    public static ConvWindow Read(NodeProto n, long[]? input, long[]? weight, Func<string, Exception> invalid) =>
        TryRead(n, input, weight, out var why) ?? throw invalid(why!);

    /// <summary><see cref="Read"/> that returns null and the reason instead of throwing.</summary>
    public static ConvWindow? TryRead(NodeProto n, long[]? input, long[]? weight, out string? why)
    {
        why = null;
        bool conv = n.OpType is "Conv" or "ConvTranspose", transpose = n.OpType == "ConvTranspose";
        if (conv && input is not null && weight is not null && weight.Length != input.Length)
        {
            why = $"the weight has rank {weight.Length} but the input has rank {input.Length}";
            return null;
        }
        long[]? kernelAttr = n.GetInts("kernel_shape");
        int sp = input is not null ? input.Length - 2 : kernelAttr?.Length ?? (conv && weight is not null ? weight.Length - 2 : 0);
        if (sp < 1) { why = "the spatial rank is unknown (no input shape, kernel_shape or weight shape)"; return null; }
        long[]? kernelOrNull = kernelAttr is null ? conv && weight is not null && weight.Length == sp + 2 ? weight[2..].Select(d => d < 0 ? -1 : d).ToArray() : Repeat(-1, sp)
            : Exactly(kernelAttr, sp, "kernel_shape", ref why);
        long[]? stridesOrNull = Ints(n, "strides", sp, 1, ref why), dilOrNull = Ints(n, "dilations", sp, 1, ref why);
        long[]? padsOrNull = Ints(n, "pads", 2 * sp, 0, ref why);
        long[]? outPad = transpose ? Ints(n, "output_padding", sp, 0, ref why) : null;
        long[]? outShape = transpose ? n.GetInts("output_shape") is { Length: > 0 } os ? os : null : null;
        if (outShape is not null && outShape.Length < sp) why ??= $"output_shape has {outShape.Length} value(s) for {sp} spatial axes";
        if (why is not null) return null;
        long[] kernel = kernelOrNull!, strides = stridesOrNull!, dil = dilOrNull!, padsAttr = padsOrNull!;
        if (strides.Any(v => v < 1) || dil.Any(v => v < 1) || (kernelAttr is not null && kernel.Any(v => v < 1)))
        {
            why = $"kernel_shape [{string.Join(",", kernel)}], strides [{string.Join(",", strides)}] and dilations [{string.Join(",", dil)}] must be positive";
            return null;
        }
        string autoPad = n.GetString("auto_pad", "NOTSET");
        bool same = autoPad is "SAME_UPPER" or "SAME_LOWER", valid = autoPad == "VALID";
        bool ceil = !conv && n.GetInt("ceil_mode", 0) == 1;
        long[] inSize = input is null ? Repeat(-1, sp) : input[2..].Select(d => d < 0 ? -1 : d).ToArray();
        var w = new ConvWindow
        {
            Kernel = kernel, Strides = strides, Dilations = dil, Group = n.GetInt("group", 1), AutoPad = autoPad,
            OutputPadding = outPad, In = inSize, Out = Repeat(-1, sp),
        };
        var pads = valid && outShape is null ? new long[2 * sp] : (long[])padsAttr.Clone();
        bool padsKnown = true;
        for (int k = 0; k < sp; k++)
        {
            long inK = inSize[k], s = strides[k];
            bool known = inK >= 0 && kernel[k] >= 0;
            long extent = known ? w.Extent(k) : -1;
            if (transpose)
            {
                long full = s * (inK - 1) + outPad![k] + extent;
                long? target = outShape is not null ? outShape[^(sp - k)] : same && inK >= 0 ? inK * s : null;
                if (outShape is not null || same)
                {
                    // The total padding is split as ONNX Runtime splits it: SAME_UPPER puts the larger half at the end, every other mode at the beginning.
                    if (!known || target is null) { padsKnown = false; continue; }
                    long total = Math.Max(0, full - target.Value); // SAME beyond the full size stays full size
                    pads[k] = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2;
                    pads[sp + k] = total - pads[k];
                }
                if (known) w.Out[k] = full - pads[k] - pads[sp + k];
                continue;
            }
            if (same)
            {
                if (!known) { padsKnown = false; continue; }
                // Pad until the output has ceil(in / stride) positions; ONNX Runtime's pools size the padding from the undilated kernel.
                long target = (inK + s - 1) / s;
                long total = (target - 1) * s + (conv ? extent : kernel[k]) - inK;
                pads[k] = autoPad == "SAME_LOWER" ? (total + 1) / 2 : total / 2;
                pads[sp + k] = total - pads[k];
            }
            if (!known) continue;
            long span = inK + pads[k] + pads[sp + k] - extent;
            long outK = (ceil ? (span + s - 1) / s : span / s) + 1;
            // Ceil mode drops a last window that would start inside the end padding.
            if (ceil && (outK - 1) * s >= inK + pads[k]) outK--;
            w.Out[k] = outK;
        }
        return w with { Pads = padsKnown ? pads : null };
    }

    private static long[] Repeat(long value, int count) => Enumerable.Repeat(value, count).ToArray();

    private static long[]? Ints(NodeProto n, string name, int count, long fallback, ref string? why) =>
        n.GetInts(name) is { } v ? Exactly(v, count, name, ref why) : Repeat(fallback, count);

    private static long[]? Exactly(long[] values, int length, string name, ref string? why)
    {
        if (values.Length == length) return values;
        why ??= $"'{name}' has {values.Length} value(s); {length} expected";
        return null;
    }
}
