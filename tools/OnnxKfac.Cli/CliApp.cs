using System.CommandLine;
using System.CommandLine.Invocation;
using OnnxKfac.Cli.Commands;
using OnnxKfac.Graph;

namespace OnnxKfac.Cli;

/// <summary>Process exit codes of <c>onnx-kfac</c>.</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>Something the toolkit did not expect (a bug): the message, and the stack with --verbose.</summary>
    public const int Unexpected = 1;
    /// <summary>A problem with the user's input (file, model, option, tensor), described in one line.</summary>
    public const int UserError = 2;
}

/// <summary>Where a command writes, and whether standard output is a terminal (tables) or a pipe (plain text).</summary>
internal sealed class CliContext(TextWriter output, TextWriter error, bool isTerminal)
{
    public TextWriter Out { get; } = output;
    public TextWriter Error { get; } = error;
    public bool IsTerminal { get; } = isTerminal;
}

/// <summary>
/// The <c>onnx-kfac</c> command line: builds the command tree, parses, runs, and turns
/// every failure into one line on standard error with exit code 2 (user error) or 1 (bug).
/// </summary>
internal static class CliApp
{
    /// <summary>The global <c>--verbose</c> option (a new instance per command tree).</summary>
    public static Option<bool> VerboseOption() => new("--verbose")
    {
        Description = "Print stack traces of errors",
        Recursive = true,
    };

    /// <summary>The command tree. Each command lives in Commands/; registering one is one line here.</summary>
    public static RootCommand BuildRoot(CliContext ctx)
    {
        var root = new RootCommand("onnx-kfac: fine-tune ONNX models with K-FAC on the stock ONNX Runtime");
        root.Options.Add(VerboseOption());
        root.Subcommands.Add(InspectCommand.Create(ctx));
        root.Subcommands.Add(PrepareCommand.Create(ctx));
        root.Subcommands.Add(GradCommand.Create(ctx));
        root.Subcommands.Add(TrainCommand.Create(ctx));
        root.Subcommands.Add(EvalCommand.Create(ctx));
        root.Subcommands.Add(PredictCommand.Create(ctx));
        root.Subcommands.Add(ExportCommand.Create(ctx));
        return root;
    }

    /// <summary>Runs the command line <paramref name="args"/>; returns the process exit code.</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error, bool isTerminal = false) =>
        Run(args, output, error, isTerminal, BuildRoot);

    /// <summary>System.CommandLine names .NET types in its parse errors; say what the flag wants instead.</summary>
    internal static string Plain(string message)
    {
        var m = System.Text.RegularExpressions.Regex.Match(message, @"^Cannot parse argument '(.*)' for option '([^']+)' as expected type '([^']+)'$");
        if (!m.Success) return message;
        string type = m.Groups[3].Value;
        string what = type.Contains("Double", StringComparison.Ordinal) ? "a number"
            : type.Contains("Int", StringComparison.Ordinal) ? "a whole number"
            : type.Contains("Boolean", StringComparison.Ordinal) ? "true or false" : "a value of another kind";
        return $"{m.Groups[2].Value}: '{m.Groups[1].Value}' is not {what}";
    }

    /// <summary>Runs a command tree built by <paramref name="build"/> (tests register extra commands this way).</summary>
    internal static int Run(string[] args, TextWriter output, TextWriter error, bool isTerminal, Func<CliContext, RootCommand> build)
    {
        var ctx = new CliContext(output, error, isTerminal);
        var root = build(ctx);
        ParseResult parse = root.Parse(args);
        bool verbose = root.Options.OfType<Option<bool>>().FirstOrDefault(o => o.Name == "--verbose") is { } v && parse.GetValue(v);
        if (parse.Action is ParseErrorAction)
        {
            string where = string.Join(' ', CommandPath(parse));
            error.WriteLine($"error: {OneLine(string.Join("; ", parse.Errors.Select(e => Plain(e.Message.TrimEnd('.')))))} (see '{where} --help')");
            return ExitCodes.UserError;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false });
        }
        catch (OnnxKfacException e)
        {
            error.WriteLine("error: " + OneLine(e.Message));
            if (verbose) error.WriteLine(e.ToString());
            return ExitCodes.UserError;
        }
        catch (Exception e)
        {
            error.WriteLine($"error: unexpected {e.GetType().Name}: {OneLine(e.Message)}" + (verbose ? "" : " (run with --verbose for the stack trace)"));
            if (verbose) error.WriteLine(e.ToString());
            return ExitCodes.Unexpected;
        }
    }

    private static IEnumerable<string> CommandPath(ParseResult parse)
    {
        var names = new List<string>();
        for (var r = parse.CommandResult; r is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
            names.Add(r.Command is RootCommand ? "onnx-kfac" : r.Command.Name);
        names.Reverse();
        return names;
    }

    /// <summary>Collapses a message to one line (ONNX Runtime messages span several).</summary>
    public static string OneLine(string message) =>
        string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
