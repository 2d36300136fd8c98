using System.Globalization;
using System.Text.RegularExpressions;
using OnnxKfac.Graph;

namespace OnnxKfac.Cli.Training;

/// <summary>
/// A CI gate, <c>--fail-if "val_accuracy&lt;0.85"</c>: the run fails (exit code
/// <see cref="Gates.ExitCode"/>) when the metric satisfies the comparison. A metric that is
/// NaN or was not measured fails its gate.
/// </summary>
internal sealed record Gate(string Expression, string Metric, string Operator, double Threshold)
{
    /// <summary>True when the gate fails for <paramref name="value"/>.</summary>
    public bool Fails(double? value) => value is not { } v || double.IsNaN(v) || Operator switch
    {
        "<" => v < Threshold,
        "<=" => v <= Threshold,
        ">" => v > Threshold,
        ">=" => v >= Threshold,
        _ => throw new InvalidOperationException(Operator),
    };
}

/// <summary>The outcome of one gate, as the report stores it.</summary>
internal sealed record GateResult(string Expression, string Metric, double? Value, bool Passed);

internal static partial class Gates
{
    /// <summary>Exit code of a run whose training succeeded but a <c>--fail-if</c> gate failed.</summary>
    public const int ExitCode = 3;

    [GeneratedRegex(@"^\s*([a-z_][a-z0-9_]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*(%?)\s*$", RegexOptions.CultureInvariant)]
    private static partial Regex Pattern();

    /// <summary>
    /// Parses gate expressions against the metrics a run can produce; <paramref name="available"/>
    /// maps each metric to null (available) or the reason it is not measured in this run.
    /// </summary>
    public static IReadOnlyList<Gate> Parse(IEnumerable<string> expressions, IReadOnlyDictionary<string, string?> available, Config cfg)
    {
        var gates = new List<Gate>();
        foreach (var text in expressions)
        {
            var m = Pattern().Match(text);
            string known = string.Join(", ", available.Keys);
            if (!m.Success)
                throw cfg.Error("fail_if", $"'{text}' is not a gate; write METRIC OP NUMBER with OP one of < <= > >=, e.g. \"val_accuracy<0.85\" (metrics: {known})");
            string metric = m.Groups[1].Value;
            if (!available.TryGetValue(metric, out var why))
                throw cfg.Error("fail_if", $"'{text}': unknown metric '{metric}'; metrics: {known}");
            if (why is not null) throw cfg.Error("fail_if", $"'{text}': {metric} is not measured in this run: {why}");
            if (!double.TryParse(m.Groups[3].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double threshold) || !double.IsFinite(threshold))
                throw cfg.Error("fail_if", $"'{text}': '{m.Groups[3].Value}' is not a number");
            if (m.Groups[4].Value == "%") threshold /= 100;
            gates.Add(new Gate(text.Trim(), metric, m.Groups[2].Value, threshold));
        }
        return gates;
    }

    /// <summary>Evaluates every gate; prints passes on <paramref name="output"/> and failures on <paramref name="error"/>.</summary>
    public static IReadOnlyList<GateResult> Check(IReadOnlyList<Gate> gates, IReadOnlyDictionary<string, double?> metrics, TextWriter output, TextWriter error)
    {
        var results = new List<GateResult>();
        foreach (var g in gates)
        {
            double? value = metrics.GetValueOrDefault(g.Metric);
            bool failed = g.Fails(value);
            string shown = value is { } v ? v.ToString("G6", CultureInfo.InvariantCulture) : "not measured";
            if (failed) error.WriteLine($"gate failed: --fail-if \"{g.Expression}\": {g.Metric} = {shown}");
            else output.WriteLine($"gate passed: --fail-if \"{g.Expression}\": {g.Metric} = {shown}");
            results.Add(new GateResult(g.Expression, g.Metric, value is { } x && double.IsFinite(x) ? x : null, !failed));
        }
        return results;
    }
}
