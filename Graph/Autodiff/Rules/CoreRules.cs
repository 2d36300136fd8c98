using OnnxKfac.Graph.Model;

namespace OnnxKfac.Graph.Autodiff.Rules;

/// <summary>Arithmetic and matrix products: Identity, Add, Sub, Mul, Div, Neg, Sum, MatMul, Gemm.</summary>
internal static class CoreRules
{
    public static void Register(GradientRegistry r)
    {
        r.Add("Identity", c => c.SetGrad(0, c.DY()!));
        r.Add("Add", c => { c.SetGrad(0, c.Unbroadcast(c.DY()!, c.X(0))); c.SetGrad(1, c.Unbroadcast(c.DY()!, c.X(1))); });
        r.Add("Sub", c =>
        {
            c.SetGrad(0, c.Unbroadcast(c.DY()!, c.X(0)));
            if (c.Needs(1)) c.SetGrad(1, c.Unbroadcast(c.Emit.Neg(c.DY()!), c.X(1)));
        });
        r.Add("Mul", c =>
        {
            if (c.Needs(0)) c.SetGrad(0, c.Unbroadcast(c.Emit.Mul(c.DY()!, c.X(1)), c.X(0)));
            if (c.Needs(1)) c.SetGrad(1, c.Unbroadcast(c.Emit.Mul(c.DY()!, c.X(0)), c.X(1)));
        });
        r.Add("Div", Div);
        r.Add("Neg", c => c.SetGrad(0, c.Emit.Neg(c.DY()!)));
        r.Add("Sum", c => { for (int i = 0; i < c.InputCount; i++) if (c.Needs(i)) c.SetGrad(i, c.Unbroadcast(c.DY()!, c.X(i))); });
        r.Add("MatMul", MatMul);
        r.Add("Gemm", Gemm);
    }

    // dA = dY / B, dB = -dY * Y / B
    private static void Div(GradientContext c)
    {
        var e = c.Emit;
        string scaled = e.Div(c.DY()!, c.X(1));
        if (c.Needs(0)) c.SetGrad(0, c.Unbroadcast(scaled, c.X(0)));
        if (c.Needs(1)) c.SetGrad(1, c.Unbroadcast(e.Neg(e.Mul(scaled, c.Y())), c.X(1)));
    }

    // Y = A @ B with numpy semantics (1-D operands promoted, batch dims broadcast).
    private static void MatMul(GradientContext c)
    {
        var e = c.Emit;
        string a = c.X(0), b = c.X(1), dy = c.DY()!;
        int ra = c.Rank(a), rb = c.Rank(b);
        if (ra == 0 || rb == 0)
            throw new UnsupportedOpException($"{GraphIndex.Describe(c.Node)}: MatMul operands must have rank >= 1, but '{(ra == 0 ? a : b)}' is a scalar");
        if (ra == 1 || rb == 1)
        {
            // Promote the vector operand(s) to matrices so one code path serves.
            string a2 = ra == 1 ? e.Op("Unsqueeze", [a, e.Int64s(0)]) : a;
            string b2 = rb == 1 ? e.Op("Unsqueeze", [b, e.Int64s(-1)]) : b;
            string dy2 = dy;
            if (ra == 1) dy2 = e.Op("Unsqueeze", [dy2, e.Int64s(rb == 1 ? 0 : -2)]);
            if (rb == 1) dy2 = e.Op("Unsqueeze", [dy2, e.Int64s(-1)]);
            int r2a = Math.Max(ra, 2), r2b = Math.Max(rb, 2);
            if (c.Needs(0))
            {
                string ga = e.MatMul(dy2, e.Transpose(b2, SwapLast(r2b)));
                c.SetGrad(0, e.Reshape(SumLeading(e, ga, Math.Max(r2a, r2b), r2a), e.Shape(a)));
            }
            if (c.Needs(1))
            {
                string gb = e.MatMul(e.Transpose(a2, SwapLast(r2a)), dy2);
                c.SetGrad(1, e.Reshape(SumLeading(e, gb, Math.Max(r2a, r2b), r2b), e.Shape(b)));
            }
            return;
        }
        if (c.Needs(0)) c.SetGrad(0, c.Unbroadcast(e.MatMul(dy, e.Transpose(b, SwapLast(rb))), a));
        if (c.Needs(1))
        {
            if (rb == 2 && ra > 2)
            {
                // Weight shared over batch axes (dense on (batch, seq, d)): fold them into one product.
                string a2d = e.Op("Flatten", [a], Attributes.Int("axis", ra - 1));
                string dy2d = e.Op("Flatten", [dy], Attributes.Int("axis", ra - 1));
                // K here is batch × sequence, thousands of rows: MLAS's transA penalty was not shown to repay
                // a copy of A there (KeptTranspose; standalone A/B runs of 4096-row products were split).
                c.SetGrad(1, e.MatMul(e.Transpose(a2d, [1, 0]), dy2d));
            }
            else if (ra == 2 && rb == 2 && LargeWeight(c, b)) c.SetGrad(1, e.MatMul(KeptTranspose(e, a), dy));
            else c.SetGrad(1, c.Unbroadcast(e.MatMul(e.Transpose(a, SwapLast(ra)), dy), b));
        }
    }

    /// <summary>Sums away the leading batch axes a rank-<paramref name="rank"/> operand was broadcast over.</summary>
    private static string SumLeading(NodeEmitter e, string g, int gradRank, int rank) =>
        gradRank > rank ? e.ReduceSum(g, Enumerable.Range(0, gradRank - rank).Select(x => (long)x).ToArray(), keepDims: false) : g;

    private static long[] SwapLast(int rank)
    {
        var p = Enumerable.Range(0, rank).Select(x => (long)x).ToArray();
        (p[rank - 1], p[rank - 2]) = (p[rank - 2], p[rank - 1]);
        return p;
    }

    // Y = alpha * A' B' + beta * C, A' = transA ? Aᵀ : A, B' = transB ? Bᵀ : B.
    private static void Gemm(GradientContext c)
    {
        var e = c.Emit;
        string dy = c.DY()!;
        bool ta = c.AttrInt("transA", 0) == 1, tb = c.AttrInt("transB", 0) == 1;
        float alpha = c.AttrFloat("alpha", 1f), beta = c.AttrFloat("beta", 1f);
        var gemm = (string x, string y, bool tx, bool ty, float scale) =>
            e.Op("Gemm", [x, y], Attributes.Int("transA", tx ? 1 : 0), Attributes.Int("transB", ty ? 1 : 0), Attributes.Float("alpha", scale));
        // dA' = alpha dY B'ᵀ ; dB' = alpha A'ᵀ dY
        if (c.Needs(0)) c.SetGrad(0, ta ? gemm(c.X(1), dy, tb, true, alpha) : gemm(dy, c.X(1), false, !tb, alpha));
        if (c.Needs(1))
        {
            // dB' needs one operand transposed with the batch as its rows: dY when B is used transposed
            // (transB = 1, as PyTorch exports Linear), A otherwise. For a large weight it is given to
            // the Gemm already transposed (KeptTranspose): Rules README, Known costs.
            bool kept = LargeWeight(c, c.X(1));
            if (tb) c.SetGrad(1, kept ? gemm(KeptTranspose(e, dy), c.X(0), false, ta, alpha) : gemm(dy, c.X(0), true, ta, alpha));
            else c.SetGrad(1, kept && !ta ? gemm(KeptTranspose(e, c.X(0)), dy, false, false, alpha) : gemm(c.X(0), dy, !ta, false, alpha));
        }
        if (c.HasInput(2) && c.Needs(2))
        {
            string g = beta == 1f ? dy : e.Mul(dy, c.Scalar(beta, dy));
            c.SetGrad(2, c.Unbroadcast(g, c.X(2)));
        }
    }

    /// <summary>
    /// The transpose of matrix <paramref name="x"/>, built as Unsqueeze → Transpose [0, 2, 1] → Squeeze so
    /// that ONNX Runtime does not fold it into the consuming Gemm or MatMul as transA (its
    /// GemmTransposeFusion and MatmulTransposeFusion take only a rank-2 Transpose as their producer).
    /// MLAS runs a Gemm with its A operand transposed ~12-20% below its rate when K, the batch, is a
    /// few hundred; the copy costs a few percent of the product. Rules README, Known costs.
    /// </summary>
    internal static string KeptTranspose(NodeEmitter e, string x) =>
        e.Op("Squeeze", [e.Transpose(e.Op("Unsqueeze", [x, e.Int64s(0)]), [0, 2, 1]), e.Int64s(0)]);

    /// <summary>
    /// Weights of at least this many elements (static shape) get their gradient's transposed operand as
    /// a <see cref="KeptTranspose"/>; below it the copy's fixed cost wins over MLAS's transA penalty.
    /// </summary>
    internal const long KeptTransposeMinWeight = 1 << 16;

    private static bool LargeWeight(GradientContext c, string weight) =>
        c.Info(weight)?.Shape is { Length: 2 } ws && ws.All(d => d > 0) && ws[0] * ws[1] >= KeptTransposeMinWeight;
}
