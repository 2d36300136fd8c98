using System.Text.Json.Nodes;
using ScottPlot;

namespace OnnxKfac.AeBench;

/// <summary>One line of a plot.</summary>
internal sealed record Series(string Label, double[] X, double[] Y, string? Color = null);

/// <summary>Line plots as PNG (ScottPlot, as the CLI's LossPlot): the autoencoder's loss curves, and any curves a
/// JSON spec describes (the CNN fine-tune benchmark's accuracy curves, tools/bench/finetune).</summary>
internal static class Plots
{
    private static string Label(JsonObject r)
    {
        string fw = (string?)r["framework"] == "pytorch" ? "PyTorch" : "OnnxKfac";
        string o = (string)r["optimizer"]!;
        double lr = (double)r["lr"]!, damping = (double)r["damping"]!;
        string h = o switch
        {
            "kfac-quad" => $"K-FAC α/μ, LM λ₀={damping:g}",
            "kfac-kl" => $"K-FAC KL-clip lr {lr:g} λ={damping:g}",
            "sgd" => $"SGD+mom lr {lr:g}",
            _ => $"AdamW lr {lr:g}",
        };
        if (o.StartsWith("kfac", StringComparison.Ordinal) && r["statistics_fraction"] is { } f && (double)f < 1) h += $" f {(double)f:g}";
        if (o.StartsWith("kfac", StringComparison.Ordinal) && r["weight_decay"] is { } wd && (double)wd == 0) h += " η 0";
        if (o == "kfac-quad" && r["quadratic_fraction"] is { } q && (double)q < 1) h += $" q {(double)q:g}";
        return $"{fw} {h}, batch {r["batch"]}";
    }

    /// <summary>The autoencoder runs (train's JSON): loss against training seconds and against updates.</summary>
    public static void Save(string dir, IReadOnlyList<string> runs)
    {
        Directory.CreateDirectory(dir);
        var loaded = runs.Select(p => JsonNode.Parse(File.ReadAllText(p))!.AsObject()).ToList();
        // The whole descent, then the low-loss end where the optimizers part (y from the lowest loss to 300).
        double low = loaded.SelectMany(r => r["evals"]!.AsArray()).Select(e => (double)e!["loss"]!).Where(double.IsFinite).DefaultIfEmpty(0).Min();
        foreach (var (axis, label, file, yRange) in new (string, string, string, (double, double)?)[]
        {
            ("wall_s", "training seconds (evaluation excluded)", "ae_loss_vs_time.png", null),
            ("update", "updates", "ae_loss_vs_updates.png", null),
            ("wall_s", "training seconds (evaluation excluded)", "ae_loss_vs_time_low.png", (Math.Floor(low / 10) * 10, 300)),
        })
        {
            var series = loaded.Select(r => (r, ev: r["evals"]!.AsArray().Where(e => double.IsFinite((double)e!["loss"]!)).ToArray()))
                .Where(x => x.ev.Length > 0)
                .Select(x => new Series(Label(x.r), x.ev.Select(e => (double)e![axis]!).ToArray(), x.ev.Select(e => (double)e!["loss"]!).ToArray()))
                .ToList();
            Lines(Path.Combine(dir, file), "Fashion-MNIST deep autoencoder: training loss (BCE summed over pixels, mean over images)",
                label, "loss on 5120 training images", series, Alignment.UpperRight, yRange);
        }
    }

    /// <summary>Plots from a JSON spec: an array of {"out", "title", "x_label", "y_label", "legend" ("upper right"...),
    /// "series": [{"label", "x", "y", "color" (optional, "#rrggbb")}]}.</summary>
    public static void FromSpec(string specPath)
    {
        foreach (var p in JsonNode.Parse(File.ReadAllText(specPath))!.AsArray().Select(n => n!.AsObject()))
        {
            var series = p["series"]!.AsArray().Select(s => new Series((string)s!["label"]!,
                s["x"]!.AsArray().Select(v => (double)v!).ToArray(), s["y"]!.AsArray().Select(v => (double)v!).ToArray(), (string?)s["color"])).ToList();
            var legend = ((string?)p["legend"] ?? "upper right") switch
            {
                "lower right" => Alignment.LowerRight,
                "lower left" => Alignment.LowerLeft,
                "upper left" => Alignment.UpperLeft,
                _ => Alignment.UpperRight,
            };
            Lines((string)p["out"]!, (string)p["title"]!, (string)p["x_label"]!, (string)p["y_label"]!, series, legend);
        }
    }

    private static void Lines(string path, string title, string xLabel, string yLabel, IReadOnlyList<Series> series, Alignment legend,
        (double Min, double Max)? yRange = null)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        var palette = new ScottPlot.Palettes.Category20();
        int k = 0;
        foreach (var s in series)
        {
            var color = palette.GetColor(k++);
            var line = plot.Add.Scatter(s.X, s.Y, s.Color is null ? color : Color.FromHex(s.Color));
            line.LegendText = s.Label;
            line.MarkerSize = 3;
            line.LineWidth = 2;
        }
        plot.Axes.AutoScale();
        if (yRange is { } y) plot.Axes.SetLimitsY(y.Min, y.Max);
        plot.ShowLegend(legend);
        plot.Legend.FontSize = 11;
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllBytes(path, plot.GetImage(1000, 560).GetImageBytes(ImageFormat.Png, 100));
        Console.WriteLine(path);
    }
}
