using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Autodiff.Rules;

/// <summary>
/// Convolutions: Conv and ConvTranspose, 1-D to 3-D, with strides, explicit or automatic
/// pads, dilations, groups (depthwise included) and optional bias. Every gradient is a
/// Conv or ConvTranspose itself (the stock runtime has no ConvGrad), except a pointwise
/// Conv's weight gradient, a MatMul. Which form each takes is a measured choice (README.md, Known costs).
/// </summary>
internal static class ConvRules
{
    public static void Register(GradientRegistry r)
    {
        r.Add("Conv", Conv);
        r.Add("ConvTranspose", ConvTranspose);
    }

    // Y = Conv(X, W) + B with X (N, C, S...), W (M, C/G, K...), Y (N, M, O...).
    private static void Conv(GradientContext c)
    {
        var win = Window.OfConv(c);
        long group = c.AttrInt("group", 1);
        if (c.Needs(0)) c.SetGrad(0, ConvInputGrad(c, win, group));
        if (c.Needs(1)) c.SetGrad(1, ConvWeightGrad(c, win, group));
        if (c.HasInput(2) && c.Needs(2)) c.SetGrad(2, c.Emit.ReduceSum(c.DY()!, Spatial.AllButChannel(win.Rank), keepDims: false));
    }

    // The adjoint in X is ConvTranspose with the same geometry; output_padding restores the
    // trailing positions the forward's floor division left uncovered.
    private static string ConvInputGrad(GradientContext c, ConvWindow win, long group)
    {
        var e = c.Emit;
        if (group == 1 && win.Strides.All(s => s == 1) && win.Axes.All(k => win.Begin(k) < win.Extent(k) && win.End(k) < win.Extent(k)))
            return ConvInputGradFlipped(c, win);
        string[] inputs = [c.DY()!, c.X(1)];
        if (win.StaticIn is { } inSize)
        {
            var outPad = win.Axes.Select(k => inSize[k] - (win.Strides[k] * (win.Out[k] - 1) + win.Extent(k) - win.Begin(k) - win.End(k))).ToArray();
            return e.Op("ConvTranspose", inputs, Spatial.Attrs(win.Strides, win.Dilations, win.Pads!, group, outPad));
        }
        // Sizes known only at run time: pad by stride − 1 (enough for any remainder), then crop to X.
        string dx = e.Op("ConvTranspose", inputs, Spatial.Attrs(win.Strides, win.Dilations, win.Pads!, group, win.Strides.Select(s => s - 1).ToArray()));
        return win.Strides.All(s => s == 1) ? dx : Spatial.CropLike(e, dx, c.X(0), win.Rank);
    }

    // Unit strides, one group: dX[n, c, i] = Σ_m Σ_k dY[n, m, i − k·d + p] · W[m, c, k] is the Conv of
    // dY with W's two channel axes swapped and its window flipped, pads d(K − 1) − p: the same size
    // as X, no crop. ONNX Runtime runs a Conv as MlasConv, threaded over the batch, where its
    // ConvTranspose threads each example's small GEMM and runs col2im on one thread.
    private static string ConvInputGradFlipped(GradientContext c, ConvWindow win)
    {
        var e = c.Emit;
        int sp = win.Rank;
        long[] axes = [.. Enumerable.Range(2, sp).Select(k => (long)k)];
        string swapped = Spatial.SwapBatchChannel(e, c.X(1), sp);                                   // (C, M, K...)
        string flipped = e.Op("Slice", [swapped, e.Int64s([.. axes.Select(_ => -1L)]), e.Int64s([.. axes.Select(_ => long.MinValue)]),
            e.Int64s(axes), e.Int64s([.. axes.Select(_ => -1L)])]);
        long[] pads = [.. win.Axes.Select(k => win.Extent(k) - 1 - win.Begin(k)), .. win.Axes.Select(k => win.Extent(k) - 1 - win.End(k))];
        // kernel_shape stated: a second reverse pass (the Jacobian-vector-product graph) differentiates this Conv too.
        return e.Op("Conv", [c.DY()!, flipped], [.. Spatial.Attrs([.. win.Strides], win.Dilations, pads, 1, null), Attributes.Ints("kernel_shape", win.Kernel)]);
    }

    // dW[m, c, k] = Σ_n Σ_o dY[n, m, o] · X̃[n, c, o·s + k·d] (X̃ padded). A pointwise window
    // (1×1..., unit strides, no pads) with W's shape static makes X its own patches: one batched
    // MatMul and a sum over the batch. A narrow unit-stride layer (few output channels, small
    // patches per example) takes im2col patches and the same MatMul (PatchesPay). Any other window
    // is one Conv. (Known costs in README.md.)
    private static string ConvWeightGrad(GradientContext c, ConvWindow win, long group)
    {
        if (group < 1 || c.Info(c.X(1))?.Shape is not { } w || w.Length != win.Rank + 2 || w.Any(d => d < 1) || w[0] % group != 0)
            return ConvWeightGradConv(c, win, group);
        if (win.Kernel.All(k => k == 1) && win.Strides.All(s => s == 1) && win.Pads!.All(p => p == 0))
            return ConvWeightGradPointwise(c, group, w);
        return PatchesPay(win, group, w) ? ConvWeightGradPatches(c, win, w) : ConvWeightGradConv(c, win, group);
    }

    /// <summary>The most output channels for which the patches form replaces the Conv (its GEMM has that many rows).</summary>
    internal const long PatchesMaxOutChannels = 16;

    /// <summary>The fewest output positions per example for which the patches form replaces the Conv.</summary>
    internal const long PatchesMinPositions = 64;

    /// <summary>The most patch values per example the patches form may materialise (c_in·Π k · Π out: 256 KiB in float32).</summary>
    internal const long PatchesMaxPerExample = 1 << 16;

    // The Conv form runs as one GEMM per input channel with c_out rows and Π k columns over a
    // N·Π out reduction, which leaves most of MLAS's kernel idle when c_out is small: on the ResNet
    // fixture (8 → 8 channels, 3×3 on 12×12) im2col patches and a batched MatMul made the whole step
    // 10–21% faster (BENCHMARKS.md section 3, sixth session). The gain is in the long skinny
    // reductions (many output positions per example); patches cost c_in·Π k times the input, so only
    // one group, unit strides, few output channels, and static output sizes neither too small nor
    // too large.
    private static bool PatchesPay(ConvWindow win, long group, long[] w)
    {
        if (group != 1 || w[0] > PatchesMaxOutChannels || win.Strides.Any(s => s != 1) || win.StaticIn is not { } input) return false;
        long positions = 1;
        foreach (int k in win.Axes) positions *= Math.Max(0, input[k] + win.Begin(k) + win.End(k) - win.Extent(k) + 1);
        long perExample = w[1] * positions;
        foreach (long k in win.Kernel) perExample *= k;
        return positions >= PatchesMinPositions && perExample <= PatchesMaxPerExample;
    }

    // im2col as one depthwise Conv with a one-hot filter per (channel, kernel offset) (as
    // Training/Patches.cs): P (N, C·K, O); per example dY (M, O) · Pᵀ (O, C·K), summed over the batch.
    private static string ConvWeightGradPatches(GradientContext c, ConvWindow win, long[] w)
    {
        var e = c.Emit;
        long channels = w[1], k = win.Kernel.Aggregate(1L, (a, b) => a * b);
        var tensor = Spatial.Im2ColKernel(channels, win.Kernel, EmitterState.FloatType(c.Info(c.X(0))?.ElemType ?? 0));
        string patches = e.Op("Conv", [c.X(0), e.Constant(tensor)],
            [.. Spatial.Attrs([.. win.Strides], win.Dilations, win.Pads!, channels, null), Attributes.Ints("kernel_shape", win.Kernel)]);
        string dy = e.Reshape(c.DY()!, e.Int64s(0, w[0], -1));
        string pt = e.Transpose(e.Reshape(patches, e.Int64s(0, channels * k, -1)), [0, 2, 1]);
        return e.Reshape(e.ReduceSum(e.MatMul(dy, pt), [0], keepDims: false), e.Int64s(w));
    }

    // Per example and group dY (M/G, S) · Xᵀ (S, C/G), summed over the batch: (G, M/G, C/G) is W's layout.
    private static string ConvWeightGradPointwise(GradientContext c, long group, long[] w)
    {
        var e = c.Emit;
        long[] lead = group == 1 ? [0] : [0, group]; // (N, rows, S) or (N, G, rows, S)
        string dy = e.Reshape(c.DY()!, e.Int64s([.. lead, w[0] / group, -1]));
        string xt = e.Transpose(e.Reshape(c.X(0), e.Int64s([.. lead, w[1], -1])), group == 1 ? [0, 2, 1] : [0, 1, 3, 2]);
        return e.Reshape(e.ReduceSum(e.MatMul(dy, xt), [0], keepDims: false), e.Int64s(w));
    }

    // A Conv over X with batch and channels swapped and dY as the kernel, strides and dilations exchanged.
    private static string ConvWeightGradConv(GradientContext c, ConvWindow win, long group)
    {
        var e = c.Emit;
        int sp = win.Rank;
        var pads = (long[])win.Pads!.Clone();
        if (win.StaticIn is { } inSize)
            foreach (int k in win.Axes) // drop end padding no window reaches
                pads[sp + k] = Math.Max(0, win.End(k) - (inSize[k] + win.Begin(k) + win.End(k) - win.Extent(k)) % win.Strides[k]);
        string xs = Spatial.GroupsToBatch(c, c.X(0), group, sp);
        string dw = e.Op("Conv", [xs, Spatial.SwapBatchChannel(e, c.DY()!, sp)], Spatial.Attrs(win.Dilations, win.Strides, pads, group, null));
        // The result covers at least the kernel; crop when it is (or may be) larger.
        bool exact = win.StaticIn is { } s && win.Axes.All(k =>
            (s[k] + win.Begin(k) + pads[sp + k] - (win.Strides[k] * (win.Out[k] - 1) + 1)) / win.Dilations[k] + 1 == win.Kernel[k]);
        return Spatial.SwapBatchChannel(e, exact ? dw : Spatial.Crop(e, dw, win.Kernel), sp);
    }

    // Y = ConvTranspose(X, W) + B with X (N, C, S...), W (C, M/G, K...), Y (N, M, O...): the
    // adjoint of Conv(·, W) with the same geometry, so dX is that Conv.
    private static void ConvTranspose(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0), w = c.X(1), dy = c.DY()!;
        var win = Window.OfConvTranspose(c);
        long[] outPad = win.OutputPadding!;
        long group = c.AttrInt("group", 1);
        if (c.Needs(0))
        {
            string dx = e.Op("Conv", [dy, w], Spatial.Attrs(win.Strides, win.Dilations, win.Pads!, group, null));
            // Conv of the full output gives S + floor(output_padding / stride) positions.
            if (win.Axes.Any(k => outPad[k] >= win.Strides[k])) dx = win.StaticIn is { } s ? Spatial.Crop(e, dx, s) : Spatial.CropLike(e, dx, x, win.Rank);
            c.SetGrad(0, dx);
        }
        if (c.Needs(1))
        {
            // dW[c, m, k] = Σ_n Σ_i X[n, c, i] · dỸ[n, m, i·s + k·d] (dỸ padded back): the Conv-weight
            // formula with the roles of input and output gradient exchanged.
            string ds = Spatial.GroupsToBatch(c, dy, group, win.Rank);
            string dw = e.Op("Conv", [ds, Spatial.SwapBatchChannel(e, x, win.Rank)], Spatial.Attrs(win.Dilations, win.Strides, win.Pads!, group, null));
            // Size K + floor(output_padding / dilation).
            if (win.Axes.Any(k => outPad[k] >= win.Dilations[k])) dw = Spatial.Crop(e, dw, win.Kernel);
            c.SetGrad(1, Spatial.SwapBatchChannel(e, dw, win.Rank));
        }
        if (c.HasInput(2) && c.Needs(2)) c.SetGrad(2, e.ReduceSum(dy, Spatial.AllButChannel(win.Rank), keepDims: false));
    }
}

/// <summary>
/// A conv or pool window (<see cref="ConvWindow"/>) read for a gradient rule, with what the
/// rules need on top: a known kernel, pads resolved (auto_pad and output_shape need static
/// spatial sizes) and non-negative. Errors name the node.
/// </summary>
internal static class Window
{
    public static ConvWindow OfConv(GradientContext c)
    {
        var w = Read(c, c.Info(c.X(1))?.Shape);
        if (w.Kernel.Any(k => k < 1))
            throw c.Unsupported($"the gradient needs the kernel size: add kernel_shape or give '{c.X(1)}' a static shape");
        return Resolved(c, w);
    }

    /// <summary>ConvTranspose: pads are explicit unless output_shape or SAME_* fixes the output size.</summary>
    public static ConvWindow OfConvTranspose(GradientContext c)
    {
        var w = OfConv(c);
        if (w.OutputPadding!.Any(p => p < 0)) throw c.Unsupported($"output_padding must hold {w.Rank} non-negative entries");
        return w;
    }

    /// <summary>MaxPool/AveragePool; in ceil mode the sizes must be static.</summary>
    public static ConvWindow OfPool(GradientContext c)
    {
        if (c.AttrInts("kernel_shape") is null) throw c.Unsupported("kernel_shape is missing");
        var w = Resolved(c, Read(c, null));
        if (w.StaticIn is null && c.AttrInt("ceil_mode", 0) == 1) throw NeedsStatic(c, "ceil_mode");
        return w;
    }

    private static ConvWindow Read(GradientContext c, long[]? weight)
    {
        int sp = c.Rank(c.X(0)) - 2;
        if (sp < 1) throw c.Unsupported($"input '{c.X(0)}' has rank {sp + 2}; it needs (N, C, spatial...)");
        return ConvWindow.Read(c.Node, c.Info(c.X(0))?.Shape, weight, c.Unsupported);
    }

    private static ConvWindow Resolved(GradientContext c, ConvWindow w)
    {
        if (w.Pads is null) throw NeedsStatic(c, c.AttrInts("output_shape") is { Length: > 0 } ? "output_shape" : w.AutoPad);
        if (w.Pads.Any(p => p < 0)) throw c.Unsupported($"pads must hold {2 * w.Rank} non-negative entries, got [{string.Join(",", w.Pads)}]");
        return w;
    }

    private static UnsupportedOpException NeedsStatic(GradientContext c, string what) =>
        c.Unsupported($"{what} needs the spatial size of '{c.X(0)}', which is not known statically (add value_info with shapes to the model)");
}

/// <summary>Small shared pieces of the convolution and pooling rules.</summary>
internal static class Spatial
{
    /// <summary>
    /// The kernel that makes a depthwise Conv (group = <paramref name="channels"/>) im2col: one one-hot
    /// filter per (channel, kernel offset), shape [C·Π k, 1, k...], so the Conv's output channel c·Π k + j
    /// is channel c at offset j (the layout of a weight flattened to [C_out, C_in · Π k]).
    /// </summary>
    public static TensorProto Im2ColKernel(long channels, long[] kernel, int elemType)
    {
        long k = kernel.Aggregate(1L, (a, b) => a * b);
        long[] shape = [channels * k, 1, .. kernel];
        if (elemType == (int)TensorProto.Types.DataType.Double)
        {
            var d = new double[channels * k * k];
            for (long i = 0; i < channels * k; i++) d[i * k + i % k] = 1;
            return TensorData.FromDoubles("im2col_kernel", shape, d);
        }
        var f = new float[channels * k * k];
        for (long i = 0; i < channels * k; i++) f[i * k + i % k] = 1;
        return TensorData.FromFloats("im2col_kernel", shape, f);
    }

    public static AttributeProto[] Attrs(long[] strides, long[] dilations, long[] pads, long group, long[]? outputPadding)
    {
        var a = new List<AttributeProto> { Attributes.Ints("strides", strides), Attributes.Ints("dilations", dilations), Attributes.Ints("pads", pads) };
        if (group != 1) a.Add(Attributes.Int("group", group));
        if (outputPadding is not null && outputPadding.Any(p => p != 0)) a.Add(Attributes.Ints("output_padding", outputPadding));
        return a.ToArray();
    }

    /// <summary>The spatial dims of a tensor ignoring the (often dynamic) batch: null unless all are static.</summary>
    public static long[]? StaticSpatial(GradientContext c, string t) =>
        c.Info(t)?.Shape is { Length: > 2 } s && s[2..].All(d => d >= 0) ? s[2..] : null;

    public static long[] AllButChannel(int spatialRank) => [0, .. Enumerable.Range(2, spatialRank).Select(k => (long)k)];

    private static long[] SpatialAxes(int spatialRank) => Enumerable.Range(2, spatialRank).Select(k => (long)k).ToArray();

    /// <summary>(A, B, S...) → (B, A, S...).</summary>
    public static string SwapBatchChannel(NodeEmitter e, string t, int spatialRank) =>
        e.Transpose(t, [1, 0, .. SpatialAxes(spatialRank)]);

    /// <summary>The first <paramref name="sizes"/> positions of every spatial axis.</summary>
    public static string Crop(NodeEmitter e, string t, long[] sizes) =>
        e.Op("Slice", [t, e.Int64s(new long[sizes.Length]), e.Int64s(sizes), e.Int64s(SpatialAxes(sizes.Length))]);

    /// <summary>Crops the spatial axes to those of <paramref name="like"/>, read at run time.</summary>
    public static string CropLike(NodeEmitter e, string t, string like, int spatialRank) =>
        e.Op("Slice", [t, e.Int64s(new long[spatialRank]), e.Op("Shape", [like], Attributes.Int("start", 2)), e.Int64s(SpatialAxes(spatialRank))]);

    /// <summary>A shape tensor: <paramref name="lead"/> followed by the spatial dims of <paramref name="like"/> (static when known).</summary>
    public static string LeadPlusSpatial(GradientContext c, long[] lead, string like, int spatialRank)
    {
        var e = c.Emit;
        if (StaticSpatial(c, like) is { } s) return e.Int64s([.. lead, .. s]);
        return e.Op("Concat", [e.Int64s(lead), e.Op("Shape", [like], Attributes.Int("start", 2))], Attributes.Int("axis", 0));
    }

    /// <summary>
    /// (N, G·P, S...) → (P, G·N, S...), channel index (g, n): the layout a grouped Conv with
    /// G groups needs when the batch becomes its channels. One Transpose when G = 1. P is
    /// dimension 1 of the node's weight, static when known, else read at run time.
    /// </summary>
    public static string GroupsToBatch(GradientContext c, string t, long group, int spatialRank)
    {
        var e = c.Emit;
        if (group == 1) return SwapBatchChannel(e, t, spatialRank);
        long[] perm = [2, 1, 0, .. Enumerable.Range(3, spatialRank).Select(k => (long)k)];
        if (c.Info(c.X(1))?.Shape is { Length: > 1 } w && w[1] >= 0)
        {
            string split = e.Reshape(t, LeadPlusSpatial(c, [0, group, w[1]], t, spatialRank));
            return e.Reshape(e.Transpose(split, perm), LeadPlusSpatial(c, [w[1], -1], t, spatialRank));
        }
        // P known only at run time (the weight is itself computed, e.g. a gradient that a second
        // reverse pass differentiates): read it and the spatial dims from the tensors.
        string p = e.Op("Shape", [c.X(1)], Attributes.Int("start", 1), Attributes.Int("end", 2));
        string spatial = e.Op("Shape", [t], Attributes.Int("start", 2));
        string bySplit = e.Reshape(t, e.Op("Concat", [e.Int64s(0, group), p, spatial], Attributes.Int("axis", 0)));
        return e.Reshape(e.Transpose(bySplit, perm), e.Op("Concat", [p, e.Int64s(-1), spatial], Attributes.Int("axis", 0)));
    }
}
