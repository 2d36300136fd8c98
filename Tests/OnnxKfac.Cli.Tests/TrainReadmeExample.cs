using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Export;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;

public static class FineTune
{
    /// <summary>Fine-tunes tools/default's MLP (in <paramref name="dir"/>), writes it to <paramref name="output"/>, returns the test accuracy.</summary>
    public static double Run(string dir, string output)
    {
        var model = OnnxModelIO.Load(Path.Combine(dir, "fashion_mlp.onnx"));
        var loss = new LossOptions(LossKind.CrossEntropy);                             // on the model's output, 'logits'
        var graph = new TrainingGraphOptions(loss) { Frozen = ["net.1.*"] };           // keep the first layer as it is
        using var session = TrainingSession.Create(model, graph);

        var shape = new DataOptions { ClassCount = 10, ExpectedFeatureShape = [1, 28, 28] };
        using var trainBytes = Idx.OpenDataset(Path.Combine(dir, "train-images-idx3-ubyte.gz"), Path.Combine(dir, "train-labels-idx1-ubyte.gz"), shape);
        using var testBytes = Idx.OpenDataset(Path.Combine(dir, "test-images-idx3-ubyte.gz"), Path.Combine(dir, "test-labels-idx1-ubyte.gz"), shape);
        using var train = trainBytes.WithNormalization(Normalization.DivideBy(255));   // pixels in [0, 1]
        using var test = testBytes.WithNormalization(Normalization.DivideBy(255));

        var optimizer = new AdamW(session.Parameters, new AdamWOptions { LearningRate = 1e-3 });
        var trainer = new Trainer(session, optimizer, new TrainerOptions { Epochs = 2, BatchSize = 32, Seed = 42 });
        Console.WriteLine($"test accuracy before: {trainer.Evaluate(test).Accuracy:P1}");
        trainer.Fit(train);
        double accuracy = trainer.Evaluate(test).Accuracy!.Value;
        Console.WriteLine($"test accuracy after:  {accuracy:P1}");

        ModelExport.Save(model, session.Parameters, output);                         // the original graph, new weights
        return accuracy;
    }
}
