using System.CommandLine;
using System.Globalization;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Losses;

namespace OnnxKfac.Cli.Common;

/// <summary>
/// The loss options shared by the commands that build a training graph:
/// <c>--loss --output --reduction --ignore-index --label-smoothing --class-weights</c>.
/// </summary>
internal sealed class LossArguments
{
    public LossArguments(bool lossRequired, bool details = true)
    {
        Loss = new Option<string>("--loss")
        {
            Description = "Loss appended to the output: " + string.Join(", ", LossFunctions.All.Select(f => f.Name)),
            HelpName = "KIND",
            Required = lossRequired,
        };
        Output = new Option<string?>("--output")
        {
            Description = "The model output the loss reads (default: the model's only output)",
            HelpName = "NAME",
        };
        Details = details;
    }

    public Option<string> Loss { get; }
    public Option<string?> Output { get; }
    public bool Details { get; }

    public Option<string?> Reduction { get; } = new("--reduction")
    {
        Description = "Loss reduction: mean (default) or sum",
        HelpName = "mean|sum",
    };

    public Option<long?> IgnoreIndex { get; } = new("--ignore-index")
    {
        Description = "Cross-entropy: targets equal to this are ignored (default -100, as PyTorch)",
        HelpName = "N",
    };

    public Option<double?> LabelSmoothing { get; } = new("--label-smoothing")
    {
        Description = "Cross-entropy label smoothing in [0, 1] (default 0)",
        HelpName = "X",
    };

    public Option<string?> ClassWeights { get; } = new("--class-weights")
    {
        Description = "Cross-entropy class weights, comma-separated, one per class",
        HelpName = "a,b,c",
    };

    public void AddTo(Command command)
    {
        command.Options.Add(Loss);
        command.Options.Add(Output);
        if (!Details) return;
        command.Options.Add(Reduction);
        command.Options.Add(IgnoreIndex);
        command.Options.Add(LabelSmoothing);
        command.Options.Add(ClassWeights);
    }

    /// <summary>The loss options given, or null when --loss was not given (optional only for inspect).</summary>
    public LossOptions? Read(ParseResult r)
    {
        string? text = r.GetValue(Loss);
        if (text is null) return null;
        var options = new LossOptions(LossOptions.ParseKind(text)) { Output = r.GetValue(Output) };
        if (!Details) return options;
        if (r.GetValue(Reduction) is { } red)
            options = options with
            {
                Reduction = red.Trim().ToLowerInvariant() switch
                {
                    "mean" => LossReduction.Mean,
                    "sum" => LossReduction.Sum,
                    _ => throw new OnnxKfacException($"--reduction: unknown reduction '{red}'; expected mean or sum"),
                },
            };
        if (r.GetValue(IgnoreIndex) is { } ii)
        {
            if (!options.Function.HasClassOptions) throw new OnnxKfacException($"--ignore-index applies to cross-entropy only, not {options.Function.Name}");
            options = options with { IgnoreIndex = ii };
        }
        if (r.GetValue(LabelSmoothing) is { } ls) options = options with { LabelSmoothing = ls };
        if (r.GetValue(ClassWeights) is { } cw) options = options with { ClassWeights = ParseWeights(cw) };
        options.Validate();
        return options;
    }

    public static float[] ParseWeights(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var w = new float[parts.Length];
        for (int k = 0; k < parts.Length; k++)
            if (!float.TryParse(parts[k], NumberStyles.Float, CultureInfo.InvariantCulture, out w[k]))
                throw new OnnxKfacException($"--class-weights: '{parts[k]}' (entry {k}) is not a number; expected comma-separated numbers such as 1,0.5,2");
        return w;
    }
}

/// <summary>Which initializers train: <c>--trainable GLOB... --frozen GLOB...</c>.</summary>
internal sealed class SelectionArguments
{
    public Option<string[]> Trainable { get; } = new("--trainable")
    {
        Description = "Train only initializers matching this glob (repeatable; * ? [abc]); default: every float initializer that reaches the loss",
        HelpName = "GLOB",
    };

    public Option<string[]> Frozen { get; } = new("--frozen")
    {
        Description = "Keep initializers matching this glob fixed (repeatable)",
        HelpName = "GLOB",
    };

    public Option<string[]> Untie { get; } = new("--untie")
    {
        Description = "Split the tie of initializers matching this glob (repeatable): an exporter-merged initializer gives each module its own copy; a broken tie (a transposed copy) trains apart",
        HelpName = "GLOB",
    };

    public void AddTo(Command command)
    {
        command.Options.Add(Trainable);
        command.Options.Add(Frozen);
        command.Options.Add(Untie);
    }

    public IReadOnlyList<string> ReadUntie(ParseResult r) => Check(r.GetValue(Untie), "--untie");

    public IReadOnlyList<string> ReadTrainable(ParseResult r) => Check(r.GetValue(Trainable), "--trainable");

    public IReadOnlyList<string> ReadFrozen(ParseResult r) => Check(r.GetValue(Frozen), "--frozen");

    private static string[] Check(string[]? globs, string option)
    {
        globs ??= [];
        foreach (var g in globs)
            if (string.IsNullOrWhiteSpace(g)) throw new OnnxKfacException($"{option}: empty pattern");
        return globs;
    }
}
