using System.CommandLine;
using System.Globalization;
using System.Text;
using OnnxKfac.Cli.Common;
using OnnxKfac.Cli.Training;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Model;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Cli.Commands;

/// <summary>
/// <c>onnx-kfac predict MODEL --data PATH -o OUT.npy|OUT.csv</c>: the model's output for every
/// example of a data set, in order, and for classifiers the predicted class and its probability.
/// The data is read as <c>eval</c> reads it (same formats, <c>--scale</c>, <c>--normalize</c>),
/// except that labels are not needed: a CSV may lack the label column, and .npy, .pb and IDX
/// features come alone.
/// </summary>
internal static class PredictCommand
{
    private const SettingType S = SettingType.String, I = SettingType.Int, D = SettingType.Double, L = SettingType.List;

    public static IReadOnlyList<Setting> Settings { get; } =
    [
        new("model", S, "The ONNX model") { Positional = true },
        new("data", S, "The examples: .csv/.tsv (with or without a label column), .npz (entry x, see --npz-keys), or features .npy/.pb/IDX", "PATH"),
        new("out", S, "Where to write the predictions: .npy (an array) or .csv (one row per example)", "OUT.npy|OUT.csv") { Alias = "-o" },
        new("output_kind", S, "What to write: outputs (default: the model's output; CSV adds class and probability for classifiers), probabilities (softmax, classifiers) or classes (classifiers: .npy int64 classes; CSV class and probability only)", "outputs|probabilities|classes"),
        new("label_column", S, "CSV with a label column that is not the last: its header name or 0-based index (dropped; not needed)", "NAME|INDEX"),
        new("npz_keys", S, "NPZ: the entry holding the features (and labels, unused) (default x,y)", "X,Y"),
        new("scale", D, "Divide every feature by this first (as in train); default 1", "S"),
        new("normalize", S, "Then normalize: none (default) or MEAN,STD (as in train)", "none|MEAN,STD"),
        new("loss", S, "The model's loss in training: cross-entropy (default: a classifier) or mse, l1, bce-with-logits (outputs only)", "KIND"),
        new("output", S, "The model output to write (default: the model's only output)", "NAME"),
        new("input_shape", L, "Per-example shape of a data input with dynamic dimensions besides the batch (repeatable)", "NAME=d1,d2"),
        new("batch_size", I, "Examples per batch (default 256)"),
        new("device", S, "cpu (default), cuda or cuda:N", "cpu|cuda[:N]"),
        new("threads", I, "ONNX Runtime intra-op threads (default: one per core)"),
    ];

    public static Command Create(CliContext ctx)
    {
        var table = new SettingTable(Settings);
        var model = new Argument<string>("MODEL") { Description = "The ONNX model (e.g. written by train --export)" };
        var cmd = new Command("predict", "Write a model's outputs (and for classifiers the predicted class and its probability) for a data set");
        cmd.Arguments.Add(model);
        table.AddTo(cmd);
        cmd.SetAction(r => Run(ctx, table, r, r.GetValue(model)!));
        return cmd;
    }

    private enum Kind { Outputs, Probabilities, Classes }

    private static int Run(CliContext ctx, SettingTable table, ParseResult r, string modelPath)
    {
        var cfg = table.FromCommandLine(r, new Config());
        cfg.Set("model", modelPath, "MODEL");
        string dataPath = cfg.String("data") ?? throw new OnnxKfacException($"--data is required: the examples to run {modelPath} on");
        string outPath = cfg.String("out") ?? throw new OnnxKfacException("-o is required: the .npy or .csv file to write the predictions to");
        bool csv = outPath.EndsWith(".csv", StringComparison.OrdinalIgnoreCase);
        if (!csv && !outPath.EndsWith(".npy", StringComparison.OrdinalIgnoreCase))
            throw cfg.Error("out", $"{outPath}: predictions are written as .npy or .csv, chosen by the extension");
        if (string.Equals(Path.GetFullPath(outPath), Path.GetFullPath(modelPath), StringComparison.Ordinal))
            throw cfg.Error("out", $"{outPath} is the model; refusing to overwrite it");
        var kind = cfg.String("output_kind", "outputs")!.Trim().ToLowerInvariant() switch
        {
            "outputs" => Kind.Outputs,
            "probabilities" => Kind.Probabilities,
            "classes" => Kind.Classes,
            var k => throw cfg.Error("output_kind", $"'{k}' is not outputs, probabilities or classes"),
        };
        int batch = cfg.Int("batch_size", 256)!.Value;
        if (batch < 1) throw cfg.Error("batch_size", $"{batch}: must be at least 1");
        DataSources.CheckExists(cfg, "data");
        // Checked before the model runs: a long prediction must not fail at its end for an unwritable path.
        OutputPaths.CheckWritable(outPath, (message, e) => cfg.Error("out", message, e));

        using var setup = ModelSetup.Open(cfg, modelPath, seed: 0);
        int? classes = setup.Classification ? setup.Classes : null;
        if (kind != Kind.Outputs && classes is null)
            throw cfg.Error("output_kind", $"'{cfg.String("output_kind")}' needs a classifier (--loss cross-entropy with a static class axis); {modelPath} output '{setup.Session.Manifest.Loss.Output}' gives outputs only");
        using var raw = OpenFeatures(cfg, setup);
        var norm = DataSources.ResolveNormalization(cfg, null);
        using var normalized = norm is null ? null : DataSources.Apply(raw, norm, cfg);
        var data = normalized ?? raw;

        float[]? values = null;
        int perExample = 0, done = 0;
        try
        {
            new Evaluator(setup.Session, batch).Predict(data, (outputs, count, width) =>
            {
                values ??= new float[checked(data.Count * width)];
                perExample = width;
                outputs.CopyTo(values.AsSpan(done * width));
                done += count;
            });
        }
        catch (DataException e) { throw new OnnxKfacException($"{cfg.Where("data")}: {e.Message.TrimEnd('.')}", e); }
        if (classes is { } c && perExample != c)
            throw new OnnxKfacException($"{modelPath}: output '{setup.Session.Manifest.Loss.Output}' has {perExample} values per example, not the {c} classes of its declared shape");

        int n = data.Count;
        long[] shape = OutputShape(setup, n, perExample);
        var (predicted, probabilities) = classes is { } cc ? Softmax(values!, n, cc) : (null, null);
        TrainReport.CreateParent(outPath);
        PrepareCommand.Write(() => AtomicFile.Write(outPath, stream =>
        {
            if (csv) WriteCsv(stream, kind, values!, n, perExample, predicted, probabilities);
            else Npy.Write(stream, kind switch
            {
                Kind.Classes => DataTensor.FromInt64(predicted!, n),
                Kind.Probabilities => DataTensor.FromFloat(probabilities!, n, classes!.Value),
                _ => DataTensor.FromFloat(values!, shape),
            });
        }), outPath);
        string what = kind switch
        {
            Kind.Classes => "predicted classes",
            Kind.Probabilities => "class probabilities",
            _ => $"outputs '{setup.Session.Manifest.Loss.Output}' [{string.Join(",", shape)}]" + (csv && classes is not null ? " with the predicted class and its probability" : ""),
        };
        ctx.Out.WriteLine($"wrote {outPath}: {what} of {Path.GetFileName(modelPath)} for the {n} examples of {raw.Source}");
        return ExitCodes.Ok;
    }

    /// <summary>
    /// The examples with placeholder labels (the evaluation graph takes a target; predict reads
    /// only the outputs): zeros, class 0 or 0.0, shaped as the loss's target.
    /// </summary>
    private static Dataset OpenFeatures(Config cfg, ModelSetup setup)
    {
        string path = cfg.String("data")!;
        string flag = cfg.Where("data");
        var options = setup.DataOptions;
        try
        {
            var features = DataSources.Detect(path) switch
            {
                DataSources.Format.Csv => CsvFeatures(cfg, path, setup),
                DataSources.Format.Npz => NpzFeatures(cfg, path, flag),
                var format => DataSources.Finite(DataSources.ReadTensor(path, format), flag, path),
            };
            long n = features.Shape.Count > 0 ? features.Shape[0] : 0;
            var targetShape = setup.Session.BatchShape(setup.Session.TargetInput, checked((int)Math.Max(1, n)));
            long perExample = targetShape.Skip(1).Aggregate(1L, (a, d) => a * d);
            var labels = setup.Classification
                ? DataTensor.FromInt64(new long[n * perExample], perExample == 1 ? [n] : [n, perExample])
                : DataTensor.FromFloat(new float[n * perExample], perExample == 1 ? [n] : [n, perExample]);
            return Dataset.FromTensors(features, labels, options);
        }
        catch (DataException e) { throw new OnnxKfacException($"{flag}: {e.Message.TrimEnd('.')}", e); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new OnnxKfacException($"{flag} {path}: cannot read: {e.Message}", e); }
    }

    /// <summary>
    /// A CSV's feature columns: every column but the label column when the file has one more
    /// column than the model takes features (or --label-column names it), every column when it
    /// has exactly as many.
    /// </summary>
    private static DataTensor CsvFeatures(Config cfg, string path, ModelSetup setup)
    {
        var csv = new CsvOptions { Delimiter = path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase) ? '\t' : ',' };
        if (cfg.String("label_column") is { } column)
            csv = int.TryParse(column, NumberStyles.None, CultureInfo.InvariantCulture, out int index) ? csv with { LabelColumnIndex = index } : csv with { LabelColumn = column };
        // Read with the last (or named) column as a real-valued "label", then decide what it is.
        using var all = Csv.OpenDataset(path, csv, new DataOptions { LabelKind = LabelKind.Regression });
        if (setup.Inputs.Length != 1)
            throw new OnnxKfacException($"{cfg.Where("data")} {path}: CSV feeds a model with one data input; this one has {setup.Inputs.Length}: give one tensor file per input (INPUT=FILE,...)");
        long expected = setup.InputShapes[0].Aggregate(1L, (a, d) => a * d);
        bool unlabelled = cfg.String("label_column") is null && all.FeatureLength + 1 == expected;
        if (!unlabelled && all.FeatureLength != expected)
            throw new OnnxKfacException($"{cfg.Where("data")} {path}: {all.FeatureLength + 1} columns, but model input '{setup.Inputs[0].Name}' takes {expected} features per example (give them alone, or with one label column)");
        int width = unlabelled ? all.FeatureLength + 1 : all.FeatureLength;
        var values = new float[(long)all.Count * width];
        Span<float> label = stackalloc float[1];
        for (int i = 0; i < all.Count; i++)
        {
            var row = values.AsSpan(i * width, width);
            all.CopyExample(i, row[..all.FeatureLength], label);
            if (unlabelled) row[^1] = label[0];
        }
        return DataTensor.FromFloat(values, all.Count, width);
    }

    private static DataTensor NpzFeatures(Config cfg, string path, string flag)
    {
        var (xKey, _) = DataSources.NpzKeys(cfg);
        var tensors = Npz.ReadTensors(path);
        return tensors.TryGetValue(xKey, out var x)
            ? DataSources.Finite(x, flag, path)
            : throw new OnnxKfacException($"{flag} {path}: the archive has no entry '{xKey}' for the features (it holds: {string.Join(", ", tensors.Keys.Order(StringComparer.Ordinal))}); name it with --npz-keys FEATURES,LABELS");
    }

    /// <summary>[N, the output's static per-example dims], or [N, values per example] where they are dynamic.</summary>
    private static long[] OutputShape(ModelSetup setup, int n, int perExample)
    {
        var manifest = setup.Session.Manifest;
        var declared = manifest.Outputs.First(o => o.Name == manifest.Loss.Output).Shape;
        if (declared is { Length: >= 1 } s && s[1..].All(d => d > 0) && s[1..].Aggregate(1L, (a, d) => a * d) == perExample)
            return [n, .. s[1..]];
        return [n, perExample];
    }

    /// <summary>The arg-max class and the softmax (in double precision) of every row.</summary>
    private static (long[] Classes, float[] Probabilities) Softmax(float[] logits, int n, int classes)
    {
        var predicted = new long[n];
        var probabilities = new float[(long)n * classes];
        for (int i = 0; i < n; i++)
        {
            var row = logits.AsSpan(i * classes, classes);
            int arg = 0;
            for (int c = 1; c < classes; c++) if (row[c] > row[arg]) arg = c;
            double max = row[arg], sum = 0;
            for (int c = 0; c < classes; c++) sum += Math.Exp(row[c] - max);
            for (int c = 0; c < classes; c++) probabilities[i * classes + c] = (float)(Math.Exp(row[c] - max) / sum);
            predicted[i] = arg;
        }
        return (predicted, probabilities);
    }

    private static void WriteCsv(Stream stream, Kind kind, float[] values, int n, int perExample, long[]? predicted, float[]? probabilities)
    {
        using var w = new StreamWriter(stream, new UTF8Encoding(false), 1 << 16, leaveOpen: true) { NewLine = "\n" };
        bool classifier = predicted is not null;
        var header = new List<string> { "example" };
        if (classifier) header.AddRange(["class", "probability"]);
        if (kind == Kind.Outputs) header.AddRange(Enumerable.Range(0, perExample).Select(k => $"output_{k}"));
        if (kind == Kind.Probabilities) header.AddRange(Enumerable.Range(0, perExample).Select(k => $"probability_{k}"));
        w.WriteLine(string.Join(",", header));
        var line = new StringBuilder();
        for (int i = 0; i < n; i++)
        {
            line.Clear().Append(i.ToString(CultureInfo.InvariantCulture));
            if (classifier)
                line.Append(',').Append(predicted![i].ToString(CultureInfo.InvariantCulture))
                    .Append(',').Append(probabilities![i * perExample + predicted[i]].ToString("R", CultureInfo.InvariantCulture));
            var row = kind switch
            {
                Kind.Outputs => values.AsSpan(i * perExample, perExample),
                Kind.Probabilities => probabilities.AsSpan(i * perExample, perExample),
                _ => [],
            };
            foreach (float v in row) line.Append(',').Append(v.ToString("R", CultureInfo.InvariantCulture));
            w.WriteLine(line);
        }
    }
}
