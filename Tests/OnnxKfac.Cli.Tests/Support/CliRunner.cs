using System.CommandLine;

namespace OnnxKfac.Cli.Tests.Support;

internal sealed record CliResult(int Code, string Out, string Err)
{
    /// <summary>Standard error's lines (without the trailing empty one).</summary>
    public string[] ErrLines => Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    public override string ToString() => $"exit {Code}\n--- stdout\n{Out}\n--- stderr\n{Err}";
}

/// <summary>Runs the CLI in-process with captured standard output and error.</summary>
internal static class CliRunner
{
    public static CliResult Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = CliApp.Run(args, o, e);
        return new CliResult(code, o.ToString(), e.ToString().Replace("\r\n", "\n"));
    }

    public static CliResult Run(Func<CliContext, RootCommand> build, params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = CliApp.Run(args, o, e, false, build);
        return new CliResult(code, o.ToString(), e.ToString().Replace("\r\n", "\n"));
    }

    /// <summary>Asserts a user error: exit code 2 and exactly one line "error: ..." containing every fragment.</summary>
    public static CliResult AssertUserError(CliResult r, params string[] fragments)
    {
        Assert.True(r.Code == 2, r.ToString());
        var lines = r.ErrLines;
        Assert.True(lines.Length == 1, "expected one line on stderr:\n" + r);
        Assert.StartsWith("error: ", lines[0]);
        Assert.DoesNotContain("   at ", r.Err);
        foreach (var f in fragments) Assert.True(lines[0].Contains(f, StringComparison.Ordinal), $"'{f}' not in: {lines[0]}");
        return r;
    }

    public static CliResult AssertOk(CliResult r)
    {
        Assert.True(r.Code == 0, r.ToString());
        return r;
    }
}

/// <summary>A temporary folder deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "onnxkfac-cli-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string this[string name] => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
