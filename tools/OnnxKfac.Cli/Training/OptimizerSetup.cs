using System.Globalization;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Kfac;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Cli.Training;

/// <summary>Builds the optimizer, its learning-rate schedule and parameter groups from the settings.</summary>
internal static class OptimizerSetup
{
    public const string DefaultOptimizer = "adamw";
    public const double DefaultLearningRate = 1e-3;

    public const double DefaultKfacLearningRate = 0.003;

    private static readonly string[] KfacKeys =
    [
        "kfac_update", "kfac_damping", "kfac_damping_adapt", "kfac_adapt_every", "kfac_damping_decay", "kfac_damping_every",
        "kfac_min_damping", "kfac_max_damping", "kfac_kl_clip", "kfac_factor_decay", "kfac_stats_every", "kfac_inverse_every",
        "kfac_stats_fraction", "kfac_fisher", "kfac_fallback", "kfac_block", "kfac_rollback", "kfac_reduce_factors", "kfac_inverse",
        "kfac_precondition", "kfac_quadratic_fraction", "kfac_inverse_precision",
    ];

    public static string Kind(Config cfg)
    {
        string kind = cfg.String("optimizer", DefaultOptimizer)!.Trim().ToLowerInvariant();
        if (kind == "k-fac") kind = "kfac";
        if (kind is not ("kfac" or "sgd" or "adamw" or "adam")) throw cfg.Error("optimizer", $"unknown optimizer '{kind}'; expected kfac, sgd, adamw or adam");
        if (kind != "kfac" && KfacKeys.FirstOrDefault(cfg.Has) is { } k) throw cfg.Error(k, "applies to --optimizer kfac");
        return kind;
    }

    /// <summary>
    /// What the optimizer needs from the training graph, known before the session exists:
    /// K-FAC's factor statistics and sampled pass (and, when an update is one batch of
    /// <paramref name="batchSize"/> examples, the taps of the layers per-example preconditioning serves);
    /// nothing for SGD and AdamW.
    /// </summary>
    public static TrainingGraphOptions ConfigureGraph(Config cfg, TrainingGraphOptions graph, int? batchSize = null) =>
        Kind(cfg) == "kfac" ? Kfac(cfg, ConstantSchedule.Instance, 1).Configure(graph, batchSize) : graph;

    /// <summary>"adamw lr 0.001", "kfac lr 0.003", "kfac quadratic damping 150 (lm)": the optimizer in a few words, for logs and plot titles.</summary>
    public static string Describe(Config cfg)
    {
        string kind = (string)cfg.Resolved["optimizer"]!;
        if (kind == "kfac" && cfg.Resolved.GetValueOrDefault("kfac_update") is "quadratic")
            return $"kfac quadratic, damping {Config.Format((double)cfg.Resolved["kfac_damping"]!)}" + (cfg.Resolved.GetValueOrDefault("kfac_damping_adapt") is "lm" ? " (lm)" : "");
        return $"{kind} lr {Config.Format((double)cfg.Resolved["lr"]!)}";
    }

    /// <param name="totalSteps">The planned number of updates (the cosine schedule anneals over them).</param>
    /// <param name="stepsPerEpoch">Updates per epoch (the step schedule's default period).</param>
    /// <param name="schedule">The learning-rate schedule when the caller built it (default: <see cref="Schedule"/> of the settings).</param>
    public static IOptimizer Create(Config cfg, TrainingSession session, long totalSteps, long stepsPerEpoch, ILearningRateSchedule? schedule = null)
    {
        string kind = Kind(cfg);
        var parameters = session.Parameters;
        schedule ??= Schedule(cfg, totalSteps, stepsPerEpoch);
        var groups = cfg.List("group").Select(g => ParseGroup(g, cfg)).ToArray();
        double LearningRate() => cfg.Double("lr", DefaultLearningRate)!.Value;
        try
        {
            switch (kind)
            {
                case "adamw" or "adam":
                    if (cfg.Has("momentum") || cfg.Has("nesterov"))
                        throw cfg.Error(cfg.Has("momentum") ? "momentum" : "nesterov", "applies to --optimizer sgd; AdamW's momentum is --beta1");
                    return new AdamW(parameters, new AdamWOptions
                    {
                        LearningRate = LearningRate(),
                        Beta1 = cfg.Double("beta1", 0.9)!.Value,
                        Beta2 = cfg.Double("beta2", 0.999)!.Value,
                        Epsilon = cfg.Double("eps", 1e-8)!.Value,
                        WeightDecay = cfg.Double("weight_decay", kind == "adam" ? 0 : 0.01)!.Value,
                        DecoupledWeightDecay = kind != "adam",   // adam: torch.optim.Adam's coupled L2
                        Schedule = schedule,
                        Groups = groups,
                    });
                case "sgd":
                    if (cfg.Has("beta1") || cfg.Has("beta2"))
                        throw cfg.Error(cfg.Has("beta1") ? "beta1" : "beta2", "applies to --optimizer adamw; SGD's is --momentum");
                    return new Sgd(parameters, new SgdOptions
                    {
                        LearningRate = LearningRate(),
                        Momentum = cfg.Double("momentum", 0)!.Value,
                        Nesterov = cfg.Bool("nesterov"),
                        WeightDecay = cfg.Double("weight_decay", 0)!.Value,
                        Schedule = schedule,
                        Groups = groups,
                    });
                case "kfac":
                    if (cfg.Has("beta1") || cfg.Has("beta2") || cfg.Has("nesterov"))
                        throw cfg.Error(cfg.Has("beta1") ? "beta1" : cfg.Has("beta2") ? "beta2" : "nesterov", "does not apply to --optimizer kfac");
                    var options = Kfac(cfg, schedule, stepsPerEpoch) with { Groups = groups };
                    try { return new KfacOptimizer(session, options); }
                    catch (OnnxKfacException e) when (e.Message.StartsWith("--kfac-block", StringComparison.Ordinal)) { throw cfg.Error("kfac_block", e.Message["--kfac-block".Length..].TrimStart(':', ' '), e); }
                    catch (OnnxKfacException e) when (e.Message.StartsWith(KfacOptimizer.CholeskyUnavailable, StringComparison.Ordinal)) { throw cfg.Error("kfac_inverse", e.Message, e); }
                default:
                    throw cfg.Error("optimizer", $"unknown optimizer '{kind}'; expected kfac, sgd, adamw or adam");
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
                "Damping" => "kfac_damping",
                "MinDamping" => "kfac_min_damping",
                "MaxDamping" => "kfac_max_damping",
                "AdaptEvery" => "kfac_adapt_every",
                "KlClip" => "kfac_kl_clip",
                "FactorDecay" => "kfac_factor_decay",
                "StatisticsEvery" => "kfac_stats_every",
                "InverseEvery" => "kfac_inverse_every",
                "StatisticsFraction" => "kfac_stats_fraction",
                "QuadraticFraction" => "kfac_quadratic_fraction",
                "Fallback" => "kfac_fallback",
                "Blocks" or "kind" => "kfac_block",
                "ClipUpdateNorm" => "clip_grad_norm",
                _ => "optimizer",
            };
            throw cfg.Error(key, Clean(e));
        }
    }

    /// <summary>K-FAC's options from the settings (the library validates every value; errors name the flag).</summary>
    private static KfacOptions Kfac(Config cfg, ILearningRateSchedule schedule, long stepsPerEpoch)
    {
        try
        {
            var rule = Choice(cfg, "kfac_update", "kl-clip", ("kl-clip", KfacUpdateRule.KlClip), ("quadratic", KfacUpdateRule.Quadratic));
            var adapt = Choice(cfg, "kfac_damping_adapt", "fixed", ("fixed", DampingAdaptation.Fixed), ("lm", DampingAdaptation.LevenbergMarquardt));
            // Settings that do not apply are refused, and not read (so a checkpoint's config never holds them).
            if (rule == KfacUpdateRule.Quadratic)
            {
                foreach (var key in new[] { "lr", "momentum", "kfac_kl_clip" })
                    if (cfg.Has(key)) throw cfg.Error(key, "does not apply to --kfac-update quadratic, which chooses its step size and momentum from the quadratic model");
                if (cfg.String("schedule", "constant") != "constant" || cfg.Long("warmup", 0) != 0)
                    throw cfg.Error(cfg.Long("warmup", 0) != 0 ? "warmup" : "schedule", "does not apply to --kfac-update quadratic, which chooses its step size from the quadratic model");
            }
            else if (adapt != DampingAdaptation.LevenbergMarquardt && cfg.Has("kfac_quadratic_fraction"))
                throw cfg.Error("kfac_quadratic_fraction", "needs --kfac-update quadratic or --kfac-damping-adapt lm (the users of the Fisher products)");
            if (adapt != DampingAdaptation.LevenbergMarquardt && cfg.Has("kfac_adapt_every")) throw cfg.Error("kfac_adapt_every", "needs --kfac-damping-adapt lm");
            if (cfg.Has("kfac_inverse_precision") && cfg.String("kfac_inverse", "auto")!.Trim().ToLowerInvariant() == "ort")
                throw cfg.Error("kfac_inverse_precision", "sets the Cholesky route's arithmetic; --kfac-inverse ort inverts in float32 LU");
            var o = new KfacOptions
            {
                UpdateRule = rule,
                DampingAdaptation = adapt,
                WeightDecay = cfg.Double("weight_decay", 1e-5)!.Value,
                Damping = cfg.Double("kfac_damping", 0.01)!.Value,
                MinDamping = cfg.Double("kfac_min_damping", 1e-8)!.Value,
                MaxDamping = cfg.Double("kfac_max_damping", 1e6)!.Value,
                FactorDecay = cfg.Double("kfac_factor_decay", 0.95)!.Value,
                StatisticsEvery = cfg.Int("kfac_stats_every", 1)!.Value,
                InverseEvery = cfg.Int("kfac_inverse_every", 20)!.Value,
                StatisticsFraction = cfg.Double("kfac_stats_fraction", 1)!.Value,
                ClipUpdateNorm = cfg.Double("clip_grad_norm"),
                RollbackOnDivergence = cfg.Bool("kfac_rollback"),
                Schedule = schedule,
                Blocks = [.. cfg.List("kfac_block").Select(BlockOverride.Parse)],
                Fisher = Choice(cfg, "kfac_fisher", "true", ("true", FisherKind.True), ("empirical", FisherKind.Empirical)),
                Preconditioning = Choice(cfg, "kfac_precondition", "auto",
                    ("auto", KfacPreconditioning.Auto), ("dense", KfacPreconditioning.Dense), ("per-example", KfacPreconditioning.PerExample)),
                FactorReduction = Choice(cfg, "kfac_reduce_factors", "refresh", ("refresh", FactorReduction.BeforeInverses), ("every", FactorReduction.EveryUpdate)),
                InverseMethod = Choice(cfg, "kfac_inverse", "auto", ("auto", KfacInverseMethod.Auto), ("cholesky", KfacInverseMethod.Cholesky), ("ort", KfacInverseMethod.OnnxRuntime)),
                InversePrecision = Choice(cfg, "kfac_inverse_precision", "auto",
                    ("auto", KfacInversePrecision.Auto), ("float32", KfacInversePrecision.Float32), ("float64", KfacInversePrecision.Float64)),
                Fallback = Choice(cfg, "kfac_fallback", cfg.String("kfac_fisher", "true") == "empirical" ? "identity" : "diagonal",
                    ("diagonal", FallbackBlock.Diagonal), ("identity", FallbackBlock.Identity)),
            };
            if (rule == KfacUpdateRule.KlClip)
                o = o with
                {
                    LearningRate = cfg.Double("lr", DefaultKfacLearningRate)!.Value,
                    Momentum = cfg.Double("momentum", 0.9)!.Value,
                    KlClip = cfg.Double("kfac_kl_clip", 1e-3)!.Value,
                };
            if (rule == KfacUpdateRule.Quadratic || adapt == DampingAdaptation.LevenbergMarquardt)
                o = o with { QuadraticFraction = cfg.Double("kfac_quadratic_fraction", 1)!.Value };
            if (adapt == DampingAdaptation.LevenbergMarquardt) o = o with { AdaptEvery = cfg.Int("kfac_adapt_every", 5)!.Value };
            if (cfg.Double("kfac_damping_decay") is { } decay)
            {
                if (o.DampingAdaptation != DampingAdaptation.Fixed) throw cfg.Error("kfac_damping_decay", "schedules a fixed damping; --kfac-damping-adapt lm moves it by itself");
                o = o with { DampingSchedule = new StepSchedule(cfg.Long("kfac_damping_every", Math.Max(1, stepsPerEpoch))!.Value, decay) };
            }
            else if (cfg.Has("kfac_damping_every")) throw cfg.Error("kfac_damping_every", "needs --kfac-damping-decay");
            o.Validate();
            return o;
        }
        catch (ArgumentException e)
        {
            string key = e.ParamName switch
            {
                "Damping" => "kfac_damping", "MinDamping" => "kfac_min_damping", "MaxDamping" => "kfac_max_damping",
                "AdaptEvery" => "kfac_adapt_every", "KlClip" => "kfac_kl_clip", "FactorDecay" => "kfac_factor_decay",
                "StatisticsEvery" => "kfac_stats_every", "InverseEvery" => "kfac_inverse_every", "StatisticsFraction" => "kfac_stats_fraction",
                "QuadraticFraction" => "kfac_quadratic_fraction", "Fallback" => "kfac_fallback", "Blocks" or "kind" => "kfac_block", "ClipUpdateNorm" => "clip_grad_norm",
                "LearningRate" => "lr", "Momentum" => "momentum", "WeightDecay" => "weight_decay", "StepSize" => "kfac_damping_every",
                "Gamma" => "kfac_damping_decay",
                _ => "optimizer",
            };
            throw cfg.Error(key, Clean(e));
        }
    }

    private static T Choice<T>(Config cfg, string key, string fallback, params (string Name, T Value)[] choices)
    {
        string text = cfg.String(key, fallback)!.Trim().ToLowerInvariant();
        foreach (var (name, value) in choices) if (name == text) return value;
        throw cfg.Error(key, $"unknown value '{text}'; expected {string.Join(" or ", choices.Select(c => c.Name))}");
    }

    /// <summary>The message of an ArgumentException without .NET's " (Parameter 'x')" suffix.</summary>
    public static string Clean(ArgumentException e) =>
        (e.ParamName is { } p ? e.Message.Replace($" (Parameter '{p}')", "", StringComparison.Ordinal) : e.Message).TrimEnd('.');

    /// <summary>The schedule's own settings, each refused under another schedule.</summary>
    private static readonly (string Schedule, string[] Keys)[] ScheduleKeys =
    [
        ("step", ["step_size", "gamma"]),
        ("cosine", ["min_lr_factor"]),
        ("onecycle", ["pct_start", "div_factor", "final_div_factor"]),
        ("plateau", ["plateau_factor", "plateau_patience", "plateau_threshold", "plateau_cooldown", "min_lr"]),
    ];

    public static ILearningRateSchedule Schedule(Config cfg, long totalSteps, long stepsPerEpoch)
    {
        string kind = cfg.String("schedule", "constant")!.Trim().ToLowerInvariant().Replace("-", "", StringComparison.Ordinal);
        long warmup = cfg.Long("warmup", 0)!.Value;
        if (warmup < 0) throw cfg.Error("warmup", $"{warmup}: must be 0 or more updates");
        foreach (var (owner, keys) in ScheduleKeys)
            foreach (var key in keys)
                if (owner != kind && cfg.Has(key)) throw cfg.Error(key, $"applies to --schedule {owner}");
        try
        {
            ILearningRateSchedule inner = kind switch
            {
                "constant" => ConstantSchedule.Instance,
                "step" => new StepSchedule(cfg.Long("step_size", Math.Max(1, stepsPerEpoch))!.Value, cfg.Double("gamma", 0.1)!.Value),
                "cosine" => totalSteps - warmup >= 1
                    ? new CosineSchedule(totalSteps - warmup, cfg.Double("min_lr_factor", 0)!.Value)
                    : throw cfg.Error("warmup", $"{warmup} warm-up updates leave none of the {totalSteps} planned updates for the cosine schedule"),
                // Hugging Face's linear schedule has its own warm-up, from 0.
                "linear" => warmup < totalSteps ? new LinearSchedule(totalSteps, warmup)
                    : throw cfg.Error("warmup", $"{warmup} warm-up updates leave none of the {totalSteps} planned updates for the linear decay"),
                "onecycle" => warmup == 0 ? new OneCycleSchedule(totalSteps, cfg.Double("pct_start", 0.3)!.Value, cfg.Double("div_factor", 25)!.Value, cfg.Double("final_div_factor", 1e4)!.Value)
                    : throw cfg.Error("warmup", "does not apply to --schedule onecycle, which warms up over its first --pct-start of the updates"),
                "plateau" => new PlateauSchedule(cfg.Double("plateau_factor", 0.1)!.Value, cfg.Int("plateau_patience", 10)!.Value, cfg.Double("plateau_threshold", 1e-4)!.Value,
                    cfg.Int("plateau_cooldown", 0)!.Value, PlateauMinFactor(cfg)),
                _ => throw cfg.Error("schedule", $"unknown schedule '{kind}'; expected constant, step, cosine, linear, onecycle or plateau"),
            };
            return warmup > 0 && kind != "linear" ? new WarmupSchedule(warmup, inner) : inner;
        }
        catch (ArgumentException e)
        {
            string key = e.ParamName switch
            {
                "StepSize" => "step_size", "Gamma" => "gamma", "MinFactor" when kind == "plateau" => "min_lr", "MinFactor" => "min_lr_factor",
                "PctStart" => "pct_start", "DivFactor" => "div_factor", "FinalDivFactor" => "final_div_factor",
                "ReduceBy" => "plateau_factor", "Patience" => "plateau_patience", "Threshold" => "plateau_threshold", "Cooldown" => "plateau_cooldown",
                "TotalSteps" => "max_steps", _ => "schedule",
            };
            throw cfg.Error(key, Clean(e));
        }
    }

    /// <summary>The plateau schedule's floor, torch's absolute <c>min_lr</c>, as a factor of --lr.</summary>
    private static double PlateauMinFactor(Config cfg)
    {
        double minLr = cfg.Double("min_lr", 0)!.Value;
        double lr = cfg.Double("lr", Kind(cfg) == "kfac" ? DefaultKfacLearningRate : DefaultLearningRate)!.Value;
        if (!(minLr >= 0) || minLr > lr) throw cfg.Error("min_lr", $"{Config.Format(minLr)}: must lie in [0, --lr = {Config.Format(lr)}]");
        return minLr / lr;
    }

    /// <summary>The reduce-on-plateau schedule in <paramref name="schedule"/> (alone or after a warm-up), if any: the trainer feeds it validation losses.</summary>
    public static PlateauSchedule? PlateauOf(ILearningRateSchedule schedule) => schedule switch
    {
        PlateauSchedule p => p,
        WarmupSchedule { Inner: PlateauSchedule p } => p,
        _ => null,
    };

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
