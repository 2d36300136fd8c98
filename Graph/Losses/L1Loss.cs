using OnnxKfac.Graph.Autodiff;

namespace OnnxKfac.Graph.Losses;

/// <summary>
/// torch.nn.L1Loss: Σ |y − t|, over the element count for the mean; d/dy = sign(y − t), 0 at
/// a tie as torch. True Fisher: Laplace targets. Its Hessian is zero almost everywhere, so it
/// has no output-space curvature.
/// </summary>
internal sealed class L1Loss : LossFunction
{
    public override LossKind Kind => LossKind.L1;
    public override string Name => "l1";
    public override string SampledDistribution => "laplace";
    public override string NoiseDistribution => "uniform";

    protected override LossTensors AppendLoss(GraphBuildContext g, NodeEmitter e, LossOptions o, string y, string t, string lossName, int type) =>
        AppendElementwise(e, o, y, t, lossName, type, diff => e.Op("Abs", [diff]), diff => e.Op("Sign", [diff]));

    // Laplace(y, 1): sign(y - t) is ±1 with equal probability.
    protected override string SampledGradient(NodeEmitter e, string output, string noise, int type) =>
        e.Op("Sign", [e.Sub(noise, e.Scalar(0.5, type))]);

    protected override string HessianProduct(NodeEmitter e, GraphBuildContext g, LossOptions o, string output, string target, string w, int type) =>
        throw new OnnxKfacException("l1 has no curvature: the exact quadratic model needs cross-entropy, mse or bce-with-logits");
}
