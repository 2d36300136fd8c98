namespace OnnxKfac.Cli.Tests.Support;

/// <summary>The README's C# examples: the ```csharp block after <c>&lt;!-- README example: Tests/OnnxKfac.Cli.Tests/FILE --&gt;</c>.</summary>
internal static class ReadmeExample
{
    public static string Normalize(string text) => text.Replace("\r\n", "\n");

    /// <summary>The block's text (newline-terminated lines), for the example compiled from <paramref name="example"/>.</summary>
    public static string Block(string example)
    {
        string marker = $"<!-- README example: Tests/OnnxKfac.Cli.Tests/{example} -->";
        string readme = Normalize(File.ReadAllText(Path.Combine(TrainData.RepoRoot(), "README.md")));
        int at = readme.IndexOf(marker, StringComparison.Ordinal);
        Assert.True(at >= 0, "README.md lost the marker " + marker);
        const string open = "```csharp\n";
        int start = readme.IndexOf(open, at, StringComparison.Ordinal);
        Assert.True(start >= 0 && readme[(at + marker.Length)..start].Trim().Length == 0, "the ```csharp block must follow the marker");
        start += open.Length;
        int end = readme.IndexOf("```\n", start, StringComparison.Ordinal);
        Assert.True(end > start, "the ```csharp block after " + marker + " is not closed");
        return readme[start..end];
    }
}
