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
/// (inputs bound once; outputs left to ONNX Runtime, the same for both variants; A and B
/// alternate in blocks of 10 timed runs):
/// the graph as built versus a patched copy, and session settings the toolkit does not expose.
/// </summary>
internal static class Experiments
{
    /// <summary>
    /// The Pow rule emits dA = dY·B·Pow(A, B−1) even for a constant B. For B = 2 (LayerNorm's
    /// variance, as exported) ONNX Runtime folds B−1 to the constant 1 and then runs its
    /// generic std::pow kernel per element. The patch replaces that Pow(A, 1) by Mul(A, 1)
    /// (same values, bit for bit), the cost of what a folded rule would emit (B·A). Null when
    /// the graph has no such node.
    /// </summary>
    public static JsonObject? PowPatch(TrainingSession session, BatchBinding batch, int threads, int warmup, int steps)
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
        if (count == 0) return null;
        var (original, after) = Compare(session.TrainingModel, patched, session, batch, threads, warmup, steps, out var before, out var outputs);
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
        var (on, off) = Compare(session.TrainingModel, session.TrainingModel, session, batch, threads, warmup, steps, out _, out _, spinningB: false);
        return new JsonObject { ["experiment"] = "intra_op_spinning", ["spinning_on"] = on.Json(), ["spinning_off"] = off.Json() };
    }

    /// <summary>
    /// The training graph run node by node with ONNX Runtime's intra-op pool (the toolkit's
    /// sequential mode) against its parallel execution mode: independent nodes (a layer's weight
    /// and input gradients, residual branches) on <paramref name="threads"/> inter-op threads,
    /// each node on one thread. Null on one thread.
    /// </summary>
    public static JsonObject? ParallelExecution(TrainingSession session, BatchBinding batch, int threads, int warmup, int steps)
    {
        if (threads < 2) return null;
        var (sequential, parallel) = Compare(session.TrainingModel, session.TrainingModel, session, batch, threads, warmup, steps, out _, out _, parallelB: true);
        return new JsonObject { ["experiment"] = "parallel_execution", ["sequential"] = sequential.Json(), ["parallel_inter_op"] = parallel.Json() };
    }

    /// <summary>
    /// The MaxPool rule makes the forward MaxPool emit its Indices output. The original model's
    /// forward pass is timed as exported and with every MaxPool emitting Indices (as in the
    /// training graph), to show what the second output costs in ONNX Runtime's kernel.
    /// Null when the model has no MaxPool.
    /// </summary>
    public static JsonObject? MaxPoolIndices(ModelProto source, TrainingSession session, BatchBinding batch, int threads, int warmup, int steps)
    {
        var withIndices = source.Clone();
        int count = 0;
        foreach (var node in withIndices.Graph.Node.Where(n => n.OpType == "MaxPool" && n.Output.Count < 2))
        {
            string name = node.Output[0] + "/indices";
            node.Output.Add(name);
            withIndices.Graph.Output.Add(new ValueInfoProto
            {
                Name = name,
                Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Int64 } },
            });
            count++;
        }
        if (count == 0) return null;
        var (plain, indices) = Compare(source, withIndices, session, batch, threads, warmup, steps, out _, out _, dataOnly: true);
        return new JsonObject
        {
            ["experiment"] = "maxpool_indices",
            ["maxpool_nodes"] = count,
            ["original"] = plain.Json(),
            ["patched"] = indices.Json(),
        };
    }

    /// <summary>
    /// The Conv rule computes the weight gradient as one Conv of the transposed input (batch as
    /// channels) with the transposed output gradient as a kernel of the output's spatial size:
    /// a skinny im2col + GEMM in ONNX Runtime. The patch computes it the way K-FAC's conv patches
    /// do: im2col as a one-hot depthwise Conv (<c>Patches.Emit</c>'s construction), then a batched
    /// MatMul dY·Pᵀ per example and a ReduceSum over the batch; with <paramref name="patchesFirst"/>
    /// the product P·dYᵀ instead (the patches read in place, dY transposed, the sum transposed back).
    /// Ungrouped Convs without auto_pad only. Null when the graph has no such weight-gradient node.
    /// </summary>
    public static JsonObject? ConvWeightGradPatches(TrainingSession session, BatchBinding batch, int threads, int warmup, int steps, bool patchesFirst = false)
    {
        var patched = session.TrainingModel.Clone();
        var g = patched.Graph;
        int opset = Opset(patched);
        int count = 0;
        foreach (var (w, t2, attrs, wShape, x, dy, dw) in WeightGradientConvs(patched, session))
        {
            long co = wShape[0], ci = wShape[1], kh = wShape[2], kw = wShape[3], k = kh * kw;
            string scope = w.Name + "/patched/";
            var onehot = new float[ci * k * k];
            for (long c = 0; c < ci; c++) for (long j = 0; j < k; j++) onehot[(c * k + j) * k + j] = 1;
            g.Initializer.Add(Graph.Model.TensorData.FromFloats(scope + "onehot", [ci * k, 1, kh, kw], onehot));
            g.Initializer.Add(Graph.Model.TensorData.FromInt64s(scope + "dy_shape", [3], [0, co, -1]));
            g.Initializer.Add(Graph.Model.TensorData.FromInt64s(scope + "p_shape", [3], [0, ci * k, -1]));
            g.Initializer.Add(Graph.Model.TensorData.FromInt64s(scope + "axes", [1], [0]));
            g.Initializer.Add(Graph.Model.TensorData.FromInt64s(scope + "dw_shape", [4], [co, ci, kh, kw]));
            var patches = Node("Conv", scope + "im2col", [x, scope + "onehot"], scope + "P");
            patches.Attribute.Add(new AttributeProto { Name = "group", Type = AttributeProto.Types.AttributeType.Int, I = ci });
            patches.Attribute.Add(new AttributeProto { Name = "kernel_shape", Type = AttributeProto.Types.AttributeType.Ints, Ints = { kh, kw } });
            foreach (var name in new[] { "strides", "pads", "dilations" })
                if (attrs.TryGetValue(name, out var a)) patches.Attribute.Add(a.Clone());
            // dY·Pᵀ: per example [co × HW]·[HW × ci·k] (P transposed, a copy of the patches);
            // P·dYᵀ: per example [ci·k × HW]·[HW × co] (the patches read in place, dY transposed, the sum transposed after).
            var reduce = opset >= 13
                ? Node("ReduceSum", scope + "sum", [scope + "M", scope + "axes"], scope + "S")
                : Node("ReduceSum", scope + "sum", [scope + "M"], scope + "S");
            reduce.Attribute.Add(new AttributeProto { Name = "keepdims", Type = AttributeProto.Types.AttributeType.Int, I = 0 });
            if (opset < 13) reduce.Attribute.Add(new AttributeProto { Name = "axes", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 0 } });
            var transposeLast = Node("Transpose", scope + "t", [patchesFirst ? scope + "dYr" : scope + "Pr"], scope + "T");
            transposeLast.Attribute.Add(new AttributeProto { Name = "perm", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 0, 2, 1 } });
            var nodes = new List<NodeProto>
            {
                patches,
                Node("Reshape", scope + "dy_r", [dy, scope + "dy_shape"], scope + "dYr"),
                Node("Reshape", scope + "p_r", [scope + "P", scope + "p_shape"], scope + "Pr"),
                transposeLast,
                patchesFirst
                    ? Node("MatMul", scope + "matmul", [scope + "Pr", scope + "T"], scope + "M")
                    : Node("MatMul", scope + "matmul", [scope + "dYr", scope + "T"], scope + "M"),
                reduce,
            };
            if (patchesFirst)
            {
                var back = Node("Transpose", scope + "s_t", [scope + "S"], scope + "St");
                back.Attribute.Add(new AttributeProto { Name = "perm", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 1, 0 } });
                nodes.Add(back);
                nodes.Add(Node("Reshape", scope + "dw", [scope + "St", scope + "dw_shape"], dw));
            }
            else nodes.Add(Node("Reshape", scope + "dw", [scope + "S", scope + "dw_shape"], dw));
            Splice(g, w, t2, nodes);
            count++;
        }
        var result = WeightGradientAB("conv_weight_grad_patches", count, patched, session, batch, threads, warmup, steps);
        if (result is not null) result["product"] = patchesFirst ? "P·dYᵀ" : "dY·Pᵀ";
        return result;
    }

    /// <summary>
    /// A/B of two builds of the toolkit: the training graph another build wrote with <c>--dump</c>
    /// (A, <c>--baseline DIR</c>) against this build's (B), same bindings, runs interleaved in
    /// blocks. Null when the file is missing.
    /// </summary>
    public static JsonObject? Baseline(string path, TrainingSession session, BatchBinding batch, int threads, int warmup, int steps)
    {
        if (!File.Exists(path)) return null;
        var baseline = Graph.Model.OnnxModelIO.Load(path);
        var (a, b) = Compare(baseline, session.TrainingModel, session, batch, threads, warmup, steps, out var before, out var after);
        double maxRel = MaxGradientDifference(session, before, after);
        return new JsonObject
        {
            ["experiment"] = "baseline_build",
            ["baseline"] = path,
            ["original"] = a.Json(),
            ["patched"] = b.Json(),
            ["max_gradient_difference"] = maxRel,
        };
    }

    /// <summary>
    /// The Conv weight gradient as one GEMM over the batch and the positions, with the patches built
    /// from shifted slices instead of a one-hot Conv: X transposed to [c_in, N, H, W] and padded once,
    /// one Slice per window offset, stacked to P [c_in·k, N·H_out·W_out], then P·dYᵀ with dY as
    /// [N·H_out·W_out, c_out] (one MatMul, M = c_in·k, no per-example products, no ReduceSum).
    /// Unit strides and dilations, one group, explicit pads, opset ≥ 13 only. Null when no such node.
    /// </summary>
    public static JsonObject? ConvWeightGradSlices(TrainingSession session, BatchBinding batch, int threads, int warmup, int steps)
    {
        var patched = session.TrainingModel.Clone();
        var g = patched.Graph;
        if (Opset(patched) < 13) return null;
        int count = 0;
        foreach (var (w, t2, attrs, wShape, x, dy, dw) in WeightGradientConvs(patched, session))
        {
            if (attrs.TryGetValue("strides", out var st) && st.Ints.Any(v => v != 1)) continue;
            if (attrs.TryGetValue("dilations", out var dl) && dl.Ints.Any(v => v != 1)) continue;
            long co = wShape[0], ci = wShape[1], kh = wShape[2], kw = wShape[3];
            long[] pads = attrs.TryGetValue("pads", out var pa) ? [.. pa.Ints] : [0, 0, 0, 0];
            string scope = w.Name + "/slices/";
            var nodes = new List<NodeProto>();
            NodeProto Add(NodeProto n) { nodes.Add(n); return n; }
            void Perm(NodeProto n, params long[] perm) => n.Attribute.Add(new AttributeProto { Name = "perm", Type = AttributeProto.Types.AttributeType.Ints, Ints = { perm } });
            void Ints(string name, params long[] v) => g.Initializer.Add(Graph.Model.TensorData.FromInt64s(scope + name, [v.Length], v));
            Perm(Add(Node("Transpose", scope + "xt", [x], scope + "XT")), 1, 0, 2, 3);
            string xp = scope + "XT";
            if (pads.Any(v => v != 0))
            {
                Ints("pads", 0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]);
                Add(Node("Pad", scope + "pad", [scope + "XT", scope + "pads"], scope + "XP"));
                xp = scope + "XP";
            }
            Ints("axes_hw", 2, 3);
            Ints("axis1", 1);
            var concat = new NodeProto { OpType = "Concat", Name = scope + "stack", Output = { scope + "S" } };
            concat.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
            for (long a = 0; a < kh; a++)
                for (long b = 0; b < kw; b++)
                {
                    string tag = $"{a}_{b}";
                    // ends counted from the end: H_out = H_pad - (kh - 1), so offset a ends kh - 1 - a before it.
                    Ints("starts" + tag, a, b);
                    Ints("ends" + tag, kh - 1 - a == 0 ? long.MaxValue : -(kh - 1 - a), kw - 1 - b == 0 ? long.MaxValue : -(kw - 1 - b));
                    Add(Node("Slice", scope + "slice" + tag, [xp, scope + "starts" + tag, scope + "ends" + tag, scope + "axes_hw"], scope + "s" + tag));
                    Add(Node("Unsqueeze", scope + "unsq" + tag, [scope + "s" + tag, scope + "axis1"], scope + "u" + tag));
                    concat.Input.Add(scope + "u" + tag);
                }
            Add(concat);
            Ints("p_shape", ci * kh * kw, -1);
            Add(Node("Reshape", scope + "p", [scope + "S", scope + "p_shape"], scope + "P"));
            Perm(Add(Node("Transpose", scope + "dyt", [dy], scope + "DYT")), 0, 2, 3, 1);
            Ints("dy_shape", -1, co);
            Add(Node("Reshape", scope + "dyr", [scope + "DYT", scope + "dy_shape"], scope + "DYR"));
            Add(Node("MatMul", scope + "matmul", [scope + "P", scope + "DYR"], scope + "M"));
            Perm(Add(Node("Transpose", scope + "mt", [scope + "M"], scope + "MT")), 1, 0);
            Ints("dw_shape", co, ci, kh, kw);
            Add(Node("Reshape", scope + "dw", [scope + "MT", scope + "dw_shape"], dw));
            Splice(g, w, t2, nodes);
            count++;
        }
        return WeightGradientAB("conv_weight_grad_slices", count, patched, session, batch, threads, warmup, steps);
    }

    private static int Opset(ModelProto m) =>
        (int)m.OpsetImport.Where(o => o.Domain is "" or "ai.onnx").Select(o => o.Version).DefaultIfEmpty(13).Max();

    /// <summary>
    /// The Conv rule's weight-gradient Convs of ungrouped 2-D Convs without auto_pad: the node <c>W</c>
    /// (named &lt;forward&gt;/grad/Conv, /grad/Conv_1, ...: the one whose kernel is dY transposed), the
    /// Transpose <c>T2</c> of its output, the forward's attributes and weight shape, and the names of
    /// X, dY and the gradient.
    /// </summary>
    private static IEnumerable<(NodeProto W, NodeProto T2, Dictionary<string, AttributeProto> Attrs, long[] WShape, string X, string Dy, string Dw)>
        WeightGradientConvs(ModelProto patched, TrainingSession session)
    {
        var g = patched.Graph;
        var producer = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in g.Node) foreach (var o in n.Output) producer[o] = n;
        var byName = g.Node.Where(n => n.Name.Length > 0).GroupBy(n => n.Name).ToDictionary(x => x.Key, x => x.First(), StringComparer.Ordinal);
        var shapes = session.Parameters.ToDictionary(p => p.Name, p => p.Shape, StringComparer.Ordinal);
        foreach (var w in g.Node.Where(n => n.OpType == "Conv" && n.Name.Contains("/grad/Conv", StringComparison.Ordinal)).ToList())
        {
            string fwdName = w.Name[..w.Name.LastIndexOf("/grad/Conv", StringComparison.Ordinal)];
            if (!byName.TryGetValue(fwdName, out var fwd) || fwd.OpType != "Conv" || !shapes.TryGetValue(fwd.Input[1], out var wShape) || wShape.Length != 4) continue;
            var attrs = fwd.Attribute.ToDictionary(a => a.Name, StringComparer.Ordinal);
            if (attrs.TryGetValue("group", out var grp) && grp.I != 1) continue;
            if (attrs.TryGetValue("auto_pad", out var ap) && ap.S.ToStringUtf8() is not ("NOTSET" or "")) continue;
            var t2 = g.Node.FirstOrDefault(n => n.OpType == "Transpose" && n.Input.Count == 1 && n.Input[0] == w.Output[0]);
            if (t2 is null || !producer.TryGetValue(w.Input[1], out var dyT) || dyT.OpType != "Transpose") continue;
            yield return (w, t2, attrs, wShape, fwd.Input[0], dyT.Input[0], t2.Output[0]);
        }
    }

    /// <summary>The A/B of the training graph against <paramref name="patched"/> (dead nodes pruned), with the gradients' largest difference; null when nothing was patched.</summary>
    private static JsonObject? WeightGradientAB(string experiment, int count, ModelProto patched, TrainingSession session, BatchBinding batch, int threads, int warmup, int steps)
    {
        if (count == 0) return null;
        Graph.Model.Pruning.RemoveDeadNodes(patched.Graph);
        var (original, after) = Compare(session.TrainingModel, patched, session, batch, threads, warmup, steps, out var before, out var outputs);
        return new JsonObject
        {
            ["experiment"] = experiment,
            ["patched_nodes"] = count,
            ["original"] = original.Json(),
            ["patched"] = after.Json(),
            ["max_gradient_difference"] = MaxGradientDifference(session, before, outputs),
        };
    }

    /// <summary>Replaces the weight-gradient Conv <paramref name="w"/> and its output Transpose <paramref name="t2"/> by <paramref name="nodes"/>.</summary>
    private static void Splice(GraphProto g, NodeProto w, NodeProto t2, List<NodeProto> nodes)
    {
        int at = g.Node.IndexOf(t2);
        g.Node.Remove(t2);
        for (int i = 0; i < nodes.Count; i++) g.Node.Insert(at + i, nodes[i]);
        g.Node.Remove(w);
    }

    /// <summary>The largest difference between two runs' parameter gradients, relative to each gradient's largest entry.</summary>
    private static double MaxGradientDifference(TrainingSession session, IReadOnlyDictionary<string, float[]> a, IReadOnlyDictionary<string, float[]> b)
    {
        double maxRel = 0;
        foreach (var p in session.Manifest.Parameters)
        {
            var x = a[p.Gradient];
            var y = b[p.Gradient];
            double scale = x.Max(v => Math.Abs(v)) + 1e-12;
            for (int i = 0; i < x.Length; i++) maxRel = Math.Max(maxRel, Math.Abs(x[i] - y[i]) / scale);
        }
        return maxRel;
    }

    private static NodeProto Node(string op, string name, string[] inputs, string output) =>
        new() { OpType = op, Name = name, Input = { inputs }, Output = { output } };

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

    /// <summary>One model in its own ORT session with every input bound once; outputs are ORT-allocated.</summary>
    private sealed class Runner : IDisposable
    {
        private readonly InferenceSession _session;
        private readonly OrtIoBinding _binding;
        private readonly RunOptions _runOptions = new();
        private readonly List<OrtValue> _owned = [];
        private readonly string[] _names;

        public Runner(ModelProto model, TrainingSession session, BatchBinding batch, int threads, bool spinning, bool dataOnly, bool parallel = false)
        {
            using var options = new SessionOptions
            {
                GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
                ExecutionMode = parallel ? ExecutionMode.ORT_PARALLEL : ExecutionMode.ORT_SEQUENTIAL,
                IntraOpNumThreads = parallel ? 1 : threads,
            };
            if (parallel) options.InterOpNumThreads = threads;
            options.AddSessionConfigEntry("session.intra_op.allow_spinning", spinning ? "1" : "0");
            _session = new InferenceSession(model.ToByteArray(), options);
            _binding = _session.CreateIoBinding();
            foreach (var p in dataOnly ? [] : session.Parameters)
                Bind(p.Name, OrtValue.CreateTensorValueFromMemory(p.Value, p.Shape));
            foreach (var input in session.Manifest.Inputs.Where(i => dataOnly ? i.Role is TensorRole.Data : i.Role is not TensorRole.Parameter))
            {
                long[] shape = [.. batch.InputShape(input.Name)];
                Bind(input.Name, input.ElemType switch
                {
                    "float" => OrtValue.CreateTensorValueFromMemory(batch.Input<float>(input.Name).ToArray(), shape),
                    "int64" => OrtValue.CreateTensorValueFromMemory(batch.Input<long>(input.Name).ToArray(), shape),
                    _ => throw new InvalidOperationException(input.ElemType),
                });
            }
            _names = _session.OutputMetadata.Keys.ToArray();
            foreach (var name in _names) _binding.BindOutputToDevice(name, OrtMemoryInfo.DefaultInstance);
        }

        public Samples Samples { get; } = new(20000);

        private void Bind(string name, OrtValue value)
        {
            _owned.Add(value);
            _binding.BindInput(name, value);
        }

        public void Run() => _session.RunWithBinding(_runOptions, _binding);

        public long TimedRun()
        {
            long t0 = Stopwatch.GetTimestamp();
            Run();
            long dt = Stopwatch.GetTimestamp() - t0;
            Samples.Add(dt);
            return dt;
        }

        /// <summary>The float outputs of the last run.</summary>
        public Dictionary<string, float[]> Outputs()
        {
            var result = new Dictionary<string, float[]>(StringComparer.Ordinal);
            using var values = _binding.GetOutputValues();
            for (int k = 0; k < _names.Length; k++)
                if (values[k].GetTensorTypeAndShape().ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float)
                    result[_names[k]] = values[k].GetTensorDataAsSpan<float>().ToArray();
            return result;
        }

        public Result Result() => new(Samples.Median, Samples.P90, Samples.Min);

        public void Dispose()
        {
            _binding.Dispose();
            _session.Dispose();
            _runOptions.Dispose();
            foreach (var v in _owned) v.Dispose();
        }
    }

    /// <summary>
    /// Times A and B in alternating blocks of 1 untimed + 10 timed runs (so drifts in the
    /// machine's speed hit both alike) until each has at least <paramref name="steps"/> runs and 2 × MinSeconds have passed.
    /// </summary>
    private static (Result A, Result B) Compare(Runner a, Runner b, int warmup, int steps)
    {
        for (int k = 0; k < warmup; k++) { a.Run(); b.Run(); }
        long start = Stopwatch.GetTimestamp();
        while (a.Samples.Count < steps || (a.Samples.Count < 19990 && Stopwatch.GetElapsedTime(start).TotalSeconds < 2 * StepBench.MinSeconds))
        {
            // Each block starts with one untimed run: switching sessions evicts caches and
            // parks the other session's worker threads, which would bias the first run.
            a.Run();
            for (int k = 0; k < 10; k++) a.TimedRun();
            b.Run();
            for (int k = 0; k < 10; k++) b.TimedRun();
        }
        return (a.Result(), b.Result());
    }

    private static (Result A, Result B) Compare(ModelProto modelA, ModelProto modelB, TrainingSession session, BatchBinding batch, int threads,
        int warmup, int steps, out Dictionary<string, float[]> outputsA, out Dictionary<string, float[]> outputsB,
        bool dataOnly = false, bool spinningA = true, bool spinningB = true, bool parallelB = false)
    {
        using var a = new Runner(modelA, session, batch, threads, spinningA, dataOnly);
        using var b = new Runner(modelB, session, batch, threads, spinningB, dataOnly, parallelB);
        var r = Compare(a, b, warmup, steps);
        outputsA = a.Outputs();
        outputsB = b.Outputs();
        return r;
    }
}
