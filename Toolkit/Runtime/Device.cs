using Microsoft.ML.OnnxRuntime;
using OnnxKfac.Graph;

namespace OnnxKfac.Toolkit.Runtime;

public enum DeviceKind { Cpu, Cuda }

/// <summary>Where ONNX Runtime executes the training graph: <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
public readonly record struct Device(DeviceKind Kind, int Index = 0)
{
    public static Device Cpu => new(DeviceKind.Cpu);

    public static Device Parse(string text)
    {
        string t = text.Trim().ToLowerInvariant();
        if (t == "cpu") return Cpu;
        if (t == "cuda" || t == "gpu") return new Device(DeviceKind.Cuda);
        if (t.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(t[5..], out int i) && i >= 0) return new Device(DeviceKind.Cuda, i);
        throw new OnnxKfacException($"unknown device '{text}'; expected cpu, cuda or cuda:N");
    }

    public override string ToString() => Kind == DeviceKind.Cpu ? "cpu" : $"cuda:{Index}";
}

/// <summary>How ONNX Runtime runs the training graph.</summary>
public sealed record TrainingSessionOptions
{
    public Device Device { get; init; } = Device.Cpu;

    /// <summary>Threads inside one op (ONNX Runtime's intra-op pool); null: ONNX Runtime's default (one per core).</summary>
    public int? Threads { get; init; }

    /// <summary>Seed of the noise the sampled Fisher pass draws its targets from.</summary>
    public ulong NoiseSeed { get; init; } = 0x5eed;

    /// <summary>
    /// Whether ONNX Runtime's intra-op worker threads spin-wait for the next op (its default) rather
    /// than sleep. Spinning suits one session running alone. Each session has its own pool, so where
    /// several take turns on the same cores, as K-FAC's programs do beside the training graph, the
    /// threads one session leaves spinning take the cores the next one needs: K-FAC's programs never
    /// spin, and its training session should not either (the CLI turns it off for <c>--optimizer kfac</c>).
    /// Measured on the deep autoencoder, batch 256, 2 threads, 2 cores: a K-FAC step of 109 ms with
    /// every session spinning, 76 with only the training graph spinning, 68 with none (BENCHMARKS.md).
    /// No effect with one thread (no workers).
    /// </summary>
    public bool IntraOpSpinning { get; init; } = true;

    internal SessionOptions CreateOrtOptions()
    {
        if (Threads is < 0) throw new OnnxKfacException($"threads must be 0 (default) or positive, got {Threads}");
        var o = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            // Warnings (e.g. unused constants folded away) would clutter CLI output and CI logs.
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        if (Threads is { } n) o.IntraOpNumThreads = n;
        if (!IntraOpSpinning) o.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        if (Device.Kind == DeviceKind.Cuda)
        {
            try
            {
                o.AppendExecutionProvider_CUDA(Device.Index);
            }
            catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
            {
                o.Dispose();
                string why = HasCudaProvider()
                    ? "this is the CUDA build, but its libraries could not be loaded: it needs an NVIDIA driver, CUDA 13 and cuDNN 9 on the library path (--verbose shows ONNX Runtime's log)"
                    : "this build has no CUDA provider: build the CLI with -p:OnnxKfacGpu=true (Microsoft.ML.OnnxRuntime.Gpu, needs CUDA 13 and cuDNN 9)";
                throw new OnnxKfacException($"device {Device}: the CUDA execution provider is not available; {why}", e);
            }
        }
        return o;
    }

    /// <summary>Whether ONNX Runtime's CUDA provider library ships with this build.</summary>
    private static bool HasCudaProvider()
    {
        string baseDir = AppContext.BaseDirectory;
        return File.Exists(Path.Combine(baseDir, "libonnxruntime_providers_cuda.so"))
            || (Directory.Exists(Path.Combine(baseDir, "runtimes"))
                && Directory.EnumerateFiles(Path.Combine(baseDir, "runtimes"), "*onnxruntime_providers_cuda*", SearchOption.AllDirectories).Any());
    }
}
