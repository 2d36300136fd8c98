using OnnxKfac.Graph.Proto;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Model;

/// <summary>
/// Static shape and type inference over a graph, for the ops the toolkit differentiates
/// and the integer shape arithmetic exporters emit around them. What it cannot infer is
/// left unknown; what no valid model holds (missing inputs, an axis or index out of range,
/// attributes of the wrong length, a zero stride) is an <see cref="OnnxKfacException"/>
/// naming the node. Nothing else may escape: any other exception is a bug, which the fuzz
/// tests look for. Small integer tensors (shapes, axes) are also evaluated where their
/// inputs are known.
/// </summary>
public static class ShapeInference
{
    private delegate TensorInfo?[] Rule(NodeProto node, TensorInfo?[] inputs, int opset);

    private static readonly Dictionary<string, Rule> Rules = BuildRules();

    /// <summary>Infers every tensor of the graph it can; seeded by inputs, initializers and value_info.</summary>
    public static Dictionary<string, TensorInfo> Infer(ModelProto model)
    {
        var g = model.Graph;
        int opset = GraphIndex.OpsetOf(model);
        var known = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var symbols = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var vi in g.Input.Concat(g.ValueInfo).Concat(g.Output))
            if (FromValueInfo(vi, symbols) is { } info) known[vi.Name] = info;
        foreach (var t in g.Initializer)
            known[t.Name] = FromTensor(t);
        foreach (var n in g.Node)
        {
            var ins = n.Input.Select(i => i.Length > 0 && known.TryGetValue(i, out var v) ? v : null).ToArray();
            TensorInfo?[] outs = [];
            if ((n.Domain is "" or "ai.onnx") && Rules.TryGetValue(n.OpType, out var rule))
            {
                int required = RequiredInputs(n.OpType, opset);
                if (ins.Length < required)
                    throw Invalid(n, $"has {ins.Length} input(s); {n.OpType} takes at least {required}");
                int outputs = n.Output.Count(o => o.Length > 0), most = MaxOutputs(n.OpType);
                if (n.Output.Count > most && outputs > 0 && n.Output.Skip(most).Any(o => o.Length > 0))
                    throw Invalid(n, $"has {n.Output.Count} outputs; {n.OpType} has {most}");
                outs = rule(n, ins, opset);
            }
            for (int k = 0; k < n.Output.Count; k++)
            {
                if (n.Output[k].Length == 0) continue;
                var inferred = k < outs.Length ? outs[k] : null;
                known.TryGetValue(n.Output[k], out var declared);
                var merged = Merge(inferred, declared);
                if (merged is not null) known[n.Output[k]] = merged;
            }
        }
        return known;
    }

    /// <summary>Type and shape from a value info; run-time dimensions as -1.</summary>
    public static TensorInfo? FromValueInfo(ValueInfoProto vi) => FromValueInfo(vi, null);

    private static TensorInfo? FromValueInfo(ValueInfoProto vi, Dictionary<string, long>? symbols)
    {
        if (vi.Type?.TensorType is not { } tt) return null;
        long[]? shape = tt.Shape?.Dim.Select(d =>
        {
            if (d.HasDimValue) return d.DimValue;
            if (symbols is null || !d.HasDimParam || d.DimParam.Length == 0) return -1L;
            if (!symbols.TryGetValue(d.DimParam, out long sym)) symbols[d.DimParam] = sym = TensorInfo.SymbolBase - symbols.Count;
            return sym;
        }).ToArray();
        return new TensorInfo(tt.ElemType, shape);
    }

    public static TensorInfo FromTensor(TensorProto t)
    {
        long[]? value = null;
        long count = TensorData.ElementCount(t.Dims);
        if (!TensorData.IsFloat(t.DataType) && count <= 64 && t.DataType is (int)DataType.Int64 or (int)DataType.Int32)
            value = TensorData.ToInt64s(t);
        return new TensorInfo(t.DataType, t.Dims.ToArray(), value);
    }

    private static TensorInfo? Merge(TensorInfo? a, TensorInfo? b)
    {
        if (a is null) return b;
        if (b is null) return a;
        int type = a.ElemType != 0 ? a.ElemType : b.ElemType;
        long[]? shape = a.Shape;
        if (shape is null) shape = b.Shape;
        else if (b.Shape is not null && b.Shape.Length == shape.Length)
            shape = shape.Select((d, i) => d >= 0 ? d : b.Shape[i]).ToArray();
        return new TensorInfo(type, shape, a.Value ?? b.Value);
    }

    // ---- checks ---------------------------------------------------------------------------

    private static OnnxKfacException Invalid(NodeProto n, string why) => new($"{GraphIndex.Describe(n)}: {why}");

    /// <summary>Inputs an op cannot do without (optional ones may be absent or empty).</summary>
    private static int RequiredInputs(string op, int opset) => op switch
    {
        "Constant" => 0,
        "Add" or "Sub" or "Mul" or "Div" or "Pow" or "PRelu" or "Mod" or "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual"
            or "And" or "Or" or "Xor" or "CastLike" or "MatMul" or "Gemm" or "Conv" or "ConvTranspose" or "LayerNormalization" or "Reshape"
            or "Gather" or "Expand" or "Tile" => 2,
        "Where" or "Range" or "OneHot" => 3,
        "Slice" => opset >= 10 ? 3 : 1,
        "BatchNormalization" => 5,
        "LSTM" or "GRU" or "RNN" => 3,
        _ => 1,
    };

    /// <summary>Outputs an op can have (at any opset).</summary>
    private static int MaxOutputs(string op) => op switch
    {
        "Dropout" or "MaxPool" or "TopK" or "GRU" or "RNN" => 2,
        "LayerNormalization" or "LSTM" => 3,
        "BatchNormalization" => 5,
        "Split" => int.MaxValue,
        _ => 1,
    };

    /// <summary>An axis in [-rank, rank), made non-negative; an error naming the node otherwise.</summary>
    private static int Axis(NodeProto n, long axis, int rank, string what = "axis") =>
        axis >= -rank && axis < rank ? (int)(axis < 0 ? axis + rank : axis)
            : throw Invalid(n, $"{what} {axis} is out of range for {(what == "axis" ? "rank" : "a dimension of")} {rank}");

    /// <summary>An attribute list that must have <paramref name="length"/> entries.</summary>
    private static long[] Exactly(NodeProto n, long[] values, int length, string name) =>
        values.Length == length ? values : throw Invalid(n, $"'{name}' has {values.Length} value(s); {length} expected");

    /// <summary>The element count of a static shape, or -1 when it is unknown or does not fit in 64 bits.</summary>
    private static long Count(long[]? shape)
    {
        if (shape is null || shape.Any(d => d < 0)) return -1;
        long c = 1;
        foreach (long d in shape)
        {
            if (d != 0 && c > long.MaxValue / d) return -1;
            c *= d;
        }
        return c;
    }

    /// <summary>Tensors of more elements than this are not tracked value by value.</summary>
    private const int MaxTrackedValues = 64;

    // ---- rules ---------------------------------------------------------------------------

    private static Dictionary<string, Rule> BuildRules()
    {
        var r = new Dictionary<string, Rule>(StringComparer.Ordinal);
        foreach (var op in new[] { "Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Erf",
                     "Softplus", "Softsign", "Gelu", "Clip", "Softmax", "LogSoftmax", "Identity", "Sign", "Floor", "Ceil", "Round", "Sin", "Cos",
                     "HardSigmoid", "HardSwish", "Mish", "Celu", "Not", "IsNaN", "IsInf", "LRN", "InstanceNormalization", "LpNormalization" })
            r[op] = Same;
        r["Dropout"] = (n, i, _) => [i[0], i[0] is null ? null : i[0]! with { ElemType = (int)DataType.Bool, Value = null }];
        foreach (var op in new[] { "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Mod" })
            r[op] = (n, i, _) => [Broadcast(i, i.FirstOrDefault(x => x is not null)?.ElemType ?? 0, n.OpType)];
        foreach (var op in new[] { "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor" })
            r[op] = (n, i, _) => [Broadcast(i, (int)DataType.Bool, n.OpType)];
        r["Where"] = (n, i, _) => [Broadcast(i, i.Length > 1 ? i[1]?.ElemType ?? i[2]?.ElemType ?? 0 : 0, "Where")];
        r["Cast"] = (n, i, _) => [new TensorInfo((int)n.GetInt("to", 0), i[0]?.Shape, i[0]?.Value)];
        r["CastLike"] = (n, i, _) => [new TensorInfo(i[1]?.ElemType ?? 0, i[0]?.Shape, i[0]?.Value)];
        r["Constant"] = (n, _, _) => [ConstantInfo(n)];
        r["Shape"] = ShapeOp;
        r["Size"] = (n, i, _) => [new TensorInfo((int)DataType.Int64, [], Count(i[0]?.Shape) is var c and >= 0 ? [c] : null)];
        r["ConstantOfShape"] = (n, i, _) =>
        {
            int type = n.GetTensor("value")?.DataType ?? (int)DataType.Float;
            return [new TensorInfo(type, ShapeFromValue(i[0]))];
        };
        r["Range"] = (n, i, _) => [new TensorInfo(i[0]?.ElemType ?? 0, [-1])];
        r["MatMul"] = MatMul;
        r["Gemm"] = (n, i, _) =>
        {
            foreach (var (t, name) in new[] { (i[0], n.Input[0]), (i[1], n.Input[1]) })
                if (t?.Shape is { Length: not 2 } bad) throw Invalid(n, $"Gemm operands are matrices, but '{name}' has rank {bad.Length}");
            long m = Dim(i[0], n.GetInt("transA", 0) == 1 ? 1 : 0), k = Dim(i[1], n.GetInt("transB", 0) == 1 ? 0 : 1);
            return [new TensorInfo(i[0]?.ElemType ?? 0, [m, k])];
        };
        r["Conv"] = (n, i, _) => [ConvLike(n, i)];
        r["ConvTranspose"] = (n, i, _) => [ConvLike(n, i)];
        r["MaxPool"] = (n, i, _) => { var y = ConvLike(n, i); return [y, y is null ? null : y with { ElemType = (int)DataType.Int64 }]; };
        r["AveragePool"] = (n, i, _) => [ConvLike(n, i)];
        r["GlobalAveragePool"] = GlobalPool;
        r["GlobalMaxPool"] = GlobalPool;
        r["BatchNormalization"] = (n, i, _) => [i[0], i.Length > 3 ? i[3] : null, i.Length > 4 ? i[4] : null];
        r["LayerNormalization"] = (n, i, _) =>
        {
            if (i[0]?.Shape is not { } s) return [i[0]];
            int axis = Axis(n, n.GetInt("axis", -1), s.Length);
            var stat = s.Select((d, k) => k < axis ? d : 1).ToArray();
            int statType = (int)n.GetInt("stash_type", 1);
            return [i[0], new TensorInfo(statType, stat), new TensorInfo(statType, stat)];
        };
        r["Flatten"] = (n, i, _) =>
        {
            if (i[0]?.Shape is not { } s) return [new TensorInfo(i[0]?.ElemType ?? 0, [-1, -1])];
            long a = n.GetInt("axis", 1);
            if (a < -s.Length || a > s.Length) throw Invalid(n, $"axis {a} is out of range for rank {s.Length}");
            int axis = (int)(a < 0 ? a + s.Length : a);
            return [new TensorInfo(i[0]!.ElemType, [Prod(s[..axis]), Prod(s[axis..])])];
        };
        r["Reshape"] = Reshape;
        r["Transpose"] = (n, i, _) =>
        {
            if (i[0]?.Shape is not { } s) return [i[0]];
            long[] perm = n.GetInts("perm") ?? Enumerable.Range(0, s.Length).Reverse().Select(x => (long)x).ToArray();
            if (!perm.Order().SequenceEqual(Enumerable.Range(0, s.Length).Select(x => (long)x)))
                throw Invalid(n, $"perm [{string.Join(",", perm)}] is not a permutation of the {s.Length} axes");
            return [new TensorInfo(i[0]!.ElemType, perm.Select(p => s[p]).ToArray())];
        };
        r["Squeeze"] = Squeeze;
        r["Unsqueeze"] = Unsqueeze;
        r["Concat"] = Concat;
        r["Split"] = Split;
        r["Slice"] = Slice;
        r["Gather"] = Gather;
        r["Expand"] = (n, i, _) =>
        {
            var target = ShapeFromValue(i[1]);
            if (i[0]?.Shape is null || target is null) return [new TensorInfo(i[0]?.ElemType ?? 0, target)];
            return [Broadcast([i[0], new TensorInfo(0, target)], i[0]!.ElemType, "Expand")];
        };
        r["Tile"] = (n, i, _) =>
        {
            if (i[0]?.Shape is not { } s) return [i[0]];
            var rep = i[1]?.Value;
            if (rep is not null && rep.Length != s.Length) throw Invalid(n, $"repeats has {rep.Length} value(s) for rank {s.Length}");
            return [new TensorInfo(i[0]!.ElemType, s.Select((d, k) => rep is null || d < 0 || !TensorInfo.IsConcrete(rep[k]) ? -1 : d * rep[k]).ToArray())];
        };
        r["Pad"] = (n, i, opset) =>
        {
            if (i[0]?.Shape is not { } s) return [i[0]];
            long[]? pads = opset >= 11 ? i.Length > 1 ? i[1]?.Value : null : n.GetInts("pads");
            if (pads is null || pads.Any(p => !TensorInfo.IsConcrete(p)) || pads.Length != 2 * s.Length)
                return [new TensorInfo(i[0]!.ElemType, s.Select(_ => -1L).ToArray())];
            return [new TensorInfo(i[0]!.ElemType, s.Select((d, k) => d < 0 ? -1 : d + pads[k] + pads[k + s.Length]).ToArray())];
        };
        foreach (var op in new[] { "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum" })
            r[op] = Reduce;
        r["ArgMax"] = (n, i, o) => [Reduce(n, i, o)[0] is { } t ? t with { ElemType = (int)DataType.Int64 } : null];
        r["ArgMin"] = r["ArgMax"];
        r["OneHot"] = (n, i, _) =>
        {
            if (i[0]?.Shape is not { } s) return [new TensorInfo(i.Length > 2 ? i[2]?.ElemType ?? 0 : 0, null)];
            int axis = Axis(n, n.GetInt("axis", -1), s.Length + 1);
            var list = s.ToList();
            long depth = i[1]?.Value is { Length: 1 } dv && TensorInfo.IsConcrete(dv[0]) ? dv[0] : -1;
            list.Insert(axis, depth);
            return [new TensorInfo(i[2]?.ElemType ?? 0, list.ToArray())];
        };
        r["NonZero"] = (n, i, _) => [new TensorInfo((int)DataType.Int64, [i[0]?.Rank ?? -1, -1])];
        r["TopK"] = (n, i, _) =>
        {
            if (i[0]?.Shape is not { } s) return [new TensorInfo(i[0]?.ElemType ?? 0, null), new TensorInfo((int)DataType.Int64, null)];
            int axis = Axis(n, n.GetInt("axis", -1), s.Length);
            long k = i.Length > 1 && i[1]?.Value is { Length: 1 } kv && TensorInfo.IsConcrete(kv[0]) ? kv[0] : -1;
            var shape = s.Select((d, j) => j == axis ? k : d).ToArray();
            return [new TensorInfo(i[0]!.ElemType, shape), new TensorInfo((int)DataType.Int64, shape)];
        };
        foreach (var op in new[] { "LSTM", "GRU", "RNN" })
            r[op] = Recurrent;
        r["ScatterElements"] = Same;
        r["ScatterND"] = Same;
        r["GatherElements"] = (n, i, _) => [new TensorInfo(i[0]?.ElemType ?? 0, i.Length > 1 ? i[1]?.Shape : null)];
        r["GatherND"] = (n, i, _) =>
        {
            // indices [b..., q..., k] → [b..., q..., data[b + k:]]
            int batch = (int)n.GetInt("batch_dims", 0);
            if (i[0]?.Shape is not { } d || i.Length < 2 || i[1]?.Shape is not { Length: > 0 } q || q[^1] < 0 || batch + q[^1] > d.Length)
                return [new TensorInfo(i[0]?.ElemType ?? 0, null)];
            return [new TensorInfo(i[0]!.ElemType, [.. q[..^1], .. d[(batch + (int)q[^1])..]])];
        };
        return r;
    }

    // Y [T, D, N, H] and Y_h, Y_c [D, N, H]; layout 1: [N, T, D, H] and [N, D, H].
    private static TensorInfo?[] Recurrent(NodeProto n, TensorInfo?[] i, int opset)
    {
        bool batchFirst = n.GetInt("layout", 0) == 1;
        long dirs = n.GetString("direction", "forward") == "bidirectional" ? 2 : 1;
        long hidden = n.GetInt("hidden_size", -1);
        if (hidden <= 0) hidden = Dim(i[2], 2);
        long seq = Dim(i[0], batchFirst ? 1 : 0), batch = Dim(i[0], batchFirst ? 0 : 1);
        int type = i[0]?.ElemType ?? 0;
        var state = new TensorInfo(type, batchFirst ? [batch, dirs, hidden] : [dirs, batch, hidden]);
        return [new TensorInfo(type, batchFirst ? [batch, seq, dirs, hidden] : [seq, dirs, batch, hidden]), state, state];
    }

    private static TensorInfo?[] Same(NodeProto n, TensorInfo?[] i, int opset) => [i.Length > 0 && i[0] is { } t ? t with { Value = null } : null];

    private static long Dim(TensorInfo? t, int axis) => t?.Shape is { } s && axis < s.Length ? s[axis] : -1;

    private static long Prod(IEnumerable<long> dims)
    {
        var list = dims as long[] ?? dims.ToArray();
        if (list.Length == 1) return list[0]; // keeps a symbolic dimension
        long p = 1;
        foreach (var d in dims) { if (d < 0) return -1; p *= d; }
        return p;
    }

    private static TensorInfo? ConstantInfo(NodeProto n)
    {
        if (n.GetTensor("value") is { } t) return FromTensor(t);
        if (n.Find("value_int") is { } vi) return new TensorInfo((int)DataType.Int64, [], [vi.I]);
        if (n.Find("value_ints") is { } vis) return new TensorInfo((int)DataType.Int64, [vis.Ints.Count], vis.Ints.ToArray());
        if (n.Find("value_float") is not null) return new TensorInfo((int)DataType.Float, []);
        if (n.Find("value_floats") is { } vfs) return new TensorInfo((int)DataType.Float, [vfs.Floats.Count]);
        return null;
    }

    private static TensorInfo? Broadcast(TensorInfo?[] ins, int elemType, string op)
    {
        var shapes = ins.Where(x => x is not null).Select(x => x!.Shape).ToArray();
        if (shapes.Length < ins.Count(x => true) || shapes.Any(s => s is null)) return new TensorInfo(elemType, null);
        int rank = shapes.Max(s => s!.Length);
        var result = new long[rank];
        for (int k = 0; k < rank; k++)
        {
            long d = 1;
            long? symbol = null;
            bool unknown = false;
            foreach (var s in shapes)
            {
                int j = k - (rank - s!.Length);
                if (j < 0) continue;
                long v = s[j];
                if (TensorInfo.IsSymbol(v) && (symbol is null || symbol == v)) symbol = v;
                else if (v < 0) unknown = true;
                else if (v != 1) d = v;
            }
            // A static size wins; else one shared symbol; else unknown.
            result[k] = d != 1 ? d : unknown ? -1 : symbol ?? 1;
        }
        return new TensorInfo(elemType, result, ElementwiseValue(ins, op, result));
    }

    private static long[]? ElementwiseValue(TensorInfo?[] ins, string op, long[] shape)
    {
        if (shape.Length > 1 || ins.Length != 2 || ins[0]?.Value is not { } a || ins[1]?.Value is not { } b) return null;
        int len = Math.Max(a.Length, b.Length);
        if ((a.Length != 1 && a.Length != len) || (b.Length != 1 && b.Length != len)) return null;
        var v = new long[len];
        for (int k = 0; k < len; k++)
        {
            long x = a[a.Length == 1 ? 0 : k], y = b[b.Length == 1 ? 0 : k];
            if (!TensorInfo.IsConcrete(x) || !TensorInfo.IsConcrete(y)) { v[k] = TensorInfo.UnknownValue; continue; }
            v[k] = op switch
            {
                "Add" => x + y,
                "Sub" => x - y,
                "Mul" => x * y,
                "Div" when y != 0 && !(x == long.MinValue && y == -1) => x / y,
                _ => TensorInfo.UnknownValue,
            };
        }
        return v;
    }

    private static TensorInfo?[] ShapeOp(NodeProto n, TensorInfo?[] i, int opset)
    {
        if (i[0]?.Shape is not { } s) return [new TensorInfo((int)DataType.Int64, [-1])];
        int rank = s.Length;
        int start = (int)Math.Clamp(n.GetInt("start", 0), -rank, rank), end = (int)Math.Clamp(n.GetInt("end", rank), -rank, rank);
        if (start < 0) start += rank;
        if (end < 0) end += rank;
        var dims = s[start..Math.Max(start, end)];
        return [new TensorInfo((int)DataType.Int64, [dims.Length], dims.Select(d => TensorInfo.IsSymbol(d) ? d : d < 0 ? TensorInfo.UnknownValue : d).ToArray())];
    }

    /// <summary>A shape given by a 1-D integer tensor: its values where known, else its length in unknowns.</summary>
    private static long[]? ShapeFromValue(TensorInfo? t)
    {
        if (t?.Value is { } v) return v.Select(x => x == TensorInfo.UnknownValue ? -1 : x).ToArray();
        if (t?.Shape is [var len] && len >= 0 && len <= MaxTrackedValues) return Enumerable.Repeat(-1L, (int)len).ToArray();
        return null;
    }

    private static TensorInfo?[] MatMul(NodeProto n, TensorInfo?[] i, int opset)
    {
        int type = i[0]?.ElemType ?? i[1]?.ElemType ?? 0;
        if (i[0]?.Shape is not { } a || i[1]?.Shape is not { } b) return [new TensorInfo(type, null)];
        if (a.Length == 0 || b.Length == 0) throw Invalid(n, $"MatMul operands must have rank >= 1, but '{n.Input[a.Length == 0 ? 0 : 1]}' is a scalar");
        bool aVec = a.Length == 1, bVec = b.Length == 1;
        long[] a2 = aVec ? [1, a[0]] : a, b2 = bVec ? [b[0], 1] : b;
        var batch = Broadcast([new TensorInfo(0, a2[..^2]), new TensorInfo(0, b2[..^2])], 0, "MatMul")!.Shape!;
        var result = batch.ToList();
        if (!aVec) result.Add(a2[^2]);
        if (!bVec) result.Add(b2[^1]);
        return [new TensorInfo(type, result.ToArray())];
    }

    private static TensorInfo? ConvLike(NodeProto n, TensorInfo?[] i)
    {
        if (i[0]?.Shape is not { } x || x.Length < 3) return i[0] is null ? null : new TensorInfo(i[0]!.ElemType, null);
        long[]? w = i.Length > 1 ? i[1]?.Shape : null;
        var window = ConvWindow.Read(n, x, w, why => Invalid(n, why));
        long channels = n.OpType switch
        {
            "Conv" => w?[0] ?? -1,
            "ConvTranspose" => w is null ? -1 : w[1] * window.Group,
            _ => x[1],
        };
        return new TensorInfo(i[0]!.ElemType, [x[0], channels, .. window.Out]);
    }

    private static TensorInfo?[] GlobalPool(NodeProto n, TensorInfo?[] i, int opset)
    {
        if (i[0]?.Shape is not { } s) return [i[0]];
        return [new TensorInfo(i[0]!.ElemType, s.Select((d, k) => k < 2 ? d : 1).ToArray())];
    }

    private static TensorInfo?[] Reshape(NodeProto n, TensorInfo?[] i, int opset)
    {
        int type = i[0]?.ElemType ?? 0;
        var target = ShapeFromValue(i[1]);
        if (target is null) return [new TensorInfo(type, null)];
        bool allowZero = n.GetInt("allowzero", 0) == 1;
        var x = i[0]?.Shape;
        var y = new long[target.Length];
        for (int k = 0; k < y.Length; k++)
            y[k] = target[k] == 0 && !allowZero ? (x is not null && k < x.Length ? x[k] : -1) : target[k];
        int inferAt = Array.IndexOf(i[1]?.Value ?? [], -1L);
        if (inferAt >= 0 && x is not null && x.All(d => d >= 0))
        {
            long known = y.Where((d, k) => k != inferAt).Aggregate(1L, (p, d) => d < 0 || p < 0 ? -1 : p * d);
            y[inferAt] = known > 0 && Count(x) is var all and >= 0 ? all / known : -1;
        }
        else if (inferAt >= 0) y[inferAt] = -1;
        return [new TensorInfo(type, y, ReshapeValue(i[0], y))];
    }

    private static long[]? ReshapeValue(TensorInfo? x, long[] shape) => x?.Value is { } v && shape.Length <= 1 ? v : null;

    private static long[]? AxesOf(NodeProto n, TensorInfo?[] i, int opset, int inputIndex, int sinceOpset)
    {
        if (opset >= sinceOpset) return i.Length > inputIndex ? i[inputIndex]?.Value : null;
        return n.GetInts("axes");
    }

    private static TensorInfo?[] Squeeze(NodeProto n, TensorInfo?[] i, int opset)
    {
        if (i[0]?.Shape is not { } s) return [i[0]];
        bool hasAxesInput = opset >= 13 && i.Length > 1;
        var axes = AxesOf(n, i, opset, 1, 13);
        if (axes is null && hasAxesInput) return [new TensorInfo(i[0]!.ElemType, null)];
        var drop = axes is null ? s.Select((d, k) => d == 1 ? k : -1).Where(k => k >= 0).ToHashSet()
                                : axes.Select(a => Axis(n, a, s.Length)).ToHashSet();
        var shape = s.Where((d, k) => !drop.Contains(k)).ToArray();
        return [new TensorInfo(i[0]!.ElemType, shape, i[0]!.Value)];
    }

    private static TensorInfo?[] Unsqueeze(NodeProto n, TensorInfo?[] i, int opset)
    {
        var axes = AxesOf(n, i, opset, 1, 13);
        if (i[0]?.Shape is not { } s || axes is null) return [new TensorInfo(i[0]?.ElemType ?? 0, null)];
        int rank = s.Length + axes.Length;
        var norm = axes.Select(a => Axis(n, a, rank)).ToHashSet();
        if (norm.Count != axes.Length) throw Invalid(n, $"axes [{string.Join(",", axes)}] repeat an axis");
        var shape = new long[rank];
        int src = 0;
        for (int k = 0; k < rank; k++) shape[k] = norm.Contains(k) ? 1 : s[src++];
        return [new TensorInfo(i[0]!.ElemType, shape, i[0]!.Value)];
    }

    private static TensorInfo?[] Concat(NodeProto n, TensorInfo?[] i, int opset)
    {
        var first = i.FirstOrDefault(x => x?.Shape is not null);
        if (first is null || i.Any(x => x?.Shape is null)) return [new TensorInfo(i.FirstOrDefault(x => x is not null)?.ElemType ?? 0, first?.Shape?.Select(_ => -1L).ToArray())];
        int rank = first.Shape!.Length;
        if (i.Any(x => x!.Shape!.Length != rank)) throw Invalid(n, $"its inputs have different ranks ({string.Join(", ", i.Select(x => x!.Shape!.Length))})");
        int axis = Axis(n, n.GetInt("axis", 0), rank);
        var shape = (long[])first.Shape.Clone();
        shape[axis] = i.Aggregate(0L, (acc, x) => acc < 0 || x!.Shape![axis] < 0 ? -1 : acc + x.Shape[axis]);
        long[]? value = null;
        if (rank == 1 && i.All(x => x!.Value is not null)) value = i.SelectMany(x => x!.Value!).ToArray();
        else if (rank == 1 && i.All(x => x!.Shape![0] >= 0) && i.Sum(x => Math.Min(x!.Shape![0], MaxTrackedValues + 1)) <= MaxTrackedValues)
            value = i.SelectMany(x => x!.Value ?? Enumerable.Repeat(TensorInfo.UnknownValue, (int)x.Shape![0])).ToArray();
        if (value is not null && value.All(v => v == TensorInfo.UnknownValue)) value = null;
        return [new TensorInfo(first.ElemType, shape, value)];
    }

    private static TensorInfo?[] Split(NodeProto n, TensorInfo?[] i, int opset)
    {
        int count = n.Output.Count;
        if (i[0]?.Shape is not { } s) return Enumerable.Repeat(i[0], count).ToArray();
        int axis = Axis(n, n.GetInt("axis", 0), s.Length);
        long[]? split = opset >= 13 ? (i.Length > 1 ? i[1]?.Value : null) : n.GetInts("split");
        if (split is not null && split.Length != count) throw Invalid(n, $"split has {split.Length} value(s) for {count} outputs");
        var result = new TensorInfo?[count];
        for (int k = 0; k < count; k++)
        {
            var shape = (long[])s.Clone();
            shape[axis] = split is not null ? split[k] : s[axis] < 0 ? -1 : s[axis] % count == 0 ? s[axis] / count : -1;
            if (split is null && s[axis] >= 0 && s[axis] % count != 0)
            {
                long chunk = (s[axis] + count - 1) / count;
                shape[axis] = k < count - 1 ? chunk : s[axis] - chunk * (count - 1);
            }
            result[k] = new TensorInfo(i[0]!.ElemType, shape);
        }
        return result;
    }

    private static TensorInfo?[] Slice(NodeProto n, TensorInfo?[] i, int opset)
    {
        if (i[0]?.Shape is not { } s) return [i[0]];
        long[]? starts = i.Length > 1 ? i[1]?.Value : null, ends = i.Length > 2 ? i[2]?.Value : null;
        long[]? axes = i.Length > 3 ? i[3]?.Value : null, steps = i.Length > 4 ? i[4]?.Value : null;
        if (opset < 10) { starts = n.GetInts("starts"); ends = n.GetInts("ends"); axes = n.GetInts("axes"); }
        var shape = (long[])s.Clone();
        if (starts is null || ends is null || (i.Length > 3 && i[3] is not null && axes is null) || (i.Length > 4 && i[4] is not null && steps is null))
        {
            // Unknown bounds: every sliced axis becomes unknown; axes known or all.
            var which = axes ?? Enumerable.Range(0, s.Length).Select(x => (long)x).ToArray();
            foreach (var a in which) if (TensorInfo.IsConcrete(a)) shape[Axis(n, a, s.Length)] = -1;
            return [new TensorInfo(i[0]!.ElemType, shape)];
        }
        axes ??= Enumerable.Range(0, starts.Length).Select(x => (long)x).ToArray();
        if (ends.Length != starts.Length || axes.Length != starts.Length || (steps is not null && steps.Length != starts.Length))
            throw Invalid(n, $"starts, ends, axes and steps have different lengths ({starts.Length}, {ends.Length}, {axes.Length}, {steps?.Length ?? starts.Length})");
        if (steps is not null && steps.Contains(0)) throw Invalid(n, "a step is 0");
        for (int k = 0; k < starts.Length; k++)
        {
            int ax = Axis(n, axes[k], s.Length);
            long dim = s[ax], step = steps?[k] ?? 1;
            if (dim < 0 || !TensorInfo.IsConcrete(starts[k]) || !TensorInfo.IsConcrete(ends[k]) || !TensorInfo.IsConcrete(step)) { shape[ax] = -1; continue; }
            shape[ax] = SliceLength(dim, starts[k], ends[k], step);
        }
        long[]? value = null;
        if (s.Length == 1 && i[0]!.Value is { } v && shape[0] >= 0)
        {
            long st = steps?[0] ?? 1;
            long b = Clamp(starts[0], v.Length, st);
            value = Enumerable.Range(0, (int)shape[0]).Select(k => v[b + k * st]).ToArray();
        }
        return [new TensorInfo(i[0]!.ElemType, shape, value)];
    }

    private static long Clamp(long index, long dim, long step)
    {
        if (index < 0) index += dim;
        return step > 0 ? Math.Clamp(index, 0, dim) : Math.Clamp(index, -1, dim - 1);
    }

    internal static long SliceLength(long dim, long start, long end, long step)
    {
        long b = Clamp(start, dim, step), e = Clamp(end, dim, step);
        long len = step > 0 ? (e - b + step - 1) / step : (b - e + (-step) - 1) / -step;
        return Math.Max(0, len);
    }

    private static TensorInfo?[] Gather(NodeProto n, TensorInfo?[] i, int opset)
    {
        if (i[0]?.Shape is not { } data || i[1]?.Shape is not { } idx) return [new TensorInfo(i[0]?.ElemType ?? 0, null)];
        int axis = Axis(n, n.GetInt("axis", 0), data.Length);
        var shape = data[..axis].Concat(idx).Concat(data[(axis + 1)..]).ToArray();
        long[]? value = null;
        if (data.Length == 1 && i[0]!.Value is { } v && i[1]!.Value is { } ix)
            value = ix.Select(k => !TensorInfo.IsConcrete(k) ? TensorInfo.UnknownValue : v[Axis(n, k, v.Length, "index")]).ToArray();
        return [new TensorInfo(i[0]!.ElemType, shape, value)];
    }

    private static TensorInfo?[] Reduce(NodeProto n, TensorInfo?[] i, int opset)
    {
        if (i[0]?.Shape is not { } s) return [new TensorInfo(i[0]?.ElemType ?? 0, null)];
        bool keep = n.GetInt("keepdims", 1) == 1;
        long[]? axes;
        if (n.OpType is "ArgMax" or "ArgMin") axes = [n.GetInt("axis", 0)];
        else
        {
            int since = n.OpType == "ReduceSum" ? 13 : 18;
            axes = AxesOf(n, i, opset, 1, since);
            bool hasAxesInput = opset >= since && i.Length > 1;
            if (axes is null && hasAxesInput) return [new TensorInfo(i[0]!.ElemType, keep ? s.Select(_ => -1L).ToArray() : null)];
            if (axes is null or { Length: 0 })
            {
                if (n.GetInt("noop_with_empty_axes", 0) == 1) return [i[0]];
                axes = Enumerable.Range(0, s.Length).Select(x => (long)x).ToArray();
            }
        }
        var set = axes.Select(a => Axis(n, a, s.Length)).ToHashSet();
        var shape = keep ? s.Select((d, k) => set.Contains(k) ? 1 : d).ToArray() : s.Where((d, k) => !set.Contains(k)).ToArray();
        return [new TensorInfo(i[0]!.ElemType, shape)];
    }
}
