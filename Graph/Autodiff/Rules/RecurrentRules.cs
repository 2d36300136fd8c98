using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Autodiff.Rules;

/// <summary>
/// LSTM, GRU and RNN. They have no backward formula of their own: before differentiation
/// <see cref="Unroll"/> rewrites each node into standard ops over its statically known
/// sequence length (one MatMul projects the inputs of every step, then each step is a MatMul
/// with R, the gate activations and the state update; <c>sequence_lens</c> becomes a mask that
/// holds the state and zeros the output past each sequence's end), and the other rules
/// differentiate those. The rule registered here is reached only for a node the rewrite
/// refused, and says why.
/// </summary>
internal static class RecurrentRules
{
    /// <summary>An op's gate count, default activations (f, g, h) and differentiable inputs.</summary>
    private sealed record Cell(int Gates, string[] Activations, int[] Differentiable);

    private static readonly Dictionary<string, Cell> Cells = new(StringComparer.Ordinal)
    {
        ["LSTM"] = new(4, ["Sigmoid", "Tanh", "Tanh"], [0, 1, 2, 3, 5, 6, 7]),
        ["GRU"] = new(3, ["Sigmoid", "Tanh"], [0, 1, 2, 3, 5]),
        ["RNN"] = new(1, ["Tanh"], [0, 1, 2, 3, 5]),
    };

    /// <summary>Activations that are one attribute-free op.</summary>
    private static readonly HashSet<string> PlainActivations = new(StringComparer.Ordinal) { "Sigmoid", "Tanh", "Relu" };

    public static void Register(GradientRegistry r)
    {
        foreach (var (op, cell) in Cells)
            r.Add(op, c => throw c.Unsupported(WhyNotUnrolled(c.Node, c.Info)
                ?? "the node was not unrolled before differentiation (build gradients through GraphBuildContext)"), cell.Differentiable);
    }

    private static bool IsRecurrent(NodeProto n) => n.Domain is "" or "ai.onnx" && Cells.ContainsKey(n.OpType);

    /// <summary>Why a recurrent node cannot be unrolled, or null when it can.</summary>
    private static string? WhyNotUnrolled(NodeProto n, Func<string, TensorInfo?> info)
    {
        var cell = Cells[n.OpType];
        string direction = n.GetString("direction", "forward");
        if (direction is not ("forward" or "reverse" or "bidirectional")) return $"direction '{direction}' is not forward, reverse or bidirectional";
        if (n.GetInt("layout", 0) is not (0 or 1)) return $"layout {n.GetInt("layout", 0)} is not 0 or 1";
        if (n.Find("clip") is not null) return "the clip attribute is not supported (export without cell clipping)";
        if (n.GetInt("input_forget", 0) != 0) return "input_forget=1 is not supported";
        if (n.Find("activation_alpha") is not null || n.Find("activation_beta") is not null)
            return "activation_alpha/activation_beta are not supported";
        if (Activations(n, cell, direction == "bidirectional" ? 2 : 1) is null)
            return $"activations [{string.Join(", ", n.Find("activations")!.Strings.Select(s => s.ToStringUtf8()))}] are not supported " +
                   $"(each must be Sigmoid, Tanh or Relu, {cell.Activations.Length} per direction)";
        if (HiddenSize(n, info) is null) return "the hidden size is unknown (no hidden_size attribute and no static shape of R)";
        var x = n.Input.Count > 0 ? info(n.Input[0]) : null;
        if (x?.Shape is not { Length: 3 } shape || shape[n.GetInt("layout", 0) == 1 ? 1 : 0] < 0)
            return $"the sequence length of '{n.Input.FirstOrDefault()}' is not known statically, and the node is unrolled over it: " +
                   "export the model with a fixed sequence length (no dynamic axis on the sequence dimension)";
        if (shape[n.GetInt("layout", 0) == 1 ? 1 : 0] == 0) return "the sequence length is 0";
        return null;
    }

    /// <summary>The activation op names, <c>cell.Activations.Length</c> per direction; null when one is not plain.</summary>
    private static string[]? Activations(NodeProto n, Cell cell, int dirs)
    {
        int k = cell.Activations.Length;
        if (n.Find("activations") is not { } a) return Enumerable.Repeat(cell.Activations, dirs).SelectMany(x => x).ToArray();
        var names = a.Strings.Select(s => s.ToStringUtf8()).ToArray();
        if (names.Length == k && dirs == 2) names = [.. names, .. names];
        return names.Length == k * dirs && names.All(PlainActivations.Contains) ? names : null;
    }

    private static long? HiddenSize(NodeProto n, Func<string, TensorInfo?> info)
    {
        long h = n.GetInt("hidden_size", -1);
        if (h > 0) return h;
        return n.Input.Count > 2 && info(n.Input[2])?.Shape is { Length: 3 } r && r[2] > 0 ? r[2] : null;
    }

    /// <summary>
    /// Replaces, in place, every LSTM, GRU and RNN node that can be unrolled by standard ops that
    /// compute the same outputs under the same names; the others are left for the rule to refuse.
    /// </summary>
    public static void Unroll(ModelProto model)
    {
        var g = model.Graph;
        if (!g.Node.Any(IsRecurrent)) return;
        var infos = ShapeInference.Infer(model);
        var state = new EmitterState(g, GraphIndex.OpsetOf(model));
        var nodes = new List<NodeProto>();
        foreach (var n in g.Node)
        {
            if (!IsRecurrent(n) || WhyNotUnrolled(n, infos.GetValueOrDefault) is not null) { nodes.Add(n); continue; }
            new Unrolling(n, infos, state).Emit();
            nodes.AddRange(state.Nodes);
            state.Nodes.Clear();
        }
        g.Node.Clear();
        g.Node.Add(nodes);
        g.Initializer.Add(state.Initializers);
    }

    /// <summary>The unrolled form of one node (see the ONNX LSTM/GRU/RNN equations).</summary>
    private sealed class Unrolling
    {
        private readonly NodeProto _n;
        private readonly Cell _cell;
        private readonly EmitterState _state;
        private readonly NodeEmitter _e;
        private readonly int _type, _steps, _dirs;
        private readonly long _hidden;
        private readonly bool _batchFirst;
        private readonly string[] _act;

        public Unrolling(NodeProto n, Dictionary<string, TensorInfo> infos, EmitterState state)
        {
            _n = n;
            _cell = Cells[n.OpType];
            _state = state;
            _e = new NodeEmitter(state, GraphBuildContext.NodeScope(n) + "/unrolled");
            var x = infos[n.Input[0]];
            _batchFirst = n.GetInt("layout", 0) == 1;
            _steps = (int)x.Shape![_batchFirst ? 1 : 0];
            _dirs = n.GetString("direction", "forward") == "bidirectional" ? 2 : 1;
            _hidden = HiddenSize(n, infos.GetValueOrDefault)!.Value;
            _type = EmitterState.FloatType(x.ElemType);
            _act = Activations(n, _cell, _dirs)!;
        }

        private string In(int i) => i < _n.Input.Count ? _n.Input[i] : "";

        private string Out(int i) => i < _n.Output.Count ? _n.Output[i] : "";

        public void Emit()
        {
            var e = _e;
            string x = _batchFirst ? e.Transpose(In(0), [1, 0, 2]) : In(0); // [T, N, I]
            string[] w = Unstack(In(1), 0, _dirs), r = Unstack(In(2), 0, _dirs);
            string[]? b = Optional(3, false), h0 = Optional(5, true), c0 = _cell.Gates == 4 ? Optional(6, true) : null;
            string[]? p = _cell.Gates == 4 ? Optional(7, false) : null;
            string[]? masks = In(4).Length > 0 ? Masks(In(4)) : null;
            var ys = new string[_dirs][];
            var hs = new string[_dirs];
            var cs = new string?[_dirs];
            for (int d = 0; d < _dirs; d++)
            {
                bool reverse = d == 1 || _n.GetString("direction", "forward") == "reverse";
                (ys[d], hs[d], cs[d]) = Direction(d, x, w[d], r[d], b?[d], h0?[d], c0?[d], p?[d], masks, reverse);
            }
            if (Out(0).Length > 0)
            {
                // Y: [T, D, N, H] (layout 1: [N, T, D, H]).
                var perDir = ys.Select(y => e.Op("Concat", y.Select(t => e.Op("Unsqueeze", [t, e.Int64s(0, 1)])), Attributes.Int("axis", 0))).ToArray();
                string all = _dirs == 1 ? perDir[0] : e.Op("Concat", perDir, Attributes.Int("axis", 1));
                Rename(_batchFirst ? e.Transpose(all, [2, 0, 1, 3]) : all, Out(0));
            }
            if (Out(1).Length > 0) Rename(Final(hs), Out(1));
            if (_cell.Gates == 4 && Out(2).Length > 0) Rename(Final(cs!), Out(2));
        }

        /// <summary>Y_h or Y_c: [D, N, H] (layout 1: [N, D, H]).</summary>
        private string Final(string?[] states)
        {
            var e = _e;
            string all = e.Op("Concat", states.Select(s => e.Op("Unsqueeze", [s!, e.Int64s(0)])), Attributes.Int("axis", 0));
            return _batchFirst ? e.Transpose(all, [1, 0, 2]) : all;
        }

        /// <summary>Gives the fresh tensor <paramref name="tensor"/> the node's output name.</summary>
        private void Rename(string tensor, string name)
        {
            var producer = _state.Nodes.Last(m => m.Output.Contains(tensor));
            producer.Output[producer.Output.IndexOf(tensor)] = name;
        }

        /// <summary>Optional input <paramref name="i"/> split per direction (states given batch-first are transposed first).</summary>
        private string[]? Optional(int i, bool isState)
        {
            if (In(i).Length == 0) return null;
            string t = isState && _batchFirst ? _e.Transpose(In(i), [1, 0, 2]) : In(i);
            return Unstack(t, 0, _dirs);
        }

        /// <summary>Splits <paramref name="x"/> along <paramref name="axis"/> into <paramref name="count"/> tensors without that axis.</summary>
        private string[] Unstack(string x, int axis, int count)
        {
            var e = _e;
            string[] parts = count == 1 ? [x]
                : e.Ops("Split", [x], count, Attributes.Int("axis", axis), Attributes.Int("num_outputs", count));
            return parts.Select(s => e.Op("Squeeze", [s, e.Int64s(axis)])).ToArray();
        }

        /// <summary>Splits the last axis into <paramref name="count"/> equal parts.</summary>
        private string[] Gates(string x, int count) =>
            count == 1 ? [x] : _e.Ops("Split", [x], count, Attributes.Int("axis", -1), Attributes.Int("num_outputs", count));

        private string Slice(string x, long start, long end) =>
            _e.Op("Slice", [x, _e.Int64s(start), _e.Int64s(end), _e.Int64s(-1)]);

        /// <summary>Per step, a [N, 1] mask: 1 where the step lies within the sequence's length.</summary>
        private string[] Masks(string lengths)
        {
            var e = _e;
            string lens = e.Cast(lengths, (int)TensorProto.Types.DataType.Int64);
            string steps = e.Op("Unsqueeze", [e.Int64s(Enumerable.Range(0, _steps).Select(t => (long)t).ToArray()), e.Int64s(1)]);
            string within = e.Cast(e.Op("Less", [steps, lens]), _type);                          // [T, N]
            return Unstack(e.Op("Unsqueeze", [within, e.Int64s(2)]), 0, _steps);                 // T × [N, 1]
        }

        private static string? AddOpt(NodeEmitter e, string? a, string? b) => a is null ? b : b is null ? a : e.Add(a, b);

        private string Act(int d, int k, string x) => _e.Op(_act[d * _cell.Activations.Length + k], [x]);

        private (string[] Y, string H, string? C) Direction(int d, string x, string w, string r, string? b, string? h, string? c,
            string? p, string[]? masks, bool reverse)
        {
            var e = _e;
            long gh = _cell.Gates * _hidden;
            string rT = e.Transpose(r, [1, 0]);                                                    // [H, G·H]
            string? wb = b is null ? null : Slice(b, 0, gh), rb = b is null ? null : Slice(b, gh, 2 * gh);
            // Inputs of every step at once; the recurrent bias joins them except GRU's (inside the reset gate).
            string xw = e.MatMul(x, e.Transpose(w, [1, 0]));                                     // [T, N, G·H]
            xw = AddOpt(e, xw, _cell.Gates == 3 ? wb : AddOpt(e, wb, rb))!;
            string[] xs = Unstack(xw, 0, _steps);
            string[]? peep = p is null ? null : Gates(p, 3);                                      // i, o, f
            var ys = new string[_steps];
            for (int k = 0; k < _steps; k++)
            {
                int t = reverse ? _steps - 1 - k : k;
                var (hn, cn) = _cell.Gates switch
                {
                    4 => LstmStep(d, xs[t], rT, h, c, peep),
                    3 => (GruStep(d, xs[t], rT, rb, h), null),
                    _ => (Act(d, 0, AddOpt(e, xs[t], h is null ? null : e.MatMul(h, rT))!), (string?)null),
                };
                if (masks is null) { ys[t] = hn; h = hn; c = cn; continue; }
                // Past the sequence's end: the state holds and the output is zero.
                string m = masks[t];
                ys[t] = e.Mul(m, hn);
                h = h is null ? ys[t] : e.Add(h, e.Mul(m, e.Sub(hn, h)));
                if (cn is not null) c = c is null ? e.Mul(m, cn) : e.Add(c, e.Mul(m, e.Sub(cn, c)));
            }
            return (ys, h!, c);
        }

        // Gates i, o, f, c; a state that is null is zero (no initial state given).
        private (string H, string C) LstmStep(int d, string xw, string rT, string? h, string? c, string[]? peep)
        {
            var e = _e;
            var g = Gates(AddOpt(e, xw, h is null ? null : e.MatMul(h, rT))!, 4);
            string gi = g[0], go = g[1], gf = g[2];
            if (peep is not null && c is not null)
            {
                gi = e.Add(gi, e.Mul(peep[0], c));
                gf = e.Add(gf, e.Mul(peep[2], c));
            }
            string i = Act(d, 0, gi), f = Act(d, 0, gf), cand = Act(d, 1, g[3]);
            string cn = AddOpt(e, e.Mul(i, cand), c is null ? null : e.Mul(f, c))!;
            if (peep is not null) go = e.Add(go, e.Mul(peep[1], cn));
            return (e.Mul(Act(d, 0, go), Act(d, 2, cn)), cn);
        }

        // Gates z, r, h; linear_before_reset=1 (PyTorch's form) resets (H·Rhᵀ + Rbh), 0 resets H before the product.
        private string GruStep(int d, string xw, string rT, string? rb, string? h)
        {
            var e = _e;
            long hs = _hidden;
            bool linearBeforeReset = _n.GetInt("linear_before_reset", 0) != 0;
            var x = Gates(xw, 3);
            string? hp = AddOpt(e, h is null ? null : e.MatMul(h, linearBeforeReset ? rT : Slice(rT, 0, 2 * hs)),
                rb is null ? null : linearBeforeReset ? rb : Slice(rb, 0, 2 * hs));
            var hg = hp is null ? null : Gates(hp, linearBeforeReset ? 3 : 2);
            string z = Act(d, 0, AddOpt(e, x[0], hg?[0])!), reset = Act(d, 0, AddOpt(e, x[1], hg?[1])!);
            string? hh = linearBeforeReset
                ? hg?[2]
                : AddOpt(e, h is null ? null : e.MatMul(e.Mul(reset, h), Slice(rT, 2 * hs, 3 * hs)), rb is null ? null : Slice(rb, 2 * hs, 3 * hs));
            string cand = Act(d, 1, AddOpt(e, x[2], hh is null ? null : linearBeforeReset ? e.Mul(reset, hh) : hh)!);
            // H' = (1 - z)·cand + z·H
            return h is null ? e.Mul(e.Sub(e.Scalar(1, _type), z), cand) : e.Add(cand, e.Mul(z, e.Sub(h, cand)));
        }
    }
}
