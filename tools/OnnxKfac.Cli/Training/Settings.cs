using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxKfac.Cli.Common;
using OnnxKfac.Graph;

namespace OnnxKfac.Cli.Training;

/// <summary>The JSON type of a setting's value.</summary>
internal enum SettingType { String, Int, Double, Bool, List }

/// <summary>
/// One setting of a command: a flag (<c>--batch-size</c>) and the same value as a config-file
/// key (<c>batch_size</c>: the flag's name without dashes, '-' becoming '_').
/// </summary>
internal sealed record Setting(string Key, SettingType Type, string Help, string? HelpName = null)
{
    public string Flag => "--" + Key.Replace('_', '-');

    /// <summary>A short alias such as <c>-o</c>.</summary>
    public string? Alias { get; init; }

    /// <summary>Run-specific (where to write, whether to resume): not inherited from a checkpoint's config.</summary>
    public bool RunSpecific { get; init; }

    /// <summary>Given as the command's argument (MODEL), not as a flag; still a config key.</summary>
    public bool Positional { get; init; }

    public string TypeName => Type switch
    {
        SettingType.String => "a string",
        SettingType.Int => "an integer",
        SettingType.Double => "a number",
        SettingType.Bool => "true or false",
        _ => "a list of strings",
    };
}

/// <summary>
/// A command's settings: builds its options, and resolves values from layers (a checkpoint's
/// stored config, a JSON config file, the command line; later layers win). Every value
/// remembers where it came from, so errors name the flag or the config key at fault.
/// </summary>
internal sealed class SettingTable
{
    private readonly Dictionary<string, (Setting Setting, Option? Option)> _byKey = new(StringComparer.Ordinal);

    public SettingTable(IEnumerable<Setting> settings)
    {
        foreach (var s in settings)
        {
            Option? option = s.Positional ? null : s.Type switch
            {
                SettingType.String => new Option<string?>(s.Flag) { Description = s.Help, HelpName = s.HelpName },
                SettingType.Int => new Option<long?>(s.Flag) { Description = s.Help, HelpName = s.HelpName ?? "N" },
                SettingType.Double => new Option<double?>(s.Flag) { Description = s.Help, HelpName = s.HelpName ?? "X" },
                SettingType.Bool => new Option<bool>(s.Flag) { Description = s.Help },
                _ => new Option<string[]>(s.Flag) { Description = s.Help, HelpName = s.HelpName },
            };
            if (s.Alias is { } a) option?.Aliases.Add(a);
            _byKey.Add(s.Key, (s, option));
        }
    }

    public IEnumerable<Setting> Settings => _byKey.Values.Select(v => v.Setting);

    public bool Contains(string key) => _byKey.ContainsKey(key);

    public void AddTo(Command command)
    {
        foreach (var (_, option) in _byKey.Values)
            if (option is not null) command.Options.Add(option);
    }

    /// <summary>The values given on the command line (flags that were not given are absent).</summary>
    public Config FromCommandLine(ParseResult r, Config into)
    {
        foreach (var (s, option) in _byKey.Values)
        {
            if (option is null) continue;
            object? value = s.Type switch
            {
                SettingType.String => r.GetValue((Option<string?>)option),
                SettingType.Int => r.GetValue((Option<long?>)option),
                SettingType.Double => r.GetValue((Option<double?>)option),
                SettingType.Bool => r.GetValue((Option<bool>)option) ? true : null,
                _ => r.GetResult(option) is null ? null : r.GetValue((Option<string[]>)option),
            };
            if (value is not null) into.Set(s.Key, value, s.Flag);
        }
        return into;
    }

    /// <summary>Reads a JSON config file: an object whose keys are settings. Unknown keys and wrong types are refused, naming the key.</summary>
    public Config FromFile(string path, Config into)
    {
        if (!File.Exists(path)) throw new OnnxKfacException($"--config {path}: no such file");
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OnnxKfacException($"--config {path}: cannot read: {e.Message}", e);
        }
        return FromJson(text, $"config {path}", into, fromCheckpoint: false);
    }

    /// <summary>
    /// Reads a JSON object of settings; <paramref name="where"/> prefixes errors ("config run.json").
    /// A checkpoint's stored config skips run-specific settings and keys this version does not know.
    /// </summary>
    public Config FromJson(string json, string where, Config into, bool fromCheckpoint)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new OnnxKfacException($"{where}: not valid JSON: {e.Message}", e);
        }
        if (root is not JsonObject obj) throw new OnnxKfacException($"{where}: expected a JSON object of settings, e.g. {{\"epochs\": 3, \"lr\": 0.001}}");
        foreach (var (rawKey, node) in obj)
        {
            string key = rawKey.Replace('-', '_');
            if (!_byKey.TryGetValue(key, out var entry))
            {
                if (fromCheckpoint) continue;
                string? near = Nearest(key);
                throw new OnnxKfacException($"{where}: unknown key '{rawKey}'{(near is null ? "" : $" (did you mean '{near}'?)")}");
            }
            var s = entry.Setting;
            if (fromCheckpoint && s.RunSpecific) continue;
            if (node is null) continue;
            object value = Convert(node, s) ?? throw new OnnxKfacException(
                $"{where}: key '{rawKey}': expected {s.TypeName}, got {node.ToJsonString()}");
            into.Set(key, value, $"{where}: key '{rawKey}'");
        }
        return into;
    }

    private static object? Convert(JsonNode node, Setting s)
    {
        if (node is JsonValue v)
        {
            switch (s.Type)
            {
                case SettingType.String when v.TryGetValue(out string? str): return str;
                case SettingType.Bool when v.TryGetValue(out bool b): return b;
                case SettingType.Int when v.GetValueKind() == JsonValueKind.Number:
                    return v.TryGetValue(out long l) ? l : v.TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) < 1e15 ? (long)d : null;
                case SettingType.Double when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out double x): return x;
                case SettingType.List when v.TryGetValue(out string? one): return new[] { one };
            }
            return null;
        }
        if (s.Type == SettingType.List && node is JsonArray a)
        {
            var items = new string[a.Count];
            for (int k = 0; k < a.Count; k++)
            {
                if (a[k] is not JsonValue item || !item.TryGetValue(out string? str)) return null;
                items[k] = str;
            }
            return items;
        }
        return null;
    }

    private string? Nearest(string key)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var k in _byKey.Keys)
        {
            int d = Distance(key, k);
            if (d < bestDistance) { bestDistance = d; best = k; }
        }
        return bestDistance <= Math.Max(2, key.Length / 3) ? best : null;
    }

    private static int Distance(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) prev[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (int j = 1; j <= b.Length; j++)
                cur[j] = Math.Min(Math.Min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }
}

/// <summary>
/// Resolved setting values and where each came from. Reading a value through the typed
/// accessors records the value in effect (default included) in <see cref="Resolved"/>,
/// which is what the report and the checkpoint store.
/// </summary>
internal sealed class Config
{
    private readonly Dictionary<string, (object Value, string Origin)> _values = new(StringComparer.Ordinal);

    /// <summary>The values in effect, keyed by config key (what the report and checkpoint store).</summary>
    public SortedDictionary<string, object?> Resolved { get; } = new(StringComparer.Ordinal);

    public void Set(string key, object value, string origin) => _values[key] = (value, origin);

    public bool Has(string key) => _values.ContainsKey(key);

    /// <summary>The raw value, without recording it as used.</summary>
    public object? Peek(string key) => _values.TryGetValue(key, out var v) ? v.Value : null;

    /// <summary>True when neither a model nor training data was named: the embedded default runs.</summary>
    public bool IsDefaultJob { get; set; }

    /// <summary>Where a value came from, for messages: "--lr" or "config run.json: key 'lr'".</summary>
    public string Where(string key) => _values.TryGetValue(key, out var v) ? v.Origin : "--" + key.Replace('_', '-');

    public string? String(string key, string? fallback = null) => Record(key, _values.TryGetValue(key, out var v) ? (string)v.Value : fallback);

    public long? Long(string key, long? fallback = null) => Record(key, _values.TryGetValue(key, out var v) ? (long)v.Value : fallback);

    public int? Int(string key, int? fallback = null)
    {
        long? value = _values.TryGetValue(key, out var v) ? (long)v.Value : fallback;
        if (value is { } x && x is < int.MinValue or > int.MaxValue) throw Error(key, $"{x} is too large");
        return Record<int?>(key, value is { } y ? (int)y : null);
    }

    public double? Double(string key, double? fallback = null)
    {
        double? value = _values.TryGetValue(key, out var v) ? (double)v.Value : fallback;
        if (value is { } x && !double.IsFinite(x)) throw Error(key, $"{x} is not a finite number");
        return Record(key, value);
    }

    public bool Bool(string key, bool fallback = false) => Record(key, _values.TryGetValue(key, out var v) ? (bool)v.Value : fallback);

    public string[] List(string key) => Record(key, _values.TryGetValue(key, out var v) ? (string[])v.Value : []);

    /// <summary>Records a value derived by the command (e.g. a default that depends on another setting).</summary>
    public T Record<T>(string key, T value)
    {
        Resolved[key] = value;
        return value;
    }

    /// <summary>A user error about the value of <paramref name="key"/>, naming the flag or config key.</summary>
    public OnnxKfacException Error(string key, string message, Exception? inner = null) =>
        new($"{Where(key)}: {message}", inner!);

    /// <summary>The resolved values as JSON (indented, snake_case keys).</summary>
    public string ResolvedJson()
    {
        var obj = new JsonObject();
        foreach (var (k, v) in Resolved) obj[k] = v is null ? null : JsonSerializer.SerializeToNode(v, Json.TypeOf(v));
        return obj.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    public static string Format(double x) => x.ToString("G6", CultureInfo.InvariantCulture);
}
