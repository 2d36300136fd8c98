using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Autodiff;

/// <summary>
/// A model extended with the vector-Jacobian product of some of its outputs: for every
/// output Y named in <c>seeded</c> a new graph input <c>{Y}_seed</c> (shaped like Y)
/// carries dL/dY, and for every tensor X of <c>wrt</c> a new output <c>{X}_grad</c>
/// carries dL/dX. Used by the gradient tests and by tools that need raw VJPs.
/// </summary>
public static class GradientGraph
{
    public static ModelProto Build(ModelProto source, IReadOnlyList<string> seeded, IReadOnlyList<string> wrt, GradientRegistry? registry = null)
    {
        var model = source.Clone();
        int sourceOpset = OpsetUpgrade.Apply(model);
        var ctx = new GraphBuildContext(model, sourceOpset);
        var seeds = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var y in seeded)
        {
            var info = ctx.Infos.GetValueOrDefault(y)
                ?? new TensorInfo(ctx.Infos.GetValueOrDefault(model.Graph.Input[0].Name)?.ElemType ?? 1, null);
            string seed = y + "_seed";
            model.Graph.Input.Add(ValueInfos.Tensor(seed, info.ElemType, info.Shape));
            ctx.SetInfo(seed, info with { Value = null });
            seeds[y] = seed;
        }
        var grads = new BackwardBuilder(ctx, registry).Build(seeds, wrt);
        ctx.Commit();
        foreach (var x in wrt)
        {
            var info = ctx.Infos.GetValueOrDefault(x);
            model.Graph.Output.Add(ValueInfos.Tensor(grads[x], info?.ElemType ?? 1, info?.Shape));
        }
        return model;
    }
}
