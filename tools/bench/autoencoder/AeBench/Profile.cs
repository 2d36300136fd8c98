using System.Text.Json.Nodes;
using OnnxKfac.Bench;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.AeBench;

/// <summary>
/// Where the autoencoder's training graphs spend a run, per op type (ONNX Runtime's profiler, see
/// <see cref="GraphProfile"/>): SGD's plain graph against K-FAC's graph of a statistics update (the
/// taps, the sampled backward on the statistics fraction, the factor products). Diagnostic: the
/// profiler's own overhead makes these sums larger than the step bench's Run times.
/// </summary>
internal static class Profile
{
    public static JsonObject Run(string modelPath, string data, int batchSize, int threads, double fraction, double weightDecay, int runs)
    {
        var x = FashionMnist.Load(Path.Combine(data, "train-images-idx3-ubyte.gz"), out _);
        var model = OnnxModelIO.Load(modelPath);
        var plain = new TrainingGraphOptions(new LossOptions(LossKind.BceWithLogits)) { LayerTaps = false };
        var ko = new KfacOptions { StatisticsFraction = fraction, WeightDecay = weightDecay };
        var graphs = new (string Name, TrainingGraphOptions Options)[] { ("sgd", plain), ("kfac", ko.Configure(plain, batchSize)) };
        var result = new JsonObject { ["kind"] = "profile", ["batch"] = batchSize, ["threads"] = threads, ["fraction"] = fraction, ["runs"] = runs, ["isa"] = Machine.Isa() };
        var perGraph = new Dictionary<string, Dictionary<string, double>>();
        foreach (var (name, options) in graphs)
        {
            using var s = TrainingSession.Create(model, options, new TrainingSessionOptions { Threads = threads });
            var b = s.Bind(batchSize);
            x.AsSpan(0, batchSize * FashionMnist.Pixels).CopyTo(b.Input<float>(s.DataInputs[0].Name));
            x.AsSpan(0, batchSize * FashionMnist.Pixels).CopyTo(b.Input<float>(s.TargetInput.Name));
            string dir = Path.Combine(Path.GetTempPath(), $"ae-profile-{name}-{Environment.ProcessId}");
            try
            {
                var r = GraphProfile.Run(s, b, threads, runs, dir, topNodes: 60);
                perGraph[name] = r.KernelTimes.ToDictionary(t => t.OpType, t => t.MsPerRun);
                var ops = new JsonObject();
                foreach (var t in r.KernelTimes) ops[t.OpType] = new JsonObject { ["nodes"] = t.Nodes, ["ms_per_run"] = t.MsPerRun };
                result[name] = new JsonObject
                {
                    ["kernel_ms_per_run"] = r.KernelMsPerRun, ["ops"] = ops,
                    ["top_nodes"] = new JsonArray([.. r.TopNodes.Select(n => (JsonNode)new JsonObject { ["node"] = n.Node, ["op"] = n.Op, ["ms"] = n.Ms })]),
                };
            }
            finally { Directory.Delete(dir, recursive: true); }
        }
        Console.WriteLine($"{"op",-22} {"sgd ms",9} {"kfac ms",9} {"extra",9}");
        foreach (var op in perGraph["kfac"].Keys.Union(perGraph["sgd"].Keys).OrderByDescending(o => perGraph["kfac"].GetValueOrDefault(o)))
        {
            double a = perGraph["sgd"].GetValueOrDefault(op), k = perGraph["kfac"].GetValueOrDefault(op);
            Console.WriteLine($"{op,-22} {a,9:F3} {k,9:F3} {k - a,9:F3}");
        }
        Console.WriteLine($"{"total",-22} {perGraph["sgd"].Values.Sum(),9:F3} {perGraph["kfac"].Values.Sum(),9:F3}");
        return result;
    }
}
