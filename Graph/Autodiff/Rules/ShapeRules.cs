using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Autodiff.Rules;

/// <summary>
/// Data movement: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice,
/// Gather, GatherElements, GatherND, Expand, Tile, Pad, ScatterElements, ScatterND, Trilu. Shapes, axes, indices, pads and
/// slice bounds are not differentiable. Static shapes are used when known, Shape-based
/// arithmetic otherwise, so dynamic (batch) dimensions work.
/// </summary>
internal static class ShapeRules
{
    public static void Register(GradientRegistry r)
    {
        foreach (var op in new[] { "Reshape", "Flatten", "Squeeze", "Unsqueeze" })
            r.Add(op, c => c.SetGrad(0, ReshapeLike(c, c.DY()!, c.X(0))), differentiableInputs: [0]);
        r.Add("Transpose", Transpose, differentiableInputs: [0]);
        r.Add("Concat", Concat);
        r.Add("Split", Split, differentiableInputs: [0]);
        r.Add("Slice", Slice, differentiableInputs: [0]);
        r.Add("Gather", Gather, differentiableInputs: [0]);
        r.Add("GatherElements", c => c.SetGrad(0, c.Emit.Op("ScatterElements", [ZerosLike(c, c.X(0)), c.X(1), c.DY()!],
            Attributes.Int("axis", c.AttrInt("axis", 0)), Attributes.String("reduction", "add"))), differentiableInputs: [0]);
        r.Add("GatherND", GatherND, differentiableInputs: [0]);
        r.Add("Expand", c => c.SetGrad(0, c.Unbroadcast(c.DY()!, c.X(0))), differentiableInputs: [0]);
        r.Add("Tile", Tile, differentiableInputs: [0]);
        r.Add("Pad", Pad, differentiableInputs: [0]);
        r.Add("ScatterElements", Scatter, differentiableInputs: [0, 2]);
        r.Add("ScatterND", Scatter, differentiableInputs: [0, 2]);
        // Trilu keeps a triangle (a causal mask): the gradient keeps the same triangle.
        r.Add("Trilu", c => c.SetGrad(0, c.Emit.Op("Trilu", c.HasInput(1) ? [c.DY()!, c.X(1)] : [c.DY()!],
            Attributes.Int("upper", c.AttrInt("upper", 1)))), differentiableInputs: [0]);
        r.Add("Resize", Resize, differentiableInputs: [0]);
    }

    // Y = Resize(X) with constant scales or sizes is linear in X and separable (ONNX interpolates
    // one axis at a time, for every mode: nearest, linear, cubic, antialiased), Y = X ×_d R_d over
    // the resized axes d with R_d the L'×L interpolation matrix of axis d. So dX = dY ×_d R_dᵀ.
    // R_d is read off ONNX Runtime's own Resize, with the node's attributes, applied along d
    // alone to the identity basis (a constant input, which ONNX Runtime folds once): no
    // coordinate-transformation or interpolation formula is written twice.
    private static void Resize(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0);
        var shape = StaticShape(c, x) ?? throw c.Unsupported("the input's shape must be known statically (export with fixed sizes)");
        if (c.AttrString("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize")
            throw c.Unsupported("coordinate_transformation_mode tf_crop_and_resize (a region of interest) has no rule");
        if (c.Node.Attribute.Any(a => a.Name == "axes"))
            throw c.Unsupported("the 'axes' attribute has no rule (give scales or sizes for every axis)");
        if (c.AttrString("keep_aspect_ratio_policy", "stretch") != "stretch")
            throw c.Unsupported("keep_aspect_ratio_policy other than stretch has no rule");
        double[]? scales = c.HasInput(2) ? c.ConstValues(2) : null;
        long[]? sizes = c.HasInput(3) ? c.ConstInput(3) : null;
        if (scales is { Length: 0 }) scales = null;
        if (sizes is { Length: 0 }) sizes = null;
        if ((scales is null && sizes is null) || (scales ?? (object)sizes!) is Array { Length: var n } && n != shape.Length)
            throw c.Unsupported("scales or sizes must be constants with one entry per axis");
        int rank = shape.Length, type = c.ElemType(x);
        var attributes = c.Node.Attribute.ToArray();
        string g = c.DY();
        for (int d = 0; d < rank; d++)
        {
            long length = shape[d], resized = sizes is not null ? sizes[d] : (long)Math.Floor(shape[d] * scales![d]);
            if (sizes is not null ? resized == length : scales![d] == 1.0) continue;
            if (d == 0) throw c.Unsupported("resizing the batch axis has no rule");
            // The basis: [L, 1, …, L (axis d), …, 1], example k holding e_k along d.
            var basisShape = Enumerable.Repeat(1L, rank).ToArray();
            basisShape[0] = length;
            basisShape[d] = length;
            var eye = new double[length * length];
            for (int k = 0; k < length; k++) eye[k * length + k] = 1;
            string basis = e.Constant(type == (int)TensorProto.Types.DataType.Double
                ? TensorData.FromDoubles("resize_basis", basisShape, eye)
                : TensorData.FromFloats("resize_basis", basisShape, [.. eye.Select(v => (float)v)]));
            string along;
            if (sizes is not null)
            {
                var basisSizes = (long[])basisShape.Clone();
                basisSizes[d] = resized;
                along = e.Op("Resize", [basis, "", "", e.Int64s(basisSizes)], attributes);
            }
            else
            {
                var basisScales = Enumerable.Repeat(1f, rank).ToArray();
                basisScales[d] = (float)scales![d];
                along = e.Op("Resize", [basis, "", e.Constant(TensorData.FromFloats("resize_scales", [rank], basisScales))], attributes);
            }
            // along[k, …, j, …] = R_d[j, k]: as [L, L'] it is R_dᵀ, the matrix dY's axis d meets.
            string rt = e.Reshape(along, e.Int64s(length, resized));
            var toLast = Enumerable.Range(0, rank).Where(a => a != d).Append(d).Select(a => (long)a).ToArray();
            var back = new long[rank];
            for (int a = 0; a < rank; a++) back[toLast[a]] = a;
            g = e.Transpose(e.MatMul(e.Transpose(g, toLast), e.Transpose(rt, [1, 0])), back);
        }
        c.SetGrad(0, g);
    }

    // ---- helpers ---------------------------------------------------------------------------

    /// <summary>The shape of <paramref name="x"/> when every dimension is known statically.</summary>
    internal static long[]? StaticShape(GradientContext c, string x) =>
        c.Info(x)?.Shape is { } s && s.All(d => d >= 0) ? s : null;

    /// <summary>The shape of <paramref name="x"/> as a 1-D int64 tensor: a constant when known, else Shape(x).</summary>
    internal static string ShapeOf(GradientContext c, string x) =>
        StaticShape(c, x) is { } s ? c.Emit.Int64s(s) : c.Emit.Shape(x);

    /// <summary>Dimension <paramref name="axis"/> of <paramref name="x"/> as a 1-D int64 tensor of one element.</summary>
    private static string DimOf(GradientContext c, string x, int axis) =>
        c.Info(x)?.Shape is { } s && axis < s.Length && s[axis] >= 0
            ? c.Emit.Int64s(s[axis])
            : c.Emit.Op("Shape", [x], Attributes.Int("start", axis), Attributes.Int("end", axis + 1));

    /// <summary>Reshapes <paramref name="g"/> to the shape of <paramref name="like"/> (no node when statically equal).</summary>
    internal static string ReshapeLike(GradientContext c, string g, string like)
    {
        var e = c.Emit;
        if (StaticShape(c, like) is { } s)
        {
            if (c.Info(g)?.Shape is { } gs && gs.SequenceEqual(s)) return g;
            return s.Contains(0) ? e.Op("Reshape", [g, e.Int64s(s)], Attributes.Int("allowzero", 1)) : e.Reshape(g, e.Int64s(s));
        }
        return e.Op("Reshape", [g, e.Shape(like)], Attributes.Int("allowzero", 1));
    }

    /// <summary>Zeros shaped like <paramref name="x"/> in its float type.</summary>
    private static string ZerosLike(GradientContext c, string x) => Zeros(c, ShapeOf(c, x), c.ElemType(x));

    private static string Zeros(GradientContext c, string shape, int elemType) =>
        c.Emit.Op("ConstantOfShape", [shape], Attributes.Tensor("value", TensorData.Scalar("value", elemType, 0, asVector: true)));

    private static int NormAxis(GradientContext c, long axis, string tensor) => c.Axis(axis, c.Rank(tensor));

    /// <summary>
    /// The adjoint of an index-moving op by running the forward op itself on the grid of flat
    /// indices of <paramref name="x"/>: each output element learns which input element it came
    /// from, and the gradient is scattered back there (summed when an element is used twice).
    /// Serves every form of Slice and the reflect/edge/wrap modes of Pad.
    /// </summary>
    private static string ScatterThroughIndexGrid(GradientContext c, string dy, string x, bool accumulate)
    {
        var e = c.Emit;
        string shape = ShapeOf(c, x);
        string size = e.Op("Size", [x]);
        string ids = e.Op("Range", [e.Int64(0), size, e.Int64(1)]);
        var inputs = c.Node.Input.ToArray();
        inputs[0] = e.Op("Reshape", [ids, shape], Attributes.Int("allowzero", 1));
        if (c.Node.OpType == "Pad" && inputs.Length > 2) inputs[2] = ""; // a float constant_value: unused outside constant mode
        string moved = e.Op(c.Node.OpType, inputs, c.Node.Attribute.Select(a => a.Clone()).ToArray());
        string flat = e.Int64s(-1);
        string zeros = Zeros(c, c.Info(x)?.ElementCount is { } n ? e.Int64s(n) : e.Reshape(size, flat), c.ElemType(x));
        var attrs = new List<AttributeProto> { Attributes.Int("axis", 0) };
        if (accumulate) attrs.Add(Attributes.String("reduction", "add"));
        string scattered = e.Op("ScatterElements", [zeros, e.Reshape(moved, flat), e.Reshape(dy, flat)], attrs.ToArray());
        return e.Op("Reshape", [scattered, shape], Attributes.Int("allowzero", 1));
    }

    // ---- rules -----------------------------------------------------------------------------

    private static void Transpose(GradientContext c)
    {
        // No perm: the forward reversed the axes, and reversing again is the inverse.
        if (c.AttrInts("perm") is not { } perm) { c.SetGrad(0, c.Emit.Op("Transpose", [c.DY()!])); return; }
        var inverse = new long[perm.Length];
        var axes = perm.Select(p => p < 0 ? p + perm.Length : p).ToArray();
        if (axes.Any(a => a < 0 || a >= perm.Length) || axes.Distinct().Count() != perm.Length)
            throw c.Unsupported($"perm [{string.Join(",", perm)}] is not a permutation of the axes");
        for (int k = 0; k < perm.Length; k++) inverse[axes[k]] = k;
        c.SetGrad(0, c.Emit.Transpose(c.DY()!, inverse));
    }

    // Y = Concat(X_0..X_n-1, axis): split dY by the input sizes along the axis (static or from Shape).
    private static void Concat(GradientContext c)
    {
        var e = c.Emit;
        int n = c.InputCount;
        if (n == 1) { c.SetGrad(0, c.DY()!); return; }
        int axis = NormAxis(c, c.AttrInt("axis", 0), c.X(0));
        var known = Enumerable.Range(0, n).Select(k => c.Info(c.X(k))?.Shape is { } s && axis < s.Length ? s[axis] : -1).ToArray();
        string split = known.All(d => d >= 0)
            ? e.Int64s(known)
            : e.Op("Concat", Enumerable.Range(0, n).Select(k => DimOf(c, c.X(k), axis)), Attributes.Int("axis", 0));
        var parts = e.Ops("Split", [c.DY()!, split], n, Attributes.Int("axis", axis));
        for (int k = 0; k < n; k++) c.SetGrad(k, parts[k]);
    }

    // Y_0..Y_n-1 = Split(X, axis): concatenate the output gradients (zeros where none flows).
    private static void Split(GradientContext c)
    {
        var grads = Enumerable.Range(0, c.Node.Output.Count).Select(k =>
            c.Y(k).Length == 0 ? throw c.Unsupported($"output {k} has no name, so its size is unknown to the gradient") : c.DYOrZeros(k));
        c.SetGrad(0, c.Emit.Op("Concat", grads.ToArray(), Attributes.Int("axis", c.AttrInt("axis", 0))));
    }

    // Step-1 slices with known bounds on static axes: Pad the gradient back with zeros.
    // Anything else (other steps, dynamic bounds or dims): scatter through the index grid.
    private static void Slice(GradientContext c)
    {
        var starts = c.ConstInput(1);
        var ends = c.ConstInput(2);
        var axes = c.HasInput(3) ? c.ConstInput(3) : starts is null ? null : Enumerable.Range(0, starts.Length).Select(k => (long)k).ToArray();
        var steps = c.HasInput(4) ? c.ConstInput(4) : starts?.Select(_ => 1L).ToArray();
        var shape = c.Info(c.X(0))?.Shape;
        if (starts is not null && ends is not null && axes is not null && steps is not null && shape is not null
            && steps.All(s => s == 1) && axes.Length == starts.Length && ends.Length == starts.Length)
        {
            int rank = shape.Length;
            var pads = new long[2 * rank];
            bool ok = true;
            for (int k = 0; k < starts.Length && ok; k++)
            {
                int ax = (int)(axes[k] < 0 ? axes[k] + rank : axes[k]);
                long dim = ax >= 0 && ax < rank ? shape[ax] : -1;
                if (dim < 0) { ok = false; break; }
                long b = Math.Clamp(starts[k] < 0 ? starts[k] + dim : starts[k], 0, dim);
                long len = ShapeInference.SliceLength(dim, starts[k], ends[k], 1);
                pads[ax] = b;
                pads[ax + rank] = dim - b - len;
            }
            if (ok)
            {
                c.SetGrad(0, c.Emit.Op("Pad", [c.DY()!, c.Emit.Int64s(pads)], Attributes.String("mode", "constant")));
                return;
            }
        }
        c.SetGrad(0, ScatterThroughIndexGrid(c, c.DY()!, c.X(0), accumulate: false));
    }

    // Y = Gather(X, I, axis). Axis 0 (embedding tables): ScatterND of dY rows into zeros, summing
    // duplicate indices. Other axes: ScatterElements along the axis with the index dims flattened.
    private static void Gather(GradientContext c)
    {
        var e = c.Emit;
        string x = c.X(0), idx = c.X(1), dy = c.DY()!;
        long axisAttr = c.AttrInt("axis", 0);
        int axis = axisAttr == 0 ? 0 : NormAxis(c, axisAttr, x);
        if (axis == 0)
        {
            if (c.Info(idx)?.ElemType is not (int)TensorProto.Types.DataType.Int64) idx = e.Cast(idx, (int)TensorProto.Types.DataType.Int64);
            if (c.ConstInput(1) is not { } values || values.Any(v => v < 0))
            {
                // Wrap negative indices as Gather does; ScatterND's spec does not promise to.
                string dim = e.Op("Squeeze", [DimOf(c, x, 0)]);
                idx = e.Op("Mod", [e.Add(idx, dim), dim]);
            }
            string rows = e.Op("Unsqueeze", [idx, e.Int64s(-1)]);
            c.SetGrad(0, e.Op("ScatterND", [ZerosLike(c, x), rows, dy], Attributes.String("reduction", "add")));
            return;
        }
        int rank = c.Rank(x);
        // dY: X[:axis] + I + X[axis+1:]  →  X[:axis] + [prod I] + X[axis+1:]
        string flatShape = StaticShape(c, x) is { } s
            ? e.Int64s(s.Select((d, k) => k == axis ? -1 : d).ToArray())
            : e.Op("Concat", [e.Op("Shape", [x], Attributes.Int("start", 0), Attributes.Int("end", axis)), e.Int64s(-1),
                e.Op("Shape", [x], Attributes.Int("start", axis + 1))], Attributes.Int("axis", 0));
        string dyFlat = e.Reshape(dy, flatShape);
        var idxShape = Enumerable.Range(0, rank).Select(k => k == axis ? -1L : 1L).ToArray();
        string flatDims = StaticShape(c, x) is { } xs && c.Info(idx)?.ElementCount is { } count
            ? e.Int64s(xs.Select((d, k) => k == axis ? count : d).ToArray())
            : e.Shape(dyFlat);
        string idxFlat = e.Op("Expand", [e.Reshape(idx, e.Int64s(idxShape)), flatDims]);
        c.SetGrad(0, e.Op("ScatterElements", [ZerosLike(c, x), idxFlat, dyFlat],
            Attributes.Int("axis", axis), Attributes.String("reduction", "add")));
    }

    private static void GatherND(GradientContext c)
    {
        if (c.AttrInt("batch_dims", 0) != 0) throw c.Unsupported("GatherND with batch_dims != 0 has no gradient rule");
        var e = c.Emit;
        string idx = c.X(1);
        if ((c.ConstInput(1) is not { } values || values.Any(v => v < 0)) && c.Info(idx)?.Shape is [.., var k and > 0])
        {
            // Wrap negative indices, which GatherND allows and ScatterND's spec does not promise.
            string dims = e.Op("Shape", [c.X(0)], Attributes.Int("start", 0), Attributes.Int("end", (int)k));
            idx = e.Op("Mod", [e.Add(idx, dims), dims]);
        }
        c.SetGrad(0, e.Op("ScatterND", [ZerosLike(c, c.X(0)), idx, c.DY()!], Attributes.String("reduction", "add")));
    }

    // Y = Tile(X, R): view dY as [r0, d0, r1, d1, ...] and sum the repeat axes.
    private static void Tile(GradientContext c)
    {
        var e = c.Emit;
        int rank = c.Rank(c.X(0));
        string split;
        if (StaticShape(c, c.X(0)) is { } s && c.ConstInput(1) is { } reps)
            split = e.Int64s(Enumerable.Range(0, rank).SelectMany(k => new[] { reps[k], s[k] }).ToArray());
        else
        {
            string col = e.Int64s(1);
            string pairs = e.Op("Concat", [e.Op("Unsqueeze", [c.X(1), col]), e.Op("Unsqueeze", [e.Shape(c.X(0)), col])], Attributes.Int("axis", 1));
            split = e.Reshape(pairs, e.Int64s(-1));
        }
        string viewed = e.Op("Reshape", [c.DY()!, split], Attributes.Int("allowzero", 1));
        c.SetGrad(0, e.ReduceSum(viewed, Enumerable.Range(0, rank).Select(k => 2L * k).ToArray(), keepDims: false));
    }

    // Y = Scatter(data, I, updates) (ScatterElements along axis, or ScatterND), the ops the Gather,
    // MaxPool and Slice rules emit, so a second reverse pass (JVPs) needs them: dUpdates gathers
    // dY at the written positions (GatherElements / GatherND, the forward op's adjoint);
    // dData = dY with reduction="add", and dY with the written positions zeroed (scattering
    // zeros there) without a reduction. Indices are assumed unique without a reduction, as the
    // op's result is then defined; mul/max/min reductions are refused.
    private static void Scatter(GradientContext c)
    {
        var e = c.Emit;
        bool elements = c.Node.OpType == "ScatterElements";
        string reduction = c.AttrString("reduction", "none");
        if (reduction is not ("none" or "add")) throw c.Unsupported($"reduction=\"{reduction}\" has no gradient rule (only none and add)");
        string dy = c.DY(), idx = c.X(1);
        var axis = elements ? new[] { Attributes.Int("axis", c.AttrInt("axis", 0)) } : [];
        if (c.Needs(0))
            c.SetGrad(0, reduction == "add" ? dy : e.Op(c.Node.OpType, [dy, idx, ZerosLike(c, c.X(2))], axis));
        if (c.Needs(2))
            c.SetGrad(2, e.Op(elements ? "GatherElements" : "GatherND", [dy, idx], axis));
    }

    // Constant mode: Pad with the negated pads (crops what was added, zero-fills what was cropped).
    // reflect/edge/wrap: scatter-add through the index grid padded the same way.
    private static void Pad(GradientContext c)
    {
        var e = c.Emit;
        string mode = c.AttrString("mode", "constant");
        if (mode != "constant")
        {
            c.SetGrad(0, ScatterThroughIndexGrid(c, c.DY()!, c.X(0), accumulate: true));
            return;
        }
        string neg = c.ConstInput(1) is { } pads ? e.Int64s(pads.Select(p => -p).ToArray()) : e.Neg(c.X(1));
        var inputs = c.HasInput(3) ? new[] { c.DY()!, neg, "", c.X(3) } : [c.DY()!, neg];
        c.SetGrad(0, e.Op("Pad", inputs, Attributes.String("mode", "constant")));
    }
}
