using System.Diagnostics;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Bench;

/// <summary>
/// How fast the machine is right now: a 512 × 512 × 512 MatMul in ONNX Runtime on one thread, its
/// median over <see cref="Runs"/> runs in GFLOP/s. This VM has phases in which the host slows every
/// process (a ResNet step 1.5× slower for minutes with no other process busy, BENCHMARKS.md section 3,
/// sixth session), which the "others" cores cannot see; <c>Program</c> takes the probe before and
/// after each configuration, and make_results.py marks rows whose probe fell well below the run's best.
/// torch_step.py takes the same probe with torch.mm for the PyTorch rows.
/// </summary>
internal sealed class SpeedProbe : IDisposable
{
    private const int N = 512;
    private const int Runs = 15;
    private readonly InferenceSession _session;
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _runOptions = new();
    private readonly OrtValue _a, _y;

    public SpeedProbe()
    {
        var rng = new Random(1);
        var g = new GraphProto { Name = "speed_probe" };
        g.Input.Add(ValueInfos.Tensor("a", (int)TensorProto.Types.DataType.Float, [N, N]));
        g.Output.Add(ValueInfos.Tensor("y", (int)TensorProto.Types.DataType.Float, [N, N]));
        g.Initializer.Add(TensorData.FromFloats("b", [N, N], Enumerable.Range(0, N * N).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray()));
        var node = new NodeProto { OpType = "MatMul", Name = "probe" };
        node.Input.Add(["a", "b"]);
        node.Output.Add("y");
        g.Node.Add(node);
        var model = new ModelProto { IrVersion = 8, Graph = g };
        model.OpsetImport.Add(new OperatorSetIdProto { Version = 17 });
        using var options = new SessionOptions { IntraOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        _session = new InferenceSession(model.ToByteArray(), options);
        _a = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, N * N).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), [N, N]);
        _y = OrtValue.CreateTensorValueFromMemory(new float[N * N], [N, N]);
        _binding = _session.CreateIoBinding();
        _binding.BindInput("a", _a);
        _binding.BindOutput("y", _y);
    }

    /// <summary>The MatMul's rate now: median of <see cref="Runs"/> runs after 3 warm-up runs.</summary>
    public double Gflops()
    {
        for (int i = 0; i < 3; i++) _session.RunWithBinding(_runOptions, _binding);
        var ms = new double[Runs];
        for (int i = 0; i < Runs; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            _session.RunWithBinding(_runOptions, _binding);
            ms[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Array.Sort(ms);
        return 2.0 * N * N * N / (ms[Runs / 2] * 1e6);
    }

    public void Dispose()
    {
        _binding.Dispose();
        _a.Dispose();
        _y.Dispose();
        _runOptions.Dispose();
        _session.Dispose();
    }
}
