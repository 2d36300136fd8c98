using System.Text.Json;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Toolkit.Runtime;
using TrainingSession = OnnxKfac.Toolkit.Runtime.TrainingSession;

namespace OnnxKfac.Bench;

/// <summary>
/// Where a training step's time goes: runs the session's training graph in a separate
/// ONNX Runtime session with profiling on (same settings otherwise) and sums the kernel
/// times per op type; also counts the nodes before and after ONNX Runtime's optimizations.
/// Diagnostic only: profiling itself costs time, so these numbers are not the step times.
/// </summary>
internal static class GraphProfile
{
    public sealed record OpTime(string OpType, int Nodes, double MsPerRun);

    public sealed record Result(
        SortedDictionary<string, int> TrainingGraphOps, SortedDictionary<string, int> OptimizedOps,
        IReadOnlyList<OpTime> KernelTimes, double KernelMsPerRun, IReadOnlyList<(string Node, string Op, double Ms)> TopNodes);

    public static Result Run(TrainingSession session, BatchBinding batch, int threads, int runs, string workDir, int topNodes = 12)
    {
        Directory.CreateDirectory(workDir);
        string optimizedPath = Path.Combine(workDir, "optimized.onnx");
        using var options = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            IntraOpNumThreads = threads,
            OptimizedModelFilePath = optimizedPath,
            // The prefix first: the EnableProfiling setter passes the current prefix to ORT.
            ProfileOutputPathPrefix = Path.Combine(workDir, "profile"),
            EnableProfiling = true,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        var owned = new List<OrtValue>();
        string profileFile;
        using (var s = new InferenceSession(session.TrainingModel.ToByteArray(), options))
        using (var binding = s.CreateIoBinding())
        using (var runOptions = new RunOptions())
        {
            foreach (var p in session.Parameters)
            {
                var v = OrtValue.CreateTensorValueFromMemory(p.Value, p.Shape);
                owned.Add(v);
                binding.BindInput(p.Name, v);
            }
            foreach (var input in session.Manifest.Inputs.Where(i => i.Role is not Graph.Training.TensorRole.Parameter))
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
            foreach (var name in s.OutputMetadata.Keys) binding.BindOutputToDevice(name, OrtMemoryInfo.DefaultInstance);
            for (int k = 0; k < 5; k++) s.RunWithBinding(runOptions, binding);
            // The profile also holds the warm-up runs; count only the runs after this marker.
            for (int k = 0; k < runs; k++) s.RunWithBinding(runOptions, binding);
            profileFile = s.EndProfiling();
        }
        foreach (var v in owned) v.Dispose();

        var optimized = ModelProto.Parser.ParseFrom(File.ReadAllBytes(optimizedPath));
        var (times, top, total) = Aggregate(profileFile, warmupRuns: 5, runs, topNodes);
        return new Result(OpCounts(session.TrainingModel.Graph), OpCounts(optimized.Graph), times, total, top);
    }

    private static (List<OpTime>, List<(string, string, double)>, double) Aggregate(string file, int warmupRuns, int runs, int topNodes)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        // Events in order; a "model_run" event closes each run.
        var perOp = new Dictionary<string, (HashSet<string> Nodes, double Us)>(StringComparer.Ordinal);
        var perNode = new Dictionary<string, (string Op, double Us)>(StringComparer.Ordinal);
        var events = doc.RootElement.ValueKind == JsonValueKind.Array ? doc.RootElement : doc.RootElement.GetProperty("traceEvents");
        var kernelEvents = new List<(long Ts, string Name, string Op, double Dur)>();
        var runEnds = new List<long>();
        foreach (var e in events.EnumerateArray())
        {
            if (!e.TryGetProperty("name", out var nameEl) || !e.TryGetProperty("dur", out var durEl)) continue;
            string name = nameEl.GetString() ?? "";
            long ts = e.TryGetProperty("ts", out var tsEl) ? tsEl.GetInt64() : 0;
            if (name == "model_run") { runEnds.Add(ts + durEl.GetInt64()); continue; }
            if (!name.EndsWith("_kernel_time", StringComparison.Ordinal)) continue;
            string op = e.TryGetProperty("args", out var args) && args.TryGetProperty("op_name", out var opEl) ? opEl.GetString() ?? "?" : "?";
            kernelEvents.Add((ts, name[..^"_kernel_time".Length], op, durEl.GetDouble()));
        }
        runEnds.Sort();
        long cutoff = runEnds.Count > warmupRuns ? runEnds[warmupRuns - 1] : long.MinValue;
        foreach (var (ts, node, op, dur) in kernelEvents)
        {
            if (ts <= cutoff) continue;
            var entry = perOp.TryGetValue(op, out var x) ? x : (new HashSet<string>(StringComparer.Ordinal), 0.0);
            entry.Item1.Add(node);
            perOp[op] = (entry.Item1, entry.Item2 + dur);
            perNode[node] = (op, perNode.TryGetValue(node, out var y) ? y.Us + dur : dur);
        }
        var times = perOp.Select(kv => new OpTime(kv.Key, kv.Value.Nodes.Count, kv.Value.Us / 1000.0 / runs))
            .OrderByDescending(t => t.MsPerRun).ToList();
        var top = perNode.OrderByDescending(kv => kv.Value.Us).Take(topNodes)
            .Select(kv => (kv.Key, kv.Value.Op, kv.Value.Us / 1000.0 / runs)).ToList();
        return (times, top, times.Sum(t => t.MsPerRun));
    }

    /// <summary>Node counts per op type of a model.</summary>
    public static SortedDictionary<string, int> OpCounts(GraphProto graph)
    {
        var counts = new SortedDictionary<string, int>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
        {
            string key = string.IsNullOrEmpty(n.Domain) || n.Domain == "ai.onnx" ? n.OpType : $"{n.Domain}.{n.OpType}";
            counts[key] = counts.GetValueOrDefault(key) + 1;
        }
        return counts;
    }
}
