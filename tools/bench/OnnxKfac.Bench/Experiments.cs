using System.Diagnostics;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using TrainingSession = OnnxKfac.Toolkit.Runtime.TrainingSession;
using BatchBinding = OnnxKfac.Toolkit.Runtime.BatchBinding;

namespace OnnxKfac.Bench;

/// <summary>
/// Diagnostic A/B timings of a session's training graph run directly on ONNX Runtime
/// (inputs bound once; outputs left to ONNX Runtime, the same for both variants):
/// the graph as built versus a patched copy, and session settings the toolkit does not expose.
/// </summary>
internal static class Experiments
{
    /// <summary>
    /// The Pow rule emits dA = dY·B·Pow(A, B−1) even for a constant B. For B = 2 (LayerNorm's
    /// variance, as exported) ONNX Runtime folds B−1 to the constant 1 and then runs its
    /// generic std::pow kernel per element. The patch replaces that Pow(A, 1) by Mul(A, 1)
    /// (same values, bit for bit), the cost of what a folded rule would emit (B·A).
    /// </summary>
    public static JsonObject PowPatch(TrainingSession session, BatchBinding batch, int threads, int warmup, int steps)
    {
        var patched = session.TrainingModel.Clone();
        var constants = ScalarConstants(patched.Graph);
        int count = 0;
        foreach (var node in patched.Graph.Node)
        {
            if (node.OpType != "Pow" || !node.Name.Contains("/grad/", StringComparison.Ordinal)) continue;
            // The exponent is Sub(B, 1) of a constant B = 2: exactly 1.
            var sub = patched.Graph.Node.FirstOrDefault(n => n.Output.Contains(node.Input[1]));
            if (sub is not { OpType: "Sub" } || !constants.TryGetValue(sub.Input[0], out float b) || b != 2f
                || !constants.TryGetValue(sub.Input[1], out float one) || one != 1f) continue;
            node.OpType = "Mul";
            count++;
        }
        var original = Time(session.TrainingModel, session, batch, threads, spinning: true, warmup, steps, out var before);
        var after = Time(patched, session, batch, threads, spinning: true, warmup, steps, out var outputs);
        double maxDiff = 0;
        foreach (var (name, v) in before)
            for (int i = 0; i < v.Length; i++) maxDiff = Math.Max(maxDiff, Math.Abs(v[i] - outputs[name][i]));
        return new JsonObject
        {
            ["experiment"] = "pow_grad_exponent_one",
            ["patched_nodes"] = count,
            ["original"] = original.Json(),
            ["patched"] = after.Json(),
            ["max_output_difference"] = maxDiff,
        };
    }

    /// <summary>The training graph with ONNX Runtime's intra-op thread spinning on (its default) and off.</summary>
    public static JsonObject Spinning(TrainingSession session, BatchBinding batch, int threads, int warmup, int steps)
    {
        var on = Time(session.TrainingModel, session, batch, threads, spinning: true, warmup, steps, out _);
        var off = Time(session.TrainingModel, session, batch, threads, spinning: false, warmup, steps, out _);
        return new JsonObject { ["experiment"] = "intra_op_spinning", ["spinning_on"] = on.Json(), ["spinning_off"] = off.Json() };
    }

    private static Dictionary<string, float> ScalarConstants(GraphProto g)
    {
        var result = new Dictionary<string, float>(StringComparer.Ordinal);
        foreach (var t in g.Initializer)
            if (t.DataType == (int)TensorProto.Types.DataType.Float && t.Dims.Aggregate(1L, (a, d) => a * d) == 1)
                result[t.Name] = Graph.Model.TensorData.ToFloats(t)[0];
        foreach (var n in g.Node.Where(n => n.OpType == "Constant"))
        {
            var value = n.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
            if (value is { DataType: (int)TensorProto.Types.DataType.Float } && value.Dims.Aggregate(1L, (a, d) => a * d) == 1)
                result[n.Output[0]] = Graph.Model.TensorData.ToFloats(value)[0];
        }
        return result;
    }

    private sealed record Result(double Median, double P90, double Min)
    {
        public JsonObject Json() => new() { ["median_ms"] = Median, ["p90_ms"] = P90, ["min_ms"] = Min };
    }

    private static Result Time(ModelProto model, TrainingSession session, BatchBinding batch, int threads, bool spinning,
        int warmup, int steps, out Dictionary<string, float[]> floatOutputs)
    {
        using var options = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            IntraOpNumThreads = threads,
        };
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", spinning ? "1" : "0");
        var owned = new List<OrtValue>();
        using var s = new InferenceSession(model.ToByteArray(), options);
        using var binding = s.CreateIoBinding();
        using var runOptions = new RunOptions();
        try
        {
            foreach (var p in session.Parameters)
            {
                var v = OrtValue.CreateTensorValueFromMemory(p.Value, p.Shape);
                owned.Add(v);
                binding.BindInput(p.Name, v);
            }
            foreach (var input in session.Manifest.Inputs.Where(i => i.Role is not TensorRole.Parameter))
            {
                long[] shape = [.. batch.InputShape(input.Name)];
                OrtValue v = input.ElemType switch
                {
                    "float" => OrtValue.CreateTensorValueFromMemory(batch.Input<float>(input.Name).ToArray(), shape),
                    "int64" => OrtValue.CreateTensorValueFromMemory(batch.Input<long>(input.Name).ToArray(), shape),
                    _ => throw new InvalidOperationException(input.ElemType),
                };
                owned.Add(v);
                binding.BindInput(input.Name, v);
            }
            var names = s.OutputMetadata.Keys.ToArray();
            foreach (var name in names) binding.BindOutputToDevice(name, OrtMemoryInfo.DefaultInstance);
            for (int k = 0; k < warmup; k++) s.RunWithBinding(runOptions, binding);
            var samples = new Samples(20000);
            long start = Stopwatch.GetTimestamp();
            for (int k = 0; k < steps || (k < 20000 && Stopwatch.GetElapsedTime(start).TotalSeconds < StepBench.MinSeconds); k++)
            {
                long t0 = Stopwatch.GetTimestamp();
                s.RunWithBinding(runOptions, binding);
                samples.Add(Stopwatch.GetTimestamp() - t0);
            }
            floatOutputs = new Dictionary<string, float[]>(StringComparer.Ordinal);
            using (var values = binding.GetOutputValues())
                for (int k = 0; k < names.Length; k++)
                    if (values[k].GetTensorTypeAndShape().ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float)
                        floatOutputs[names[k]] = values[k].GetTensorDataAsSpan<float>().ToArray();
            return new Result(samples.Median, samples.P90, samples.Min);
        }
        finally
        {
            foreach (var v in owned) v.Dispose();
        }
    }
}
