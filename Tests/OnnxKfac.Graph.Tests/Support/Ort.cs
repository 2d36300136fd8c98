using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Tests.Support;

/// <summary>Runs a model on the stock ONNX Runtime CPU build.</summary>
public sealed class Ort : IDisposable
{
    private readonly InferenceSession _session;

    public Ort(ModelProto model)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC };
        _session = new InferenceSession(model.ToByteArray(), options);
    }

    public IReadOnlyList<string> OutputNames => _session.OutputNames;

    public Dictionary<string, TestTensor> Run(IReadOnlyDictionary<string, TestTensor> inputs, IReadOnlyList<string>? outputs = null)
    {
        outputs ??= _session.OutputNames;
        var names = inputs.Keys.ToArray();
        var values = names.Select(n => inputs[n].ToOrtValue()).ToArray();
        try
        {
            using var runOptions = new RunOptions();
            using var results = _session.Run(runOptions, names, values, outputs.ToArray());
            var dict = new Dictionary<string, TestTensor>();
            for (int k = 0; k < outputs.Count; k++) dict[outputs[k]] = TestTensor.FromOrtValue(results[k]);
            return dict;
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    public void Dispose() => _session.Dispose();
}
