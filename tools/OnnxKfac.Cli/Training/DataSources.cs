using System.Globalization;
using OnnxKfac.Graph;
using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Cli.Training;

/// <summary>
/// Opens the data files named on the command line as <see cref="Dataset"/>s. The format is
/// chosen by the file name: <c>.csv</c>/<c>.tsv</c> (label in a column), <c>.npz</c> (features
/// and labels under keys; with several model inputs one entry per input), <c>.npy</c> and
/// <c>.pb</c> (ONNX TensorProto; labels in a second file), anything else IDX (raw or gzip;
/// labels in a second file). A data setting may also name one tensor file per model input,
/// <c>NAME=FILE,NAME=FILE</c>. Every failure becomes one line that names the flag and the file.
/// </summary>
internal static class DataSources
{
    public enum Format { Csv, Npz, Npy, TensorProto, Idx }

    public static Format Detect(string path)
    {
        string name = Path.GetFileName(path).ToLowerInvariant();
        if (name.EndsWith(".csv", StringComparison.Ordinal) || name.EndsWith(".tsv", StringComparison.Ordinal)) return Format.Csv;
        if (name.EndsWith(".npz", StringComparison.Ordinal)) return Format.Npz;
        if (name.EndsWith(".npy", StringComparison.Ordinal)) return Format.Npy;
        if (name.EndsWith(".pb", StringComparison.Ordinal)) return Format.TensorProto;
        return Format.Idx;
    }

    /// <summary>Fails early, before a model is loaded, when a data file does not exist.</summary>
    public static void CheckExists(Config cfg, string key)
    {
        if (cfg.String(key) is null) return;
        foreach (var (_, path) in Files(cfg, key))
            if (!File.Exists(path))
                throw cfg.Error(key, Directory.Exists(path) ? $"{path} is a folder; name the data file" : $"{path}: no such file");
    }

    /// <summary>
    /// The files of data setting <paramref name="key"/>: one unnamed path, or one
    /// <c>NAME=FILE</c> per model input (a value that is not an existing file and holds '=').
    /// </summary>
    private static (string? Input, string Path)[] Files(Config cfg, string key)
    {
        string text = cfg.String(key)!;
        if (File.Exists(text) || !text.Contains('=')) return [(null, text)];
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var result = new (string?, string)[parts.Length];
        for (int k = 0; k < parts.Length; k++)
        {
            int eq = parts[k].IndexOf('=');
            if (eq <= 0 || eq == parts[k].Length - 1)
                throw cfg.Error(key, $"'{parts[k]}' should be INPUT=FILE (one tensor file per model input, e.g. input_ids=ids.npy,attention_mask=mask.npy)");
            result[k] = (parts[k][..eq].Trim(), parts[k][(eq + 1)..].Trim());
        }
        var repeated = result.GroupBy(r => r.Item1).FirstOrDefault(g => g.Count() > 1);
        if (repeated is not null) throw cfg.Error(key, $"input '{repeated.Key}' is given twice");
        return result;
    }

    /// <summary>
    /// Opens the data set named by setting <paramref name="key"/> (e.g. "train") for a model
    /// whose data inputs are <paramref name="inputs"/>, with its labels from
    /// <paramref name="labelsKey"/> where the format needs a second file.
    /// </summary>
    public static Dataset Open(Config cfg, string key, string labelsKey, DataOptions options, IReadOnlyList<string> inputs)
    {
        if (cfg.String(key) is null) throw new InvalidOperationException($"no {key} data");
        CheckExists(cfg, key);
        CheckExists(cfg, labelsKey);
        var files = Files(cfg, key);
        string? labels = cfg.String(labelsKey);
        string flag = cfg.Where(key);
        string path = string.Join(", ", files.Select(f => f.Path));
        try
        {
            if (files[0].Input is not null) return OpenPerInput(cfg, key, labelsKey, files, options, inputs);
            var format = Detect(path);
            if (cfg.Has("inputs") && format != Format.Npz)
                throw cfg.Error("inputs", $"names entries of an NPZ archive, but {flag} {path} is not one; give one file per input instead: {flag} {string.Join(",", inputs.Select(i => $"{i}=FILE"))}");
            if (inputs.Count > 1 && format != Format.Npz)
                throw new OnnxKfacException(
                    $"{flag} {path}: {Describe(format)} file holds one block of features, but the model has {inputs.Count} data inputs ({string.Join(", ", inputs)}); " +
                    $"give an NPZ with one entry per input, or one file per input: {flag} {string.Join(",", inputs.Select(i => $"{i}=FILE"))}");
            switch (format)
            {
                case Format.Csv:
                {
                    if (labels is not null)
                        throw cfg.Error(labelsKey, $"{path} is CSV: its labels are one of its columns (--label-column NAME|INDEX; default the last), not a second file");
                    var csv = new CsvOptions { Delimiter = path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase) ? '\t' : ',' };
                    if (cfg.String("label_column") is { } column)
                        csv = int.TryParse(column, NumberStyles.None, CultureInfo.InvariantCulture, out int index)
                            ? csv with { LabelColumnIndex = index }
                            : csv with { LabelColumn = column };
                    return Csv.OpenDataset(path, csv, options);
                }
                case Format.Npz:
                {
                    if (labels is not null)
                        throw cfg.Error(labelsKey, $"{path} is NPZ: its labels are an entry of the archive (--npz-keys FEATURES,LABELS; default x,y), not a second file");
                    return OpenNpz(cfg, flag, path, options, inputs);
                }
                default:
                {
                    if (labels is null)
                        throw new OnnxKfacException($"{flag} {path}: {Describe(format)} file holds the features only; give the labels with --{labelsKey.Replace('_', '-')} FILE");
                    var labelFormat = Detect(labels);
                    if (format == Format.Idx && labelFormat == Format.Idx) return Idx.OpenDataset(path, labels, options);
                    return Dataset.FromTensors(Finite(ReadTensor(path, format), flag, path), ReadLabels(cfg, labelsKey), options);
                }
            }
        }
        catch (DataException e)
        {
            throw new OnnxKfacException($"{flag}: {e.Message.TrimEnd('.')}", e);
        }
        catch (ArgumentException e)
        {
            throw new OnnxKfacException($"{flag} {path}: {e.Message.TrimEnd('.')}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OnnxKfacException($"{flag} {path}: cannot read: {e.Message}", e);
        }
    }

    /// <summary><c>NAME=FILE,...</c>: one tensor file (.npy, .pb, IDX) per model input, labels in their own file.</summary>
    private static Dataset OpenPerInput(Config cfg, string key, string labelsKey, (string? Input, string Path)[] files, DataOptions options,
        IReadOnlyList<string> inputs)
    {
        string flag = cfg.Where(key);
        if (cfg.Has("inputs"))
            throw cfg.Error("inputs", $"names NPZ entries, but {flag} already names a file per input");
        foreach (var (input, path) in files)
        {
            if (!inputs.Contains(input!))
                throw cfg.Error(key, $"'{input}' is not a data input of the model (its data inputs: {string.Join(", ", inputs)})");
            if (Detect(path) is Format.Csv or Format.Npz)
                throw cfg.Error(key, $"{path}: a file per input must be a .npy, .pb or IDX tensor, not {Detect(path).ToString().ToUpperInvariant()}");
        }
        foreach (var input in inputs)
            if (!files.Any(f => f.Input == input))
                throw cfg.Error(key, $"no file for model input '{input}'; give one per input: {string.Join(",", inputs.Select(i => $"{i}=FILE"))}");
        if (cfg.String(labelsKey) is null)
            throw cfg.Error(key, $"files per input hold the features only; give the labels with --{labelsKey.Replace('_', '-')} FILE");
        var tensors = files.Select(f => KeyValuePair.Create(f.Input!, Finite(ReadTensor(f.Path, Detect(f.Path)), flag, f.Path)));
        return Dataset.FromTensors(tensors.ToArray(), ReadLabels(cfg, labelsKey), options);
    }

    /// <summary>
    /// An NPZ archive: each model input's entry is the one <c>--inputs INPUT=ENTRY</c> names, else
    /// the entry named like the input, else (one input) the FEATURES entry of <c>--npz-keys</c>;
    /// the labels are its LABELS entry.
    /// </summary>
    private static Dataset OpenNpz(Config cfg, string flag, string path, DataOptions options, IReadOnlyList<string> inputs)
    {
        var (xKey, yKey) = NpzKeys(cfg);
        var mapping = InputEntries(cfg, inputs);
        var tensors = Npz.ReadTensors(path);
        string have = string.Join(", ", tensors.Keys.Order(StringComparer.Ordinal));
        if (!tensors.TryGetValue(yKey, out var y))
            throw new OnnxKfacException($"{flag} {path}: the archive has no entry '{yKey}' for the labels (it holds: {have}); name the entries with --npz-keys FEATURES,LABELS");
        y = Finite(y, flag, $"{path} entry '{yKey}'");
        if (inputs.Count == 1 && mapping.Count == 0 && (cfg.Has("npz_keys") || !tensors.ContainsKey(inputs[0])))
        {
            if (!tensors.TryGetValue(xKey, out var x))
                throw new OnnxKfacException($"{flag} {path}: the archive has no entry '{xKey}' for the features (it holds: {have}); name the entries with --npz-keys FEATURES,LABELS");
            return Dataset.FromTensors(Finite(x, flag, path), y, options);
        }
        var named = new List<KeyValuePair<string, DataTensor>>();
        foreach (var input in inputs)
        {
            string entry = mapping.GetValueOrDefault(input, input);
            if (!tensors.TryGetValue(entry, out var t))
                throw new OnnxKfacException(mapping.ContainsKey(input)
                    ? $"{cfg.Where("inputs")}: {path} has no entry '{entry}' for model input '{input}' (it holds: {have})"
                    : $"{flag} {path}: no entry for model input '{input}' (it holds: {have}); name it with --inputs {input}=ENTRY");
            named.Add(KeyValuePair.Create(input, Finite(t, flag, $"{path} entry '{entry}'")));
        }
        return Dataset.FromTensors(named, y, options);
    }

    /// <summary><c>--inputs INPUT=ENTRY,...</c>: which NPZ entry feeds which model input.</summary>
    private static Dictionary<string, string> InputEntries(Config cfg, IReadOnlyList<string> inputs)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in cfg.List("inputs").SelectMany(v => v.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0 || eq == part.Length - 1)
                throw cfg.Error("inputs", $"'{part}' should be INPUT=ENTRY (e.g. input_ids=ids,attention_mask=mask)");
            string input = part[..eq].Trim(), entry = part[(eq + 1)..].Trim();
            if (!inputs.Contains(input))
                throw cfg.Error("inputs", $"'{input}' is not a data input of the model (its data inputs: {string.Join(", ", inputs)})");
            if (!result.TryAdd(input, entry)) throw cfg.Error("inputs", $"input '{input}' is mapped twice");
        }
        return result;
    }

    /// <summary>The labels file of a format that keeps them apart (.npy, .pb, IDX).</summary>
    private static DataTensor ReadLabels(Config cfg, string labelsKey)
    {
        string labels = cfg.String(labelsKey)!;
        var format = Detect(labels);
        if (format is Format.Csv or Format.Npz)
            throw cfg.Error(labelsKey, $"{labels}: labels must be an IDX, .npy or .pb tensor file");
        return Finite(ReadTensor(labels, format), cfg.Where(labelsKey), labels);
    }

    /// <summary>A float tensor with a NaN or an infinity is a data error naming the file and the example (row).</summary>
    internal static DataTensor Finite(DataTensor t, string flag, string path)
    {
        if (t.ElementType != DataElementType.Float32 || t.Shape.Count == 0) return t;
        var values = t.AsFloats();
        long perExample = t.Shape[0] == 0 ? 1 : values.Length / t.Shape[0];
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw new OnnxKfacException($"{flag} {path}: example {i / perExample} holds {values[i].ToString(System.Globalization.CultureInfo.InvariantCulture)} (value {i % perExample} of the example); NaN and infinity are not data");
        return t;
    }

    private static string Describe(Format f) => f switch
    {
        Format.Npy => "a .npy",
        Format.Csv => "a CSV",
        Format.TensorProto => "a TensorProto (.pb)",
        _ => "an IDX",
    };

    internal static DataTensor ReadTensor(string path, Format format) => format switch
    {
        Format.Npy => Npy.ReadTensor(path),
        Format.TensorProto => TensorProtoFile.ReadTensor(path),
        _ => Idx.ReadTensor(path),
    };

    internal static (string X, string Y) NpzKeys(Config cfg)
    {
        string text = cfg.String("npz_keys", "x,y")!;
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length != 2 || parts.Any(p => p.Length == 0))
            throw cfg.Error("npz_keys", $"'{text}' should be two entry names, FEATURES,LABELS (e.g. x,y)");
        return (parts[0], parts[1]);
    }

    /// <summary>
    /// The normalization from <c>--scale</c> and <c>--normalize</c> (none | auto | MEAN,STD), or
    /// null for none. <c>auto</c> computes per-channel means and deviations on <paramref name="training"/>.
    /// </summary>
    public static Normalization? ResolveNormalization(Config cfg, Dataset? training)
    {
        double scale = cfg.Double("scale", 1)!.Value;
        if (!(scale > 0)) throw cfg.Error("scale", $"{scale}: the divisor must be positive (e.g. 255 for bytes)");
        string mode = cfg.String("normalize", "none")!.Trim();
        Normalization? n;
        try
        {
            switch (mode.ToLowerInvariant())
            {
                case "none":
                    n = scale == 1 ? null : Normalization.DivideBy((float)scale);
                    break;
                case "auto":
                    if (training is null) throw cfg.Error("normalize", "'auto' computes the statistics from training data; give MEAN,STD or none here");
                    n = Normalization.Compute(training, NormalizationAxis.PerChannel, (float)(1 / scale));
                    break;
                default:
                    var parts = mode.Split(',', StringSplitOptions.TrimEntries);
                    if (parts.Length != 2 ||
                        !float.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out float mean) ||
                        !float.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out float std))
                        throw cfg.Error("normalize", $"'{mode}' is not none, auto or MEAN,STD (e.g. 0.2860,0.3530)");
                    if (!(std > 0) || !float.IsFinite(std) || !float.IsFinite(mean))
                        throw cfg.Error("normalize", $"'{mode}': the standard deviation must be positive and both numbers finite");
                    n = new Normalization { Scale = (float)(1 / scale), Mean = [mean], Std = [std] };
                    break;
            }
        }
        catch (DataException e)
        {
            throw new OnnxKfacException($"{cfg.Where("normalize")}: {e.Message.TrimEnd('.')}", e);
        }
        return n;
    }

    /// <summary>A normalization as JSON-friendly values for the report.</summary>
    public static NormalizationSummary? DescribeNormalization(Normalization? n) => n is null ? null :
        new(n.Scale, n.Axis == NormalizationAxis.PerChannel ? "channel" : "feature", n.Mean?.ToArray(), n.Std?.ToArray());

    /// <summary>Applies <paramref name="n"/> (a new view; the caller disposes both).</summary>
    public static Dataset Apply(Dataset data, Normalization? n, Config cfg)
    {
        if (n is null) return data;
        try { return data.WithNormalization(n); }
        catch (ArgumentException e)
        {
            throw new OnnxKfacException($"{cfg.Where("normalize")}: {e.Message.TrimEnd('.')}", e);
        }
    }
}

/// <summary>A normalization in the report: <c>y = (x * scale - mean) / std</c> per feature or channel.</summary>
internal sealed record NormalizationSummary(float Scale, string Axis, float[]? Mean, float[]? Std);
