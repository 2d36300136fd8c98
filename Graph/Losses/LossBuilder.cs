using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Losses;

/// <summary>A loss appended to the graph: its scalar value and dLoss/dOutput in closed form.</summary>
public sealed record LossTensors(string Loss, string OutputGradient);

/// <summary>
/// Appends a loss and its gradient w.r.t. the model output in closed form (cheaper and
/// more accurate than differentiating the loss ops), and the sampled-target gradient of
/// the model's own predictive distribution for the true Fisher.
/// </summary>
internal static class LossBuilder
{
    public static LossTensors Append(GraphBuildContext g, LossOptions o, string output, string target, string lossName)
    {
        var e = g.Emitter("loss");
        int type = ElemType(g, output);
        return o.Kind switch
        {
            LossKind.CrossEntropy => CrossEntropy(g, e, o, output, target, lossName, type),
            LossKind.Mse => Elementwise(e, o, output, target, lossName, type, mse: true),
            LossKind.L1 => Elementwise(e, o, output, target, lossName, type, mse: false),
            LossKind.BceWithLogits => Bce(e, o, output, target, lossName, type),
            _ => throw new ArgumentOutOfRangeException(nameof(o)),
        };
    }

    private static int ElemType(GraphBuildContext g, string t)
    {
        int type = g.Infos.GetValueOrDefault(t)?.ElemType ?? (int)DataType.Float;
        if (!TensorData.IsFloat(type))
            throw new OnnxKfacException($"the loss needs a floating-point model output, but '{t}' is {TensorData.TypeName(type)}");
        return type;
    }

    /// <summary>The count a mean divides by: the element count of <paramref name="t"/>, in <paramref name="type"/>.</summary>
    private static string Count(NodeEmitter e, string t, int type) => e.Cast(e.Op("Size", [t]), type);

    private static string Reduce(NodeEmitter e, LossOptions o, string perElement, string count, string lossName)
    {
        string total = e.Op("ReduceSum", [perElement], Attributes.Int("keepdims", 0));
        return o.Reduction == LossReduction.Mean ? e.OpNamed(lossName, "Div", [total, count]) : e.OpNamed(lossName, "Identity", [total]);
    }

    private static LossTensors Elementwise(NodeEmitter e, LossOptions o, string y, string t, string lossName, int type, bool mse)
    {
        string diff = e.Sub(y, t);
        string count = Count(e, y, type);
        string loss = Reduce(e, o, mse ? e.Mul(diff, diff) : e.Op("Abs", [diff]), count, lossName);
        // d/dy: 2(y - t) for squared error, sign(y - t) for absolute error (0 at a tie, as torch).
        string grad = mse ? e.Mul(diff, e.Scalar(2, type)) : e.Op("Sign", [diff]);
        if (o.Reduction == LossReduction.Mean) grad = e.Div(grad, count);
        return new LossTensors(loss, grad);
    }

    private static LossTensors Bce(NodeEmitter e, LossOptions o, string z, string t, string lossName, int type)
    {
        // max(z, 0) - z t + log(1 + exp(-|z|)): stable for large |z|.
        string softplus = e.Op("Softplus", [e.Neg(e.Op("Abs", [z]))]);
        string perElement = e.Add(e.Sub(e.Op("Relu", [z]), e.Mul(z, t)), softplus);
        string count = Count(e, z, type);
        string loss = Reduce(e, o, perElement, count, lossName);
        string grad = e.Sub(e.Op("Sigmoid", [z]), t);
        if (o.Reduction == LossReduction.Mean) grad = e.Div(grad, count);
        return new LossTensors(loss, grad);
    }

    /// <summary>
    /// torch.nn.CrossEntropyLoss with class indices, weights, ignore_index and label
    /// smoothing. With weights, the mean divides both terms by Σ w[t] over kept rows;
    /// without, the smoothing term is a plain mean over all rows (torch's own quirk).
    /// </summary>
    private static LossTensors CrossEntropy(GraphBuildContext g, NodeEmitter e, LossOptions o, string z, string t, string lossName, int type)
    {
        var (z2, t2, restore) = FlattenClasses(g, e, z, t);
        string logp = e.Op("LogSoftmax", [z2], Attributes.Int("axis", 1));
        string p = e.Op("Exp", [logp]);
        string ignore = e.Op("Equal", [t2, e.Int64(o.IgnoreIndex)]);
        string keep = e.Cast(e.Op("Not", [ignore]), type);
        string tSafe = e.Op("Where", [ignore, e.Int64(0), t2]);
        string classes = e.Op("Gather", [e.Shape(z2), e.Int64s(1)]);
        string onehot = e.Op("OneHot", [tSafe, classes, e.Constant(TensorData.FromFloats("onehot_values", [2], [0f, 1f]).CastTo(type))], Attributes.Int("axis", 1));
        string? weights = o.ClassWeights is { } w ? e.Constant(TensorData.FromFloats("class_weights", [w.Count], w.ToArray()).CastTo(type)) : null;
        string coeff = weights is null ? keep : e.Mul(keep, e.Op("Gather", [weights, tSafe]));    // [R]
        string nll = e.Neg(e.ReduceSum(e.Mul(onehot, logp), [1], keepDims: false));                 // [R]
        string sumCoeff = e.Op("ReduceSum", [coeff], Attributes.Int("keepdims", 0));
        string rows = e.Cast(e.Op("Gather", [e.Shape(z2), e.Int64(0)]), type);
        bool mean = o.Reduction == LossReduction.Mean;
        string nllTotal = e.Op("ReduceSum", [e.Mul(coeff, nll)], Attributes.Int("keepdims", 0));
        string loss1 = mean ? e.Div(nllTotal, sumCoeff) : nllTotal;
        string pMinusY = e.Sub(p, onehot);
        string coeffCol = e.Op("Unsqueeze", [coeff, e.Int64s(1)]);
        string grad = e.Mul(pMinusY, coeffCol);
        if (mean) grad = e.Div(grad, sumCoeff);
        string loss;
        double eps = o.LabelSmoothing;
        if (eps > 0)
        {
            string classCount = e.Cast(classes, type);
            string keepCol = e.Op("Unsqueeze", [keep, e.Int64s(1)]);
            // smooth_i = -Σ_c w_c log p_ic (masked); its gradient m_i (Σw · p_i - w).
            string smoothRows = weights is null
                ? e.Neg(e.ReduceSum(logp, [1], keepDims: false))
                : e.Neg(e.ReduceSum(e.Mul(logp, weights), [1], keepDims: false));
            string smoothTotal = e.Op("ReduceSum", [e.Mul(smoothRows, keep)], Attributes.Int("keepdims", 0));
            string smoothDen = !mean ? "" : weights is null ? rows : sumCoeff;
            string smooth = mean ? e.Div(smoothTotal, smoothDen) : smoothTotal;
            string smoothGrad = weights is null
                ? e.Sub(e.Mul(p, classCount), e.Op("Expand", [e.Scalar(1, type), e.Shape(p)]))
                : e.Sub(e.Mul(p, e.Op("ReduceSum", [weights], Attributes.Int("keepdims", 0))), weights);
            smoothGrad = e.Mul(smoothGrad, keepCol);
            if (mean) smoothGrad = e.Div(smoothGrad, smoothDen);
            string a = e.Scalar(1 - eps, type);
            string b = e.Div(e.Scalar(eps, type), classCount);
            loss = e.OpNamed(lossName, "Add", [e.Mul(loss1, a), e.Mul(smooth, b)]);
            grad = e.Add(e.Mul(grad, a), e.Mul(smoothGrad, b));
        }
        else loss = e.OpNamed(lossName, "Identity", [loss1]);
        return new LossTensors(loss, restore(grad));
    }

    /// <summary>
    /// Logits [N, C, d...] become rows [N·d..., C] (targets [N, d...] become [N·d...]);
    /// returns a function that maps a row gradient back to the logits' layout.
    /// </summary>
    private static (string Z, string T, Func<string, string> Restore) FlattenClasses(GraphBuildContext g, NodeEmitter e, string z, string t)
    {
        int rank = g.Infos.GetValueOrDefault(z)?.Rank
            ?? throw new OnnxKfacException($"cross-entropy needs the rank of output '{z}', which is unknown (give the output a shape in the model)");
        if (rank < 2) throw new OnnxKfacException($"cross-entropy needs logits of shape [N, C] or [N, C, d...], but output '{z}' has rank {rank}");
        if (rank == 2) return (z, e.Reshape(t, e.Int64s(-1)), grad => grad);
        var perm = new long[rank];
        perm[0] = 0;
        for (int k = 1; k < rank - 1; k++) perm[k] = k + 1;
        perm[rank - 1] = 1;
        var inverse = new long[rank];
        for (int k = 0; k < rank; k++) inverse[perm[k]] = k;
        string moved = e.Transpose(z, perm);
        string movedShape = e.Shape(moved);
        string rows = e.Reshape(moved, e.Op("Concat", [e.Int64s(-1), e.Op("Gather", [e.Shape(z), e.Int64s(1)])], Attributes.Int("axis", 0)));
        return (rows, e.Reshape(t, e.Int64s(-1)), grad => e.Transpose(e.Reshape(grad, movedShape), inverse));
    }

    /// <summary>How the sampled Fisher pass draws its targets; the noise input's distribution.</summary>
    public static (string Distribution, string Noise) FisherFor(LossKind kind) => kind switch
    {
        LossKind.CrossEntropy => ("categorical", "uniform"),
        LossKind.BceWithLogits => ("bernoulli", "uniform"),
        LossKind.Mse => ("gaussian", "normal"),
        LossKind.L1 => ("laplace", "uniform"),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>
    /// dL_s/dOutput for targets sampled from the model's predictive distribution, with
    /// L_s the per-example negative log-likelihood summed over outputs and averaged over
    /// the batch (scale 1/N, N = the output's first dimension). Noise is a graph input
    /// shaped like the output: uniform (0,1) except for mse, where it is standard normal.
    /// </summary>
    public static string AppendSampled(GraphBuildContext g, LossKind kind, string output, string noise)
    {
        var e = g.Emitter("fisher");
        int type = ElemType(g, output);
        string n = e.Cast(e.Op("Gather", [e.Shape(output), e.Int64(0)]), type);
        string grad;
        switch (kind)
        {
            case LossKind.CrossEntropy:
            {
                // Gumbel-max: argmax(z - log(-log U)) is a categorical sample of softmax(z);
                // axis 1 is the class axis for [N, C] and [N, C, d...] alike.
                string gumbel = e.Neg(e.Op("Log", [e.Neg(e.Op("Log", [noise]))]));
                string sample = e.Op("ArgMax", [e.Add(output, gumbel)], Attributes.Int("axis", 1), Attributes.Int("keepdims", 0));
                string classes = e.Op("Gather", [e.Shape(output), e.Int64s(1)]);
                string onehot = e.Op("OneHot", [sample, classes, e.Constant(TensorData.FromFloats("onehot_values", [2], [0f, 1f]).CastTo(type))], Attributes.Int("axis", 1));
                grad = e.Sub(e.Op("Softmax", [output], Attributes.Int("axis", 1)), onehot);
                break;
            }
            case LossKind.BceWithLogits:
            {
                string p = e.Op("Sigmoid", [output]);
                string sample = e.Cast(e.Op("Less", [noise, p]), type);
                grad = e.Sub(p, sample);
                break;
            }
            case LossKind.Mse:
                // torch's squared error is a Gaussian NLL with variance 1/2: t = y + n/√2,
                // d/dy Σ (y - t)² = -√2 n.
                grad = e.Mul(noise, e.Scalar(-Math.Sqrt(2), type));
                break;
            case LossKind.L1:
                // Laplace(y, 1): sign(y - t) is ±1 with equal probability.
                grad = e.Op("Sign", [e.Sub(noise, e.Scalar(0.5, type))]);
                break;
            default: throw new ArgumentOutOfRangeException(nameof(kind));
        }
        return e.Div(grad, n);
    }
}

internal static class TensorProtoCast
{
    /// <summary>Re-encodes a float32 constant in another float type (float64, float16).</summary>
    public static Proto.TensorProto CastTo(this Proto.TensorProto t, int elemType)
    {
        if (elemType == t.DataType) return t;
        var values = TensorData.ToDoubles(t);
        return elemType switch
        {
            (int)DataType.Double => TensorData.FromDoubles(t.Name, t.Dims.ToArray(), values),
            (int)DataType.Float => TensorData.FromFloats(t.Name, t.Dims.ToArray(), values.Select(v => (float)v).ToArray()),
            _ => throw new OnnxKfacException($"losses support float and double outputs, not {TensorData.TypeName(elemType)}"),
        };
    }
}
