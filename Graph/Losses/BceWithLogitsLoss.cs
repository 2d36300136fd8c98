using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;

namespace OnnxKfac.Graph.Losses;

/// <summary>
/// torch.nn.BCEWithLogitsLoss: targets in [0, 1] shaped like the logits. True Fisher:
/// Bernoulli targets. Curvature: p(1 − p) per element, p = sigmoid(z).
/// </summary>
internal sealed class BceWithLogitsLoss : LossFunction
{
    public override LossKind Kind => LossKind.BceWithLogits;
    public override string Name => "bce-with-logits";
    public override IReadOnlyList<string> Aliases => ["bcewithlogits"];
    public override string SampledDistribution => "bernoulli";
    public override string NoiseDistribution => "uniform";

    // max(z, 0) - z t + log(1 + exp(-|z|)): stable for large |z|.
    protected override LossTensors AppendLoss(GraphBuildContext g, NodeEmitter e, LossOptions o, string z, string t, string lossName, int type)
    {
        string softplus = e.Op("Softplus", [e.Neg(e.Op("Abs", [z]))]);
        string perElement = e.Add(e.Sub(e.Op("Relu", [z]), e.Mul(z, t)), softplus);
        string count = Count(e, z, type);
        string loss = Reduce(e, o, perElement, count, lossName);
        string grad = e.Sub(e.Op("Sigmoid", [z]), t);
        if (o.Reduction == LossReduction.Mean) grad = e.Div(grad, count);
        return new LossTensors(loss, grad) { Denominator = o.Reduction == LossReduction.Mean ? count : null };
    }

    protected override string SampledGradient(NodeEmitter e, string output, string noise, int type)
    {
        string p = e.Op("Sigmoid", [output]);
        string sample = e.Cast(e.Op("Less", [noise, p]), type);
        return e.Sub(p, sample);
    }

    protected override string HessianProduct(NodeEmitter e, GraphBuildContext g, LossOptions o, string z, string target, string w, int type)
    {
        string p = e.Op("Sigmoid", [z]);
        return ElementwiseHessian(e, o, z, e.Mul(p, e.Sub(e.Scalar(1, type), p)), w, type);
    }
}
