using System.Globalization;
using OnnxKfac.Cli.Training;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Cli.Common;

/// <summary>
/// The classifier metrics beyond accuracy (top-k accuracy, macro F1, the confusion matrix) as
/// <c>eval</c> and <c>train</c> print them, and as their reports and gates name them.
/// </summary>
internal static class ClassifierMetrics
{
    /// <summary>The largest class count whose confusion matrix is printed as a table (the report always has it).</summary>
    public const int MaxPrintedClasses = 20;

    /// <summary>", macro F1 0.8123, top-5 accuracy 97.10%" (empty for a model that is no classifier).</summary>
    public static string Describe(Metrics m) =>
        (m.MacroF1 is { } f ? $", macro F1 {f.ToString("F4", CultureInfo.InvariantCulture)}" : "") +
        (m.TopKAccuracy is { } t ? $", top-{m.TopK} accuracy {ProgressText.Percent(t)}" : "");

    /// <summary>Adds <c>{prefix}top_k_accuracy</c> and <c>{prefix}macro_f1</c> to a gate's metrics.</summary>
    public static void AddTo(IDictionary<string, double?> metrics, string prefix, Metrics? m)
    {
        metrics[prefix + "top_k_accuracy"] = m?.TopKAccuracy;
        metrics[prefix + "macro_f1"] = m?.MacroF1;
    }

    /// <summary>Why <c>{prefix}top_k_accuracy</c> and <c>{prefix}macro_f1</c> cannot be measured (null: they can), for <see cref="Gates.Parse"/>.</summary>
    public static void AddAvailability(IDictionary<string, string?> available, string prefix, string? unavailable, bool classification, bool topK)
    {
        const string noClasses = "measured for cross-entropy classifiers only";
        available[prefix + "macro_f1"] = unavailable ?? (classification ? null : noClasses);
        available[prefix + "top_k_accuracy"] = unavailable ?? (!classification ? noClasses : topK ? null : "needs --top-k K");
    }

    /// <summary>The confusion matrix for a report: rows are true classes, columns predicted classes.</summary>
    public static long[][]? Rows(Metrics? m) => m?.Confusion?.Rows();

    /// <summary>Prints the confusion matrix as a table (up to <see cref="MaxPrintedClasses"/> classes).</summary>
    public static void WriteConfusion(ReportWriter w, string title, Metrics? m)
    {
        if (m?.Confusion is not { } c) return;
        if (c.Classes > MaxPrintedClasses)
        {
            w.Line($"{title}: {c.Classes} classes (the confusion matrix is in the JSON report)");
            return;
        }
        w.Heading($"{title} (rows: true class, columns: predicted)");
        var headers = new[] { "true\\pred" }.Concat(Enumerable.Range(0, c.Classes).Select(k => k.ToString(CultureInfo.InvariantCulture))).Append("F1").ToArray();
        var rows = Enumerable.Range(0, c.Classes).Select(t =>
            (IReadOnlyList<string>)new[] { t.ToString(CultureInfo.InvariantCulture) }
                .Concat(Enumerable.Range(0, c.Classes).Select(p => c.Count(t, p).ToString(CultureInfo.InvariantCulture)))
                .Append(c.F1(t) is { } f ? f.ToString("F3", CultureInfo.InvariantCulture) : "-").ToArray());
        w.Table(headers, rows);
    }
}
