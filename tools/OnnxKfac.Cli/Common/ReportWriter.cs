using Spectre.Console;

namespace OnnxKfac.Cli.Common;

/// <summary>
/// Human-readable command output: Spectre.Console tables on a terminal, plain aligned
/// columns (easy to grep and diff) when standard output is redirected.
/// </summary>
internal abstract class ReportWriter
{
    public static ReportWriter For(CliContext ctx) => ctx.IsTerminal ? new SpectreReportWriter(ctx.Out) : new PlainReportWriter(ctx.Out);

    public abstract void Heading(string text);

    public abstract void Line(string text);

    public abstract void Table(IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows);
}

internal sealed class PlainReportWriter(TextWriter output) : ReportWriter
{
    private bool _first = true;

    public override void Heading(string text)
    {
        if (!_first) output.WriteLine();
        _first = false;
        output.WriteLine(text);
    }

    public override void Line(string text)
    {
        _first = false;
        output.WriteLine(text);
    }

    public override void Table(IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows)
    {
        _first = false;
        var all = new List<IReadOnlyList<string>> { headers };
        all.AddRange(rows);
        var widths = new int[headers.Count];
        foreach (var r in all)
            for (int c = 0; c < widths.Length && c < r.Count; c++) widths[c] = Math.Max(widths[c], r[c].Length);
        foreach (var r in all)
        {
            var cells = Enumerable.Range(0, widths.Length).Select(c => (c < r.Count ? r[c] : "").PadRight(c == widths.Length - 1 ? 0 : widths[c]));
            output.WriteLine(("  " + string.Join("  ", cells)).TrimEnd());
        }
    }
}

internal sealed class SpectreReportWriter : ReportWriter
{
    private readonly IAnsiConsole _console;

    public SpectreReportWriter(TextWriter output)
    {
        _console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.Detect,
            ColorSystem = ColorSystemSupport.Detect,
            Out = new AnsiConsoleOutput(output),
        });
    }

    public override void Heading(string text) => _console.Write(new Rule($"[bold]{Markup.Escape(text)}[/]") { Justification = Justify.Left });

    public override void Line(string text) => _console.WriteLine(text);

    public override void Table(IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows)
    {
        var table = new Table { Border = TableBorder.Rounded };
        foreach (var h in headers) table.AddColumn(new TableColumn(Markup.Escape(h)));
        foreach (var r in rows) table.AddRow(r.Select(c => (Spectre.Console.Rendering.IRenderable)new Text(c)).ToArray());
        _console.Write(table);
    }
}
