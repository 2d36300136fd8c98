using OnnxKfac.Graph.Autodiff;

namespace OnnxKfac.Graph.Losses;

/// <summary>
/// torch.nn.MSELoss: Σ (y − t)², over the element count for the mean. True Fisher: Gaussian
/// targets (torch's squared error is a Gaussian NLL with variance 1/2). Curvature: 2 per element.
/// </summary>
internal sealed class MseLoss : LossFunction
{
    public override LossKind Kind => LossKind.Mse;
    public override string Name => "mse";
    public override string SampledDistribution => "gaussian";
    public override string NoiseDistribution => "normal";

    protected override LossTensors AppendLoss(GraphBuildContext g, NodeEmitter e, LossOptions o, string y, string t, string lossName, int type) =>
        AppendElementwise(e, o, y, t, lossName, type, diff => e.Mul(diff, diff), diff => e.Mul(diff, e.Scalar(2, type)));

    // t = y + n/√2, so d/dy Σ (y - t)² = -√2 n.
    protected override string SampledGradient(NodeEmitter e, string output, string noise, int type) =>
        e.Mul(noise, e.Scalar(-Math.Sqrt(2), type));

    protected override string HessianProduct(NodeEmitter e, GraphBuildContext g, LossOptions o, string output, string target, string w, int type) =>
        ElementwiseHessian(e, o, output, e.Scalar(2, type), w, type);
}
