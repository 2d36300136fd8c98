using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using OnnxKfac.Cli.Common;
using OnnxKfac.Cli.Training;
using OnnxKfac.Graph;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Optim;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Cli.Commands;

/// <summary>
/// <c>onnx-kfac eval MODEL --data PATH [--labels PATH] --loss KIND</c>: the loss (and, for
/// cross-entropy, the accuracy) of a model over a data set, with a report and CI gates.
/// With neither MODEL nor --data it evaluates the embedded default on its test subset.
/// </summary>
internal static class EvalCommand
{
    private const SettingType S = SettingType.String, I = SettingType.Int, D = SettingType.Double, L = SettingType.List;

    public static IReadOnlyList<Setting> Settings { get; } =
    [
        new("model", S, "The ONNX model") { Positional = true },
        new("data", S, "The data: .csv/.tsv (label column), .npz (entries), or features .npy/.pb/IDX with --labels; several model inputs: .npz or INPUT=FILE,INPUT=FILE", "PATH"),
        new("labels", S, "Labels of --data for .npy, .pb and IDX files", "PATH"),
        new("label_column", S, "CSV: the label column by header name or 0-based index (default: the last)", "NAME|INDEX"),
        new("npz_keys", S, "NPZ: the entries holding features and labels (default x,y; with --inputs or several model inputs only LABELS is read)", "X,Y"),
        new("inputs", L, "NPZ: the entry feeding each model input (default: the entry named like the input)", "INPUT=ENTRY,..."),
        new("scale", D, "Divide every feature by this first (255 maps bytes to [0,1]); default 1", "S"),
        new("normalize", S, "Then normalize: none (default) or MEAN,STD", "none|MEAN,STD"),
        new("loss", S, "Loss: cross-entropy (default), mse, l1, bce-with-logits", "KIND"),
        new("output", S, "The model output the loss reads (default: the model's only output)", "NAME"),
        new("reduction", S, "Loss reduction: mean (default) or sum", "mean|sum"),
        new("ignore_index", I, "Cross-entropy: targets equal to this are ignored (default -100)"),
        new("label_smoothing", D, "Cross-entropy label smoothing in [0, 1] (default 0)"),
        new("class_weights", S, "Cross-entropy class weights, comma-separated", "a,b,c"),
        new("input_shape", L, "Per-example shape of a data input with dynamic dimensions besides the batch (repeatable)", "NAME=d1,d2"),
        new("top_k", I, "Classifiers: also measure the top-k accuracy (e.g. 5)", "K"),
        new("batch_size", I, "Examples per batch (default 256)"),
        new("device", S, "cpu (default), cuda or cuda:N", "cpu|cuda[:N]"),
        new("threads", I, "ONNX Runtime intra-op threads (default: one per core)"),
        new("report", S, "Write a JSON report of the metrics and gates", "PATH"),
        new("fail_if", L, "CI gate, e.g. \"accuracy<0.85\" (repeatable; metrics loss, accuracy, macro_f1, top_k_accuracy, examples): exit 3 when true", "METRIC<X"),
    ];

    public static Command Create(CliContext ctx)
    {
        var table = new SettingTable(Settings);
        var model = new Argument<string?>("MODEL")
        {
            Description = "The ONNX model; omit it (and --data) to evaluate the embedded default on its test subset",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var cmd = new Command("eval", "Loss and accuracy of a model over a data set, with CI gates");
        cmd.Arguments.Add(model);
        table.AddTo(cmd);
        cmd.SetAction(r => Run(ctx, table, r, r.GetValue(model)));
        return cmd;
    }

    private static int Run(CliContext ctx, SettingTable table, ParseResult r, string? modelArg)
    {
        var clock = Stopwatch.StartNew();
        var cfg = table.FromCommandLine(r, new Config());
        if (modelArg is not null) cfg.Set("model", modelArg, "MODEL");
        if (!cfg.Has("model") && !cfg.Has("data"))
        {
            cfg.IsDefaultJob = true;
            DefaultJob.Apply(new Config()); // checks the files are there
            cfg.Set("model", DefaultJob.Model, DefaultJob.Origin);
            cfg.Set("data", DefaultJob.TestImages, DefaultJob.Origin);
            cfg.Set("labels", DefaultJob.TestLabels, DefaultJob.Origin);
            if (!cfg.Has("scale")) cfg.Set("scale", 255.0, DefaultJob.Origin);
            ctx.Out.WriteLine("No MODEL given: evaluating the embedded default on its 1000 shipped test images.");
        }
        string modelPath = cfg.String("model") ?? throw new OnnxKfacException("give the MODEL to evaluate (or neither MODEL nor --data, for the embedded default)");
        if (cfg.String("data") is null) throw new OnnxKfacException($"--data is required: the data to evaluate {modelPath} on");
        DataSources.CheckExists(cfg, "data");
        DataSources.CheckExists(cfg, "labels");
        int batch = cfg.Int("batch_size", 256)!.Value;
        if (batch < 1) throw cfg.Error("batch_size", $"{batch}: must be at least 1");
        string? reportPath = cfg.String("report");
        int? topK = cfg.Int("top_k");
        if (topK is < 1) throw cfg.Error("top_k", $"{topK}: must be at least 1");

        using var setup = ModelSetup.Open(cfg, modelPath, seed: 0);
        var available = new Dictionary<string, string?>(StringComparer.Ordinal)
        {
            ["loss"] = null,
            ["accuracy"] = setup.Classification ? null : "accuracy is measured for cross-entropy only",
            ["examples"] = null,
            ["examples_per_second"] = null,
        };
        ClassifierMetrics.AddAvailability(available, "", null, setup.Classification, topK is not null);
        if (topK is not null && !setup.Classification) throw cfg.Error("top_k", "applies to cross-entropy classifiers only");
        if (topK is { } k && setup.Classes is { } classes && k > classes) throw cfg.Error("top_k", $"{k} is more than the model's {classes} classes");
        var gates = Gates.Parse(cfg.List("fail_if"), available, cfg);
        using var raw = setup.OpenData(cfg, "data", "labels");
        var norm = DataSources.ResolveNormalization(cfg, null);
        using var data = norm is null ? null : DataSources.Apply(raw, norm, cfg);
        var evaluator = new Evaluator(setup.Session, batch, topK: topK);   // evaluation needs no optimizer
        var evalClock = Stopwatch.StartNew();
        Metrics m;
        try { m = evaluator.Evaluate(data ?? raw); }
        catch (DataException e) { throw new OnnxKfacException($"{cfg.Where("data")}: {e.Message.TrimEnd('.')}", e); }
        double seconds = evalClock.Elapsed.TotalSeconds;

        ctx.Out.WriteLine($"{Path.GetFileName(modelPath)} on {raw.Source}: " + (m.Accuracy is { } a ? $"accuracy {ProgressText.Percent(a)}, " : "") +
            $"{Graph.Losses.LossOptions.Name(setup.Loss.Kind)} loss {m.Loss.ToString("G6", CultureInfo.InvariantCulture)}{ClassifierMetrics.Describe(m)} ({m.Examples} examples, {ProgressText.Seconds(evalClock.Elapsed)})");
        ClassifierMetrics.WriteConfusion(ReportWriter.For(ctx), "confusion matrix", m);
        var metrics = new SortedDictionary<string, double?>(StringComparer.Ordinal)
        {
            ["loss"] = m.Loss,
            ["accuracy"] = m.Accuracy,
            ["examples"] = m.Examples,
            ["examples_per_second"] = seconds > 0 ? m.Examples / seconds : 0,
        };
        ClassifierMetrics.AddTo(metrics, "", m);
        // A non-finite loss is no measurement: no gate is judged on it, and the run fails.
        string? nonFinite = double.IsFinite(m.Loss) ? null
            : $"{cfg.Where("data")}: the loss is {m.Loss.ToString(CultureInfo.InvariantCulture)}: the data holds NaN or infinite values, or the model produces them";
        var results = nonFinite is null ? Gates.Check(gates, metrics, ctx.Out, ctx.Error) : [];
        if (reportPath is not null)
        {
            new EvalReport
            {
                Model = modelPath,
                DefaultJob = cfg.IsDefaultJob,
                Config = JsonNode.Parse(cfg.ResolvedJson()),
                StartedAt = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
                Data = new() { ["eval"] = new DataSummary(raw.Source, raw.Count) },
                Normalization = DataSources.DescribeNormalization(norm),
                Parameters = setup.Session.Parameters.Count,
                ParameterValues = setup.ParameterValues,
                WallSeconds = clock.Elapsed.TotalSeconds,
                EvalSeconds = seconds,
                Error = nonFinite,
                Metrics = metrics,
                ConfusionMatrix = ClassifierMetrics.Rows(m),
                Gates = results,
                GatesPassed = results.All(g => g.Passed),
                Outputs = new() { ["report"] = reportPath },
            }.Write(reportPath);
            ctx.Out.WriteLine($"wrote report {reportPath}");
        }
        if (nonFinite is not null) throw new OnnxKfacException(nonFinite);
        return results.All(g => g.Passed) ? ExitCodes.Ok : Gates.ExitCode;
    }
}
