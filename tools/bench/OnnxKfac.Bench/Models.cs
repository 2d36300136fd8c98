using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Bench;

/// <summary>A benchmarked model: where its file is and how to make inputs for it.</summary>
internal sealed record ModelSpec(string Name, string RelativePath, long Vocab = 0)
{
    public static readonly IReadOnlyList<ModelSpec> All =
    [
        new("fashion_mlp", "tools/default/fashion_mlp.onnx"),
        new("mlp", "Tests/OnnxKfac.Graph.Tests/Fixtures/mlp_opset17/model.onnx"),
        new("transformer", "Tests/OnnxKfac.Graph.Tests/Fixtures/transformer_opset13/model.onnx", Vocab: 20),
        new("cnn", "Tests/OnnxKfac.Graph.Tests/Fixtures/cnn_opset17/model.onnx"),
        new("resnet", "Tests/OnnxKfac.Graph.Tests/Fixtures/resnet_opset17/model.onnx"),
    ];

    public static ModelSpec Find(string name) =>
        All.FirstOrDefault(m => m.Name == name) ?? throw new ArgumentException(
            $"unknown model '{name}'; known: {string.Join(", ", All.Select(m => m.Name))}");
}

/// <summary>Fills a batch with reproducible data: floats uniform in [0, 1), token ids below the vocabulary, class targets.</summary>
internal static class BatchFiller
{
    public static void Fill(TrainingSession session, BatchBinding batch, ModelSpec spec, int seed)
    {
        var rng = new Random(seed);
        foreach (var input in session.DataInputs)
        {
            switch (input.ElemType)
            {
                case "float":
                    var f = batch.Input<float>(input.Name);
                    for (int i = 0; i < f.Length; i++) f[i] = (float)rng.NextDouble();
                    break;
                case "int64":
                    if (spec.Vocab <= 0) throw new InvalidOperationException($"{spec.Name}: int64 input '{input.Name}' needs a vocabulary size");
                    var ids = batch.Input<long>(input.Name);
                    for (int i = 0; i < ids.Length; i++) ids[i] = rng.NextInt64(spec.Vocab);
                    break;
                default:
                    throw new InvalidOperationException($"{spec.Name}: input '{input.Name}' has element type {input.ElemType}, which the benchmark does not fill");
            }
        }
        long classes = Classes(session.Manifest);
        var target = batch.Input<long>(session.TargetInput.Name);
        for (int i = 0; i < target.Length; i++) target[i] = rng.NextInt64(classes);
    }

    /// <summary>The number of classes: the last dimension of the output the loss reads.</summary>
    public static long Classes(TrainingManifest m)
    {
        var output = m.Outputs.First(o => o.Name == m.Loss.Output);
        long c = output.Shape is { Length: >= 2 } s ? s[^1] : -1;
        if (c <= 0) throw new InvalidOperationException($"output '{output.Name}' has no static class dimension");
        return c;
    }
}
