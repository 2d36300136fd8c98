using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;
using TrainingSession = OnnxKfac.Toolkit.Runtime.TrainingSession;

namespace OnnxKfac.Bench;

/// <summary>Timings of one configuration, in milliseconds.</summary>
internal sealed record Timing(double Median, double P90, double Min, int Steps)
{
    public static Timing From(Samples s) => new(s.Median, s.P90, s.Min, s.Count);
}

/// <summary>
/// Times training steps: <c>session.Run(batch)</c> followed by an SGD (momentum) update,
/// exactly as the trainer does it. The samples array is preallocated, so the timed loop
/// allocates nothing of its own and the allocation count is the library's.
/// </summary>
internal static class StepBench
{
    public sealed record StepResult(Timing Step, Timing Run, Timing Sgd, long AllocatedBytes, int AllocationSteps);

    /// <summary>Fast configurations run more than the requested steps, until at least this long has passed.</summary>
    public static double MinSeconds { get; set; } = 0.25;

    private const int MaxSteps = 20000;

    private static bool More(int k, int steps, long start) =>
        k < steps || (k < MaxSteps && Stopwatch.GetElapsedTime(start).TotalSeconds < MinSeconds);

    public static StepResult Run(TrainingSession session, BatchBinding batch, int warmup, int steps)
    {
        var sgd = new Sgd(session.Parameters, new SgdOptions { LearningRate = 0.01, Momentum = 0.9 });
        var ctx = new StepContext(session.Parameters, session);
        var step = new Samples(MaxSteps);
        var run = new Samples(MaxSteps);
        var update = new Samples(MaxSteps);
        for (int k = 0; k < warmup; k++)
        {
            double l = session.Run(batch);
            sgd.Step(ctx);
            ctx.Advance(l);
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        long start = Stopwatch.GetTimestamp();
        for (int k = 0; More(k, steps, start); k++)
        {
            long t0 = Stopwatch.GetTimestamp();
            double loss = session.Run(batch);
            long t1 = Stopwatch.GetTimestamp();
            sgd.Step(ctx);
            ctx.Advance(loss);
            long t2 = Stopwatch.GetTimestamp();
            step.Add(t2 - t0);
            run.Add(t1 - t0);
            update.Add(t2 - t1);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        if (!double.IsFinite(batch.Loss)) throw new InvalidOperationException($"loss became {batch.Loss}");
        return new StepResult(Timing.From(step), Timing.From(run), Timing.From(update), allocated, step.Count);
    }

    /// <summary>
    /// Managed bytes allocated by <paramref name="steps"/> training steps (Run + SGD update +
    /// Advance) after a short warm-up, measured with GC.GetAllocatedBytesForCurrentThread.
    /// </summary>
    public static long AllocatedBytes(TrainingSession session, BatchBinding batch, int steps)
    {
        var sgd = new Sgd(session.Parameters, new SgdOptions { LearningRate = 0.01, Momentum = 0.9 });
        var ctx = new StepContext(session.Parameters, session);
        for (int k = 0; k < 5; k++) { double l = session.Run(batch); sgd.Step(ctx); ctx.Advance(l); }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int k = 0; k < steps; k++)
        {
            double loss = session.Run(batch);
            sgd.Step(ctx);
            ctx.Advance(loss);
        }
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    /// <summary>
    /// The original (inference) model on ONNX Runtime with the same session settings as the
    /// training session (all graph optimizations, sequential, intra-op threads), inputs and
    /// outputs bound once to pinned buffers; times <c>RunWithBinding</c>.
    /// </summary>
    public static Timing Forward(string modelPath, TrainingSession session, BatchBinding batch, int threads, int warmup, int steps)
    {
        using var options = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            IntraOpNumThreads = threads,
        };
        using var inference = new InferenceSession(modelPath, options);
        using var binding = inference.CreateIoBinding();
        using var runOptions = new RunOptions();
        var owned = new List<OrtValue>();
        try
        {
            foreach (var input in session.DataInputs)
            {
                long[] shape = [.. batch.InputShape(input.Name)];
                OrtValue v = input.ElemType switch
                {
                    "float" => OrtValue.CreateTensorValueFromMemory(Pinned(batch.Input<float>(input.Name)), shape),
                    "int64" => OrtValue.CreateTensorValueFromMemory(Pinned(batch.Input<long>(input.Name)), shape),
                    _ => throw new InvalidOperationException($"input '{input.Name}': {input.ElemType}"),
                };
                owned.Add(v);
                binding.BindInput(input.Name, v);
            }
            // One probe run learns the output shapes; then outputs go to pinned buffers.
            var outputNames = inference.OutputMetadata.Keys.ToArray();
            foreach (var name in outputNames) binding.BindOutputToDevice(name, OrtMemoryInfo.DefaultInstance);
            inference.RunWithBinding(runOptions, binding);
            var shapes = new List<long[]>();
            using (var values = binding.GetOutputValues())
                foreach (var v in values) shapes.Add(v.GetTensorTypeAndShape().Shape);
            binding.ClearBoundOutputs();
            for (int k = 0; k < outputNames.Length; k++)
            {
                long n = shapes[k].Aggregate(1L, (a, d) => a * d);
                var v = OrtValue.CreateTensorValueFromMemory(GC.AllocateArray<float>((int)n, pinned: true), shapes[k]);
                owned.Add(v);
                binding.BindOutput(outputNames[k], v);
            }
            for (int k = 0; k < warmup; k++) inference.RunWithBinding(runOptions, binding);
            var samples = new Samples(MaxSteps);
            long start = Stopwatch.GetTimestamp();
            for (int k = 0; More(k, steps, start); k++)
            {
                long t0 = Stopwatch.GetTimestamp();
                inference.RunWithBinding(runOptions, binding);
                samples.Add(Stopwatch.GetTimestamp() - t0);
            }
            return Timing.From(samples);
        }
        finally
        {
            foreach (var v in owned) v.Dispose();
        }
    }

    private static T[] Pinned<T>(Span<T> data) where T : unmanaged
    {
        var a = GC.AllocateArray<T>(data.Length, pinned: true);
        data.CopyTo(a);
        return a;
    }
}
