using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Runtime;

public static class FineTuneWithKfac
{
    /// <summary>One epoch of K-FAC on tools/default's MLP (in <paramref name="dir"/>); returns the test accuracy.</summary>
    public static double Run(string dir)
    {
        var model = OnnxModelIO.Load(Path.Combine(dir, "fashion_mlp.onnx"));
        var kfacOptions = new KfacOptions { LearningRate = 3e-3, Damping = 1e-2 };
        // K-FAC says what the training graph must compute (factor statistics, the sampled-target pass).
        var graph = kfacOptions.Configure(new TrainingGraphOptions(new LossOptions(LossKind.CrossEntropy)));
        using var session = TrainingSession.Create(model, graph);
        using var kfac = new KfacOptimizer(session, kfacOptions);

        var shape = new DataOptions { ClassCount = 10, ExpectedFeatureShape = [1, 28, 28] };
        using var trainBytes = Idx.OpenDataset(Path.Combine(dir, "train-images-idx3-ubyte.gz"), Path.Combine(dir, "train-labels-idx1-ubyte.gz"), shape);
        using var testBytes = Idx.OpenDataset(Path.Combine(dir, "test-images-idx3-ubyte.gz"), Path.Combine(dir, "test-labels-idx1-ubyte.gz"), shape);
        using var train = trainBytes.WithNormalization(Normalization.DivideBy(255));
        using var test = testBytes.WithNormalization(Normalization.DivideBy(255));

        var trainer = new Trainer(session, kfac, new TrainerOptions { Epochs = 1, BatchSize = 32, Seed = 42 });
        trainer.Fit(train);
        Console.WriteLine($"K-FAC: damping {kfac.Damping}, its own time {kfac.Timings}");
        return trainer.Evaluate(test).Accuracy!.Value;
    }
}
