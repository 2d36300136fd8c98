using OnnxKfac.Graph.Model;
using ScottPlot;

namespace OnnxKfac.Cli.Training;

/// <summary>The loss curve as a PNG (ScottPlot): training loss per update, its moving average, validation points.</summary>
internal static class LossPlot
{
    public const int Width = 900;
    public const int Height = 500;

    /// <summary>The formats a plot is written in, chosen by the path's extension.</summary>
    public static bool IsSupported(string path) => Path.GetExtension(path).ToLowerInvariant() is ".png" or ".svg";

    private static bool IsSvg(string path) => Path.GetExtension(path).Equals(".svg", StringComparison.OrdinalIgnoreCase);

    public static void Save(string path, string title, IReadOnlyList<StepRecord> steps, IReadOnlyList<ValidationRecord> validations, int smoothing)
    {
        var kept = steps.Where(s => !s.Skipped && double.IsFinite(s.Loss)).ToArray();
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("update");
        plot.YLabel("loss");
        if (kept.Length > 0)
        {
            double[] xs = kept.Select(s => (double)s.Step).ToArray();
            double[] ys = kept.Select(s => s.Loss).ToArray();
            var raw = plot.Add.Scatter(xs, ys, Colors.SteelBlue.WithAlpha(0.35));
            raw.LegendText = "train loss (per update)";
            raw.MarkerSize = 0;
            raw.LineWidth = 1;
            int window = Math.Clamp(smoothing, 1, Math.Max(1, ys.Length));
            if (window > 1 && ys.Length > window)
            {
                var avg = MovingAverage(ys, window);
                var line = plot.Add.Scatter(xs, avg, Colors.Navy);
                line.LegendText = $"train loss (mean of {window})";
                line.MarkerSize = 0;
                line.LineWidth = 2;
            }
        }
        var val = validations.Where(v => double.IsFinite(v.Loss)).ToArray();
        if (val.Length > 0)
        {
            var points = plot.Add.Scatter(val.Select(v => (double)v.Step).ToArray(), val.Select(v => v.Loss).ToArray(), Colors.OrangeRed);
            points.LegendText = "validation loss";
            points.MarkerSize = 9;
            points.LineWidth = 1.5f;
            points.LinePattern = LinePattern.Dashed;
        }
        plot.ShowLegend(Alignment.UpperRight);
        if (IsSvg(path)) AtomicFile.WriteAllText(path, plot.GetSvgXml(Width, Height));
        else AtomicFile.WriteAllBytes(path, plot.GetImage(Width, Height).GetImageBytes(ImageFormat.Png, 100));
    }

    private static double[] MovingAverage(double[] ys, int window)
    {
        var r = new double[ys.Length];
        double sum = 0;
        for (int i = 0; i < ys.Length; i++)
        {
            sum += ys[i];
            if (i >= window) sum -= ys[i - window];
            r[i] = sum / Math.Min(i + 1, window);
        }
        return r;
    }
}
