using System.Text.Json.Nodes;
using ScottPlot;

namespace OnnxKfac.AeBench;

/// <summary>Training loss (the evaluation subset, ×784) against wall-clock and against updates, one line per run (ScottPlot, as the CLI's LossPlot).</summary>
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
        return $"{fw} {h}, batch {r["batch"]}";
    }

    public static void Save(string dir, IReadOnlyList<string> runs)
    {
        Directory.CreateDirectory(dir);
        var loaded = runs.Select(p => JsonNode.Parse(File.ReadAllText(p))!.AsObject()).ToList();
        foreach (var (axis, label, file) in new[] { ("wall_s", "training seconds (evaluation excluded)", "ae_loss_vs_time.png"), ("update", "updates", "ae_loss_vs_updates.png") })
        {
            var plot = new Plot();
            plot.Title("Fashion-MNIST deep autoencoder: training loss (BCE summed over pixels, mean over images)");
            plot.XLabel(label);
            plot.YLabel("loss on 5120 training images");
            var palette = new ScottPlot.Palettes.Category20();
            int k = 0;
            foreach (var r in loaded)
            {
                var ev = r["evals"]!.AsArray().Where(e => double.IsFinite((double)e!["loss"]!)).ToArray();
                if (ev.Length == 0) continue;
                var line = plot.Add.Scatter(ev.Select(e => (double)e![axis]!).ToArray(), ev.Select(e => (double)e!["loss"]!).ToArray(), palette.GetColor(k++));
                string name = Label(r);
                line.LegendText = name;
                line.MarkerSize = 3;
                line.LineWidth = 2;
            }
            plot.Axes.AutoScale();
            plot.ShowLegend(Alignment.UpperRight);
            plot.Legend.FontSize = 11;
            File.WriteAllBytes(Path.Combine(dir, file), plot.GetImage(1000, 560).GetImageBytes(ImageFormat.Png, 100));
            Console.WriteLine(Path.Combine(dir, file));
        }
    }
}
