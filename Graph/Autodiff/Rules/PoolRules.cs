using OnnxKfac.Graph.Model;

namespace OnnxKfac.Graph.Autodiff.Rules;

/// <summary>Pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.</summary>
internal static class PoolRules
{
    public static void Register(GradientRegistry r)
    {
        r.Add("MaxPool", MaxPool);
        r.Add("AveragePool", AveragePool);
        r.Add("GlobalAveragePool", GlobalAveragePool);
        r.Add("GlobalMaxPool", GlobalMaxPool);
    }

    // dX scatters dY onto the arg-max of each window. The forward node is made to emit its
    // Indices, which ONNX Runtime numbers flat over N·C·H·W of the unpadded input, so one
    // ScatterElements with reduction="add" (overlapping windows) does it for any geometry.
    private static void MaxPool(GradientContext c)
    {
        if (c.AttrInt("storage_order", 0) != 0) throw c.Unsupported("storage_order=1 (column-major Indices) is not supported");
        var e = c.Emit;
        string x = c.X(0), indices = c.RequestForwardOutput(1);
        string zeros = e.Op("ConstantOfShape", [e.Reshape(e.Op("Size", [x]), e.Int64s(1))],
            Attributes.Tensor("value", TensorData.Scalar("value", c.ElemType(x), 0, asVector: true)));
        string scattered = e.Op("ScatterElements", [zeros, e.Reshape(indices, e.Int64s(-1)), e.Reshape(c.DY()!, e.Int64s(-1))],
            Attributes.Int("axis", 0), Attributes.String("reduction", "add"));
        c.SetGrad(0, e.Reshape(scattered, e.Shape(x)));
    }

    // Y[o] = Σ_{i ∈ window(o)} X[i] / n(o). With channels folded into the batch, dX is a
    // ConvTranspose of dY/n with a ones kernel. 1/n(o) is read off the runtime itself:
    // AveragePool(ones) / (real elements per window), so count_include_pad, ceil mode and
    // clipped windows divide exactly as the forward did.
    private static void AveragePool(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0), dy = c.DY()!;
        var win = Window.OfPool(c);
        int sp = win.Rank;
        // Extend the end padding over ceil-mode windows that overhang the padded input.
        var pads = (long[])win.Pads!.Clone();
        if (win.StaticIn is { } inSize)
            foreach (int k in win.Axes)
                pads[sp + k] = Math.Max(pads[sp + k], (win.Out[k] - 1) * win.Strides[k] + win.Extent(k) - inSize[k] - win.Begin(k));
        string kernel = Ones(c, e.Int64s([1, 1, .. win.Kernel]));
        string ones = Ones(c, Spatial.LeadPlusSpatial(c, [1, 1], x, sp));
        string averaged = e.Op("AveragePool", [ones], c.Node.Attribute.Select(a => a.Clone()).ToArray());
        // In ceil mode the runtime's kernel drops a last window starting inside the end
        // padding but its static shape inference keeps it: a (run-time no-op) crop makes
        // the two agree.
        if (c.AttrInt("ceil_mode", 0) == 1) averaged = Spatial.Crop(e, averaged, win.Out);
        string real = e.Op("Conv", [ones, kernel], Spatial.Attrs(win.Strides, win.Dilations, pads, 1, null));
        string scale = e.Div(averaged, e.Op("Max", [real, c.Scalar(1, x)]));

        string folded = e.Mul(e.Reshape(dy, Spatial.LeadPlusSpatial(c, [-1, 1], dy, sp)), scale);
        string dx;
        if (win.StaticIn is { } inS)
        {
            var outPad = win.Axes.Select(k => inS[k] - ((win.Out[k] - 1) * win.Strides[k] + win.Extent(k) - win.Begin(k) - pads[sp + k])).ToArray();
            dx = e.Op("ConvTranspose", [folded, kernel], Spatial.Attrs(win.Strides, win.Dilations, pads, 1, outPad));
        }
        else
        {
            dx = e.Op("ConvTranspose", [folded, kernel], Spatial.Attrs(win.Strides, win.Dilations, pads, 1, win.Strides.Select(st => st - 1).ToArray()));
            if (win.Strides.Any(st => st != 1)) dx = Spatial.CropLike(e, dx, x, sp);
        }
        c.SetGrad(0, e.Reshape(dx, e.Shape(x)));
    }

    // dX = dY / (H·W...) broadcast over the spatial axes.
    private static void GlobalAveragePool(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0), dy = c.DY()!;
        string count = Spatial.StaticSpatial(c, x) is { } s
            ? c.Scalar(s.Aggregate(1L, (p, d) => p * d), x)
            : e.Cast(e.Op("ReduceProd", [e.Op("Shape", [x], Attributes.Int("start", 2))], Attributes.Int("keepdims", 0)), c.ElemType(x));
        c.SetGrad(0, e.Op("Expand", [e.Div(dy, count), e.Shape(x)]));
    }

    // dX puts dY at the first maximum of each (n, c) plane, like MaxPool's Indices.
    private static void GlobalMaxPool(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0);
        string planes = e.Reshape(x, e.Int64s(0, 0, -1));
        string argmax = e.Op("ArgMax", [planes], Attributes.Int("axis", 2), Attributes.Int("keepdims", 1), Attributes.Int("select_last_index", 0));
        string scattered = e.Op("ScatterElements", [e.ZerosLike(planes, c.ElemType(x)), argmax, e.Reshape(c.DY()!, e.Int64s(0, 0, -1))], Attributes.Int("axis", 2));
        c.SetGrad(0, e.Reshape(scattered, e.Shape(x)));
    }

    private static string Ones(GradientContext c, string shape) =>
        c.Emit.Op("ConstantOfShape", [shape], Attributes.Tensor("value", TensorData.Scalar("value", c.ElemType(c.X(0)), 1, asVector: true)));
}
