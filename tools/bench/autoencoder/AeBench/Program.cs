using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxKfac.AeBench;
using OnnxKfac.Toolkit.Kfac;

// onnx-kfac-ae-bench: the autoencoder benchmarks of issue 7 (tools/bench/autoencoder/README.md).
//   train --model M --data DIR --optimizer sgd|adamw|kfac-quad|kfac-kl [--lr X] [--batch N] [--seconds S] [--fraction F]
//         [--quadratic-fraction Q] [--inverse-precision auto|float32|float64] ... --out run.json      (F: statistics' fraction of the batch; Q: the quadratic rule's Fisher products')
//   step  --model M --matmul MM --data DIR --batch N --threads T [--steps K] [--fraction F] [--weight-decay η] [--precondition auto|dense|per-example]
//         [--inverse-precision auto|float32|float64] --out step.json
//   profile --model M --data DIR --batch N --threads T [--fraction F] [--weight-decay η] [--runs R] --out profile.json
//                                                 (op profile of SGD's graph against K-FAC's statistics graph)
//   plot  --out DIR run1.json run2.json ...       (loss against wall-clock and against updates, PNG)
//   curves SPEC.json                              (the plots a JSON spec describes, PNG: Plots.FromSpec; tools/bench/finetune)
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
const string usage = "usage: onnx-kfac-ae-bench train|step|profile|plot|curves ... (the options: tools/bench/autoencoder/AeBench/Program.cs, tools/bench/autoencoder/README.md)";
if (args.Length == 0 || args[0] is "-h" or "--help" or "help") { Console.Error.WriteLine(usage); return args.Length == 0 ? 2 : 0; }
var opts = new Dictionary<string, string>();
var rest = new List<string>();
for (int i = 1; i < args.Length; i++)
{
    if (args[i].StartsWith("--", StringComparison.Ordinal) && i + 1 < args.Length) opts[args[i][2..]] = args[++i];
    else rest.Add(args[i]);
}
string S(string k, string d) => opts.GetValueOrDefault(k, d);
static KfacInversePrecision Precision(string p) => p switch
{
    "auto" => KfacInversePrecision.Auto, "float32" => KfacInversePrecision.Float32, "float64" => KfacInversePrecision.Float64,
    _ => throw new ArgumentException($"--inverse-precision {p}: expected auto, float32 or float64"),
};
double D(string k, double d) => opts.TryGetValue(k, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : d;
int I(string k, int d) => opts.TryGetValue(k, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : d;
var json = new JsonSerializerOptions { WriteIndented = false };
const string data = "/usr/share/datasets/fashion-mnist";

try
{
    switch (args[0])
    {
        case "train":
        {
            var c = new Train.Config(S("model", ""), S("data", data), S("optimizer", "sgd"), D("lr", 0.1), I("batch", 256), D("seconds", 30),
                I("max-updates", int.MaxValue), I("threads", 1), I("seed", 42), D("eval-every", 2), I("eval-examples", 5120), D("damping", 150),
                D("fraction", 1), I("inverse-every", 20), D("kl-clip", 1e-3), D("momentum", 0.9), S("out", "run.json"), D("weight-decay", 1e-5),
                D("quadratic-fraction", 1), Precision(S("inverse-precision", "auto")));
            var r = Train.Run(c);
            File.WriteAllText(c.Out, r.ToJsonString(json));
            var ev = r["evals"]!.AsArray();
            Console.WriteLine($"{c.Optimizer} lr {c.Lr} batch {c.Batch}: {r["updates"]} updates in {(double)r["train_seconds"]!:F1} s, " +
                $"loss {(double)ev[0]!["loss"]!:F2} -> {(double)ev[^1]!["loss"]!:F2} ({r["stop"]}), others {(double)r["other_cores"]!:F2} cores, peak RSS {(double)r["peak_rss_mib"]!:F0} MiB");
            return 0;
        }
        case "step":
        {
            var r = Step.Run(S("model", ""), S("matmul", ""), S("data", data), I("batch", 256), I("threads", 1), I("steps", 30), I("warmup", 5), D("fraction", 0.125),
                D("weight-decay", 1e-5), S("precondition", "auto") switch
                {
                    "auto" => KfacPreconditioning.Auto, "dense" => KfacPreconditioning.Dense, "per-example" => KfacPreconditioning.PerExample,
                    var p => throw new ArgumentException($"--precondition {p}: expected auto, dense or per-example"),
                }, Precision(S("inverse-precision", "auto")));
            File.AppendAllText(S("out", "step.jsonl"), r.ToJsonString(json) + "\n");
            Console.WriteLine(r.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        case "profile":
        {
            var r = Profile.Run(S("model", ""), S("data", data), I("batch", 256), I("threads", 1), D("fraction", 0.125), D("weight-decay", 1e-5), I("runs", 30));
            File.WriteAllText(S("out", "profile.json"), r.ToJsonString(json));
            return 0;
        }
        case "plot":
            Plots.Save(S("out", "."), rest);
            return 0;
        case "curves":
            if (rest.Count != 1) { Console.Error.WriteLine("usage: onnx-kfac-ae-bench curves SPEC.json"); return 2; }
            Plots.FromSpec(rest[0]);
            return 0;
        default:
            Console.Error.WriteLine($"unknown command {args[0]}");
            return 2;
    }
}
catch (Exception e) when (e is OnnxKfac.Graph.OnnxKfacException or IOException or ArgumentException or FormatException or InvalidDataException)
{
    // Bad input (a missing model or data file, an unparsable option): one line that names it, exit 1.
    Console.Error.WriteLine($"onnx-kfac-ae-bench {args[0]}: {e.Message}");
    return 1;
}
