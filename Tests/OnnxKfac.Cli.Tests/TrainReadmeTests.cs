using OnnxKfac.Cli.Tests.Support;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>The README's C# example is this project's TrainReadmeExample.cs, character for character, and it runs.</summary>
public sealed class TrainReadmeTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData("TrainReadmeExample.cs")]
    [InlineData("KfacReadmeExample.cs")]
    public void TheReadmeExampleIsTheCompiledFile(string example)
    {
        string file = ReadmeExample.Normalize(File.ReadAllText(Path.Combine(TrainData.RepoRoot(), "Tests", "OnnxKfac.Cli.Tests", example)));
        Assert.Equal(file, ReadmeExample.Block(example));
    }

    [Fact]
    public void TheReadmeExampleFineTunesTheDefaultAndExportsAModelThatEvalMeasuresTheSame()
    {
        string tuned = _dir["tuned.onnx"];
        double accuracy = FineTune.Run(Path.GetDirectoryName(TrainData.Default("fashion_mlp.onnx"))!, tuned);
        Assert.True(accuracy > 0.75, $"test accuracy {accuracy}");
        var r = AssertOk(Run("eval", tuned, "--data", TrainData.Default("test-images-idx3-ubyte.gz"),
            "--labels", TrainData.Default("test-labels-idx1-ubyte.gz"), "--scale", "255", "--report", _dir["e.json"]));
        Assert.Equal(accuracy, TrainData.Report(_dir["e.json"]).GetProperty("metrics").GetProperty("accuracy").GetDouble(), 9);
    }

    [Fact]
    public void TheKfacReadmeExampleImprovesTheDefaultInOneEpoch()
    {
        double accuracy = FineTuneWithKfac.Run(Path.GetDirectoryName(TrainData.Default("fashion_mlp.onnx"))!);
        Assert.True(accuracy > 0.78, $"test accuracy {accuracy} (72.8% before)");
    }
}
