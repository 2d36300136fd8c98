using OnnxKfac.Cli.Tests.Support;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

/// <summary>The README's C# example is this project's TrainReadmeExample.cs, character for character, and it runs.</summary>
public sealed class TrainReadmeTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string Normalize(string text) => text.Replace("\r\n", "\n");

    [Theory]
    [InlineData("TrainReadmeExample.cs")]
    [InlineData("KfacReadmeExample.cs")]
    public void TheReadmeExampleIsTheCompiledFile(string example)
    {
        string marker = $"<!-- README example: Tests/OnnxKfac.Cli.Tests/{example} -->";
        string root = TrainData.RepoRoot();
        string readme = Normalize(File.ReadAllText(Path.Combine(root, "README.md")));
        int at = readme.IndexOf(marker, StringComparison.Ordinal);
        Assert.True(at >= 0, "README.md lost the marker " + marker);
        const string open = "```csharp\n";
        int start = readme.IndexOf(open, at, StringComparison.Ordinal);
        Assert.True(start >= 0 && readme[(at + marker.Length)..start].Trim().Length == 0, "the ```csharp block must follow the marker");
        start += open.Length;
        int end = readme.IndexOf("```\n", start, StringComparison.Ordinal);
        string block = readme[start..end];
        string file = Normalize(File.ReadAllText(Path.Combine(root, "Tests", "OnnxKfac.Cli.Tests", example)));
        Assert.Equal(file, block);
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
