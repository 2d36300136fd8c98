using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Layers.Patterns;

/// <summary>Dense layers: Gemm, and MatMul x @ W with an optional bias Add (also on (batch, seq, d) inputs).</summary>
internal static class DensePatterns
{
    public static LayerMatch Gemm(NodeProto n, LayerMatchContext c)
    {
        string? w = c.Param(n.Input[1]);
        if (w is null) return LayerMatch.Reject($"B '{n.Input[1]}' is not a trainable parameter");
        if (c.Param(n.Input[0]) is not null) return LayerMatch.Reject("A is a parameter too (weight on both sides)");
        string? b = n.Input.Count > 2 && n.Input[2].Length > 0 ? c.Param(n.Input[2]) : null;
        bool tb = n.GetInt("transB", 0) == 1;
        var ws = c.Shape(w);
        if (ws is not null && ws.Length != 2) return LayerMatch.Reject($"B '{w}' is not a matrix");
        if (b is not null && c.Shape(b) is { } bs && bs.Length > 1 && !(bs.Length == 2 && bs[0] == 1))
            b = null; // a full [M, N] bias matrix is not a per-output bias: leave it to a diagonal block
        return LayerMatchContext.Layer(n, LayerKind.Dense, w, n.Input[0]) with
        {
            Bias = b, WeightTransposed = tb, InputTransposed = n.GetInt("transA", 0) == 1,
            Alpha = n.GetFloat("alpha", 1f), Beta = n.GetFloat("beta", 1f),
            InFeatures = ws is null ? -1 : tb ? ws[1] : ws[0], OutFeatures = ws is null ? -1 : tb ? ws[0] : ws[1],
        };
    }

    public static LayerMatch MatMul(NodeProto n, LayerMatchContext c)
    {
        // x @ Transpose(W): a weight stored [out, in] (a kept tie, see Training/Ties), as Gemm transB=1.
        bool transposed = c.Index.Producer(n.Input[1]) is { OpType: "Transpose" } tp && c.Param(tp.Input[0]) is not null
            && (tp.GetInts("perm") is not { Length: > 0 } perm || perm.SequenceEqual([1L, 0L]));
        string? w = c.Param(transposed ? c.Index.Producer(n.Input[1])!.Input[0] : n.Input[1]);
        if (w is null)
            return c.Param(n.Input[0]) is not null
                ? LayerMatch.Reject("the weight is the left operand (only x @ W is a dense layer)")
                : LayerMatch.None; // activation @ activation (attention scores): not a layer, nothing to report
        var ws = c.Shape(w);
        if (ws is null || ws.Length != 2) return LayerMatch.Reject($"weight '{w}' is not a matrix");
        if (transposed) ws = [ws[1], ws[0]];
        int rank = c.Infos.GetValueOrDefault(n.Input[0])?.Rank ?? -1;
        if (rank < 2) return LayerMatch.Reject($"input '{n.Input[0]}' has rank {(rank < 0 ? "unknown" : rank.ToString())}; a dense layer needs rank >= 2");
        string pre = n.Output[0];
        string? bias = null;
        var consumers = c.Index.Consumers(pre);
        if (consumers.Count == 1 && consumers[0].OpType == "Add" && consumers[0].Input.Count == 2 && consumers[0].Output.Count > 0)
        {
            var add = consumers[0];
            string other = add.Input[0] == pre ? add.Input[1] : add.Input[0];
            if (c.Param(other) is { } b && c.Shape(b) is { } bs && bs.Length == 1 && bs[0] == ws[1])
            {
                bias = b;
                pre = add.Output[0];
            }
        }
        return LayerMatchContext.Layer(n, LayerKind.Dense, w, n.Input[0]) with
        {
            Bias = bias, PreActivation = pre, InputRank = rank, WeightTransposed = transposed, InFeatures = ws[0], OutFeatures = ws[1],
        };
    }
}
