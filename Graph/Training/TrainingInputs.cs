using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Training;

/// <summary>
/// The inputs every graph built from a model for training shares (the training graph, the
/// Jacobian-vector-product graph): the data inputs, the selected parameters turned into graph
/// inputs (the runtime owns the weights), and the loss target, with their manifest entries.
/// </summary>
internal static class TrainingInputs
{
    public sealed record Declared(ParameterSelection.Result Selection, List<ManifestTensor> Inputs, string Target)
    {
        public IReadOnlyList<TensorProto> Parameters => Selection.Parameters;
    }

    public static Declared Declare(GraphBuildContext g, TrainingGraphOptions options, string output, GradientRegistry registry)
    {
        var graph = g.Model.Graph;
        var selection = ParameterSelection.Select(g.Index, output, options.Trainable, options.Frozen, registry);
        var inputs = new List<ManifestTensor>();
        foreach (var vi in graph.Input.Where(i => !g.Index.Initializers.ContainsKey(i.Name)))
        {
            var info = ShapeInference.FromValueInfo(vi);
            inputs.Add(new ManifestTensor(vi.Name, TensorRole.Data, TypeName(info?.ElemType ?? 0), info?.Shape));
        }
        foreach (var p in selection.Parameters)
        {
            if (!g.Index.GraphInputs.ContainsKey(p.Name)) graph.Input.Add(ValueInfos.Tensor(p.Name, p.DataType, p.Dims.ToArray()));
            inputs.Add(new ManifestTensor(p.Name, TensorRole.Parameter, TypeName(p.DataType), p.Dims.ToArray()));
        }
        if (!options.KeepInitialValues)
            foreach (var p in selection.Parameters) graph.Initializer.Remove(p);

        string target = g.State.UniqueName(TrainingGraphBuilder.TargetName);
        var targetInfo = options.Loss.Function.TargetInfo(g.Infos.GetValueOrDefault(output));
        graph.Input.Add(ValueInfos.Tensor(target, targetInfo.ElemType, targetInfo.PlainShape));
        g.SetInfo(target, targetInfo);
        inputs.Add(new ManifestTensor(target, TensorRole.Target, TypeName(targetInfo.ElemType), targetInfo.PlainShape));
        return new Declared(selection, inputs, target);
    }

    public static string TypeName(int elemType) => elemType == 0 ? "unknown" : TensorData.TypeName(elemType);
}
