using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Toolkit.Tests.Runtime;

/// <summary>Models and synthetic data for runtime tests.</summary>
internal static class RuntimeFixture
{
    public static string ModelPath(string file) => Path.Combine(AppContext.BaseDirectory, "Models", file);

    /// <summary>The README's default model: Flatten + 784-128-64-10 MLP, input [N,1,28,28].</summary>
    public static ModelProto Fashion() => OnnxModelIO.Load(ModelPath("fashion_mlp.onnx"));

    public static TrainingSession FashionSession(int threads = 1, bool fisher = false) =>
        TrainingSession.Create(Fashion(), new TrainingGraphOptions(new LossOptions(LossKind.CrossEntropy)) { SampledFisher = fisher },
            new TrainingSessionOptions { Threads = threads });

    /// <summary>
    /// Images whose class is decided by a fixed random linear teacher, so the task is learnable;
    /// <paramref name="nanExample"/> gets a NaN pixel (its batches give a non-finite loss).
    /// </summary>
    public static Dataset Images(int count, int seed, int classes = 10, int nanExample = -1)
    {
        var rng = new Random(seed);
        var teacher = new Random(1234);
        var w = new float[classes * 784];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(teacher.NextDouble() - 0.5);
        var x = new float[count * 784];
        var y = new long[count];
        for (int n = 0; n < count; n++)
        {
            for (int i = 0; i < 784; i++) x[n * 784 + i] = (float)rng.NextDouble();
            int best = 0;
            double bestScore = double.NegativeInfinity;
            for (int c = 0; c < classes; c++)
            {
                double s = 0;
                for (int i = 0; i < 784; i++) s += w[c * 784 + i] * x[n * 784 + i];
                if (s > bestScore) { bestScore = s; best = c; }
            }
            y[n] = best;
        }
        if (nanExample >= 0) x[nanExample * 784 + 100] = float.NaN;
        return Dataset.FromTensors(DataTensor.FromFloat(x, count, 1, 28, 28), DataTensor.FromInt64(y, count), new DataOptions { ClassCount = classes });
    }
}

/// <summary>Records every step's loss.</summary>
internal sealed class LossRecorder : ITrainingObserver
{
    public List<double> Losses { get; } = [];
    public List<ValidationReport> Validations { get; } = [];
    public List<string> Messages { get; } = [];

    public void OnStep(in StepReport step) { if (!step.Skipped) Losses.Add(step.Loss); }
    public void OnValidation(in ValidationReport v) => Validations.Add(v);
    public void OnMessage(string message) => Messages.Add(message);
}
