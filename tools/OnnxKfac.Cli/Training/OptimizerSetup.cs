using System.Globalization;
using OnnxKfac.Graph;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Cli.Training;

/// <summary>Builds the optimizer, its learning-rate schedule and parameter groups from the settings.</summary>
internal static class OptimizerSetup
{
    public const string DefaultOptimizer = "adamw";
    public const double DefaultLearningRate = 1e-3;

    /// <param name="totalSteps">The planned number of updates (the cosine schedule anneals over them).</param>
    /// <param name="stepsPerEpoch">Updates per epoch (the step schedule's default period).</param>
    public static IOptimizer Create(Config cfg, IReadOnlyList<Parameter> parameters, long totalSteps, long stepsPerEpoch)
    {
        string kind = cfg.String("optimizer", DefaultOptimizer)!.Trim().ToLowerInvariant();
        var schedule = Schedule(cfg, totalSteps, stepsPerEpoch);
        var groups = cfg.List("group").Select(g => ParseGroup(g, cfg)).ToArray();
        double lr = cfg.Double("lr", DefaultLearningRate)!.Value;
        try
        {
            switch (kind)
            {
                case "adamw" or "adam":
                    if (cfg.Has("momentum") || cfg.Has("nesterov"))
                        throw cfg.Error(cfg.Has("momentum") ? "momentum" : "nesterov", "applies to --optimizer sgd; AdamW's momentum is --beta1");
                    return new AdamW(parameters, new AdamWOptions
                    {
                        LearningRate = lr,
                        Beta1 = cfg.Double("beta1", 0.9)!.Value,
                        Beta2 = cfg.Double("beta2", 0.999)!.Value,
                        Epsilon = cfg.Double("eps", 1e-8)!.Value,
                        WeightDecay = cfg.Double("weight_decay", kind == "adam" ? 0 : 0.01)!.Value,
                        Schedule = schedule,
                        Groups = groups,
                    });
                case "sgd":
                    if (cfg.Has("beta1") || cfg.Has("beta2"))
                        throw cfg.Error(cfg.Has("beta1") ? "beta1" : "beta2", "applies to --optimizer adamw; SGD's is --momentum");
                    return new Sgd(parameters, new SgdOptions
                    {
                        LearningRate = lr,
                        Momentum = cfg.Double("momentum", 0)!.Value,
                        Nesterov = cfg.Bool("nesterov"),
                        WeightDecay = cfg.Double("weight_decay", 0)!.Value,
                        Schedule = schedule,
                        Groups = groups,
                    });
                case "kfac" or "k-fac":
                    throw cfg.Error("optimizer", "K-FAC is not implemented yet (it is the next milestone); use sgd or adamw");
                default:
                    throw cfg.Error("optimizer", $"unknown optimizer '{kind}'; expected sgd or adamw");
            }
        }
        catch (ArgumentException e)
        {
            // Option records name the property (LearningRate, Beta1 ...): map it back to the setting.
            string key = e.ParamName switch
            {
                "LearningRate" => "lr",
                "Beta1" => "beta1",
                "Beta2" => "beta2",
                "Epsilon" => "eps",
                "WeightDecay" => "weight_decay",
                "Momentum" => "momentum",
                "Nesterov" => "nesterov",
                "Groups" => "group",
                _ => "optimizer",
            };
            throw cfg.Error(key, Clean(e));
        }
    }

    /// <summary>The message of an ArgumentException without .NET's " (Parameter 'x')" suffix.</summary>
    public static string Clean(ArgumentException e) =>
        (e.ParamName is { } p ? e.Message.Replace($" (Parameter '{p}')", "", StringComparison.Ordinal) : e.Message).TrimEnd('.');

    public static ILearningRateSchedule Schedule(Config cfg, long totalSteps, long stepsPerEpoch)
    {
        string kind = cfg.String("schedule", "constant")!.Trim().ToLowerInvariant();
        long warmup = cfg.Long("warmup", 0)!.Value;
        if (warmup < 0) throw cfg.Error("warmup", $"{warmup}: must be 0 or more updates");
        try
        {
            ILearningRateSchedule inner = kind switch
            {
                "constant" => ConstantSchedule.Instance,
                "step" => new StepSchedule(cfg.Long("step_size", Math.Max(1, stepsPerEpoch))!.Value, cfg.Double("gamma", 0.1)!.Value),
                "cosine" => totalSteps - warmup >= 1
                    ? new CosineSchedule(totalSteps - warmup, cfg.Double("min_lr_factor", 0)!.Value)
                    : throw cfg.Error("warmup", $"{warmup} warm-up updates leave none of the {totalSteps} planned updates for the cosine schedule"),
                _ => throw cfg.Error("schedule", $"unknown schedule '{kind}'; expected constant, step or cosine"),
            };
            if (kind != "step" && (cfg.Has("step_size") || cfg.Has("gamma")))
                throw cfg.Error(cfg.Has("step_size") ? "step_size" : "gamma", "applies to --schedule step");
            return warmup > 0 ? new WarmupSchedule(warmup, inner) : inner;
        }
        catch (ArgumentException e)
        {
            string key = e.ParamName switch { "StepSize" => "step_size", "Gamma" => "gamma", "MinFactor" => "min_lr_factor", _ => "schedule" };
            throw cfg.Error(key, Clean(e));
        }
    }

    /// <summary>Parses <c>GLOB:lr=0.01,wd=0,momentum=0.9,frozen</c>.</summary>
    public static ParameterGroup ParseGroup(string text, Config cfg)
    {
        int colon = text.LastIndexOf(':');
        string pattern = colon < 0 ? text.Trim() : text[..colon].Trim();
        string settings = colon < 0 ? "" : text[(colon + 1)..];
        if (pattern.Length == 0 || colon < 0)
            throw cfg.Error("group", $"'{text}' should be GLOB:SETTINGS, e.g. \"net.1.*:lr=0.01,wd=0\" or \"*.bias:frozen\"");
        var group = new ParameterGroup(pattern);
        foreach (var raw in settings.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = raw.IndexOf('=');
            string name = (eq < 0 ? raw : raw[..eq]).Trim().ToLowerInvariant();
            string? value = eq < 0 ? null : raw[(eq + 1)..].Trim();
            if (name == "frozen" && value is null or "true") { group = group with { Frozen = true }; continue; }
            if (value is null || !double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double x))
                throw cfg.Error("group", $"'{text}': '{raw}' should be NAME=NUMBER (lr, wd, momentum) or frozen");
            try
            {
                group = name switch
                {
                    "lr" => group with { LearningRate = x },
                    "wd" or "weight_decay" => group with { WeightDecay = x },
                    "momentum" or "beta1" => group with { Momentum = x },
                    _ => throw cfg.Error("group", $"'{text}': unknown setting '{name}'; expected lr, wd, momentum or frozen"),
                };
            }
            catch (ArgumentException e)
            {
                throw cfg.Error("group", $"'{text}': {Clean(e)}");
            }
        }
        if (settings.Trim().Length == 0) throw cfg.Error("group", $"'{text}' sets nothing; add lr=, wd=, momentum= or frozen");
        return group;
    }
}
