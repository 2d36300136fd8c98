using System.Globalization;
using OnnxKfac.Cli.Common;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;
using OnnxKfac.Toolkit.Data;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Cli.Training;

/// <summary>The embedded default: tools/default, copied next to the CLI as default/.</summary>
internal static class DefaultJob
{
    public static string Dir => Path.Combine(AppContext.BaseDirectory, "default");
    public static string Model => Path.Combine(Dir, "fashion_mlp.onnx");
    public static string TrainImages => Path.Combine(Dir, "train-images-idx3-ubyte.gz");
    public static string TrainLabels => Path.Combine(Dir, "train-labels-idx1-ubyte.gz");
    public static string TestImages => Path.Combine(Dir, "test-images-idx3-ubyte.gz");
    public static string TestLabels => Path.Combine(Dir, "test-labels-idx1-ubyte.gz");

    public const string Origin = "the embedded default";

    /// <summary>Fills the settings of the default job that the user did not set.</summary>
    public static void Apply(Config cfg)
    {
        foreach (var f in new[] { Model, TrainImages, TrainLabels, TestImages, TestLabels })
            if (!File.Exists(f)) throw new OnnxKfacException($"the embedded default is missing: {f} (rebuild the CLI: tools/onnx-kfac copies tools/default next to it)");
        void Default(string key, object value)
        {
            if (!cfg.Has(key)) cfg.Set(key, value, Origin);
        }
        Default("model", Model);
        Default("train", TrainImages);
        Default("train_labels", TrainLabels);
        Default("test", TestImages);
        Default("test_labels", TestLabels);
        Default("loss", "cross-entropy");
        Default("scale", 255.0);
        if (!cfg.Has("val")) Default("val_split", 0.1);
    }
}

/// <summary>
/// The parts shared by <c>train</c> and <c>eval</c>: the loss from the settings, a training
/// session over the model, and the data options that fit its input and output.
/// </summary>
internal sealed class ModelSetup : IDisposable
{
    private ModelSetup(string path, TrainingSession session, LossOptions loss, ManifestTensor[] inputs, long[][] exampleShapes, int? classes)
    {
        Path = path; Session = session; Loss = loss; Inputs = inputs; InputShapes = exampleShapes; Classes = classes;
    }

    public string Path { get; }
    public TrainingSession Session { get; }
    public LossOptions Loss { get; }

    /// <summary>The model's data inputs, and their per-example shapes in the same order.</summary>
    public ManifestTensor[] Inputs { get; }
    public long[][] InputShapes { get; }

    /// <summary>The class count (cross-entropy with a static class axis), else null.</summary>
    public int? Classes { get; }

    public bool Classification => Loss.Function.ClassIndexTargets;

    public static LossOptions ReadLoss(Config cfg)
    {
        LossOptions loss;
        try { loss = new LossOptions(LossOptions.ParseKind(cfg.String("loss", "cross-entropy")!)) { Output = cfg.String("output") }; }
        catch (OnnxKfacException e) { throw cfg.Error("loss", e.Message, e); }
        if (cfg.String("reduction", "mean") is { } red)
            loss = loss with
            {
                Reduction = red.Trim().ToLowerInvariant() switch
                {
                    "mean" => LossReduction.Mean,
                    "sum" => LossReduction.Sum,
                    _ => throw cfg.Error("reduction", $"unknown reduction '{red}'; expected mean or sum"),
                },
            };
        if (cfg.Long("ignore_index") is { } ii)
        {
            if (!loss.Function.HasClassOptions) throw cfg.Error("ignore_index", $"applies to cross-entropy only, not {loss.Function.Name}");
            loss = loss with { IgnoreIndex = ii };
        }
        if (cfg.Double("label_smoothing") is { } ls) loss = loss with { LabelSmoothing = ls };
        if (cfg.String("class_weights") is { } cw)
        {
            try { loss = loss with { ClassWeights = LossArguments.ParseWeights(cw) }; }
            catch (OnnxKfacException e) { throw cfg.Error("class_weights", e.Message.Replace("--class-weights: ", ""), e); }
        }
        try { loss.Validate(); }
        catch (OnnxKfacException e) { throw cfg.Error("loss", e.Message, e); }
        return loss;
    }

    /// <summary>
    /// Loads the model, builds its training graph with what <paramref name="configure"/> (the
    /// optimizer's requirements) adds, and opens a session. Without it the graph has no K-FAC
    /// outputs (evaluation, SGD, AdamW).
    /// </summary>
    /// <param name="spinning">ONNX Runtime's worker threads spin between ops (<see cref="TrainingSessionOptions.IntraOpSpinning"/>; off for K-FAC).</param>
    public static ModelSetup Open(Config cfg, string modelPath, ulong seed, Func<TrainingGraphOptions, TrainingGraphOptions>? configure = null,
        bool spinning = true)
    {
        var loss = ReadLoss(cfg);
        var model = OnnxModelIO.Load(modelPath);
        LossChecks.CheckClassWeights(model, loss);
        var shapes = ExampleShapes(cfg);
        Device device;
        try { device = Device.Parse(cfg.String("device", "cpu")!); }
        catch (OnnxKfacException e) { throw cfg.Error("device", e.Message, e); }
        int? threads = cfg.Int("threads");
        if (threads is < 0) throw cfg.Error("threads", $"{threads}: must be 0 (ONNX Runtime's default) or more");
        var graph = new TrainingGraphOptions(loss) { LayerTaps = false, Trainable = Globs(cfg, "trainable"), Frozen = Globs(cfg, "frozen"), Untie = Globs(cfg, "untie") };
        if (configure is not null) graph = configure(graph);
        var session = TrainingSession.Create(model, graph,
            new TrainingSessionOptions { Device = device, Threads = threads is 0 ? null : threads, NoiseSeed = seed, IntraOpSpinning = spinning }, shapes);
        try
        {
            var inputs = session.DataInputs.ToArray();
            var examples = new long[inputs.Length][];
            for (int k = 0; k < inputs.Length; k++)
            {
                var input = inputs[k];
                if (shapes.TryGetValue(input.Name, out var given)) { examples[k] = given; continue; }
                var shape = input.Shape ?? throw new OnnxKfacException(
                    $"{modelPath}: input '{input.Name}' has no declared shape; give its per-example shape with --input-shape {input.Name}=d1,d2...");
                examples[k] = shape.Length == 0 ? [] : shape[1..];
                if (examples[k].Any(d => d < 0))
                    throw new OnnxKfacException($"{modelPath}: input '{input.Name}' {Shapes.Format(shape)} has dynamic dimensions besides the batch; give its per-example shape with --input-shape {input.Name}=d1,d2...");
            }
            int? classes = null;
            if (loss.Function.ClassIndexTargets)
            {
                var output = session.Manifest.Outputs.First(o => o.Name == session.Manifest.Loss.Output);
                if (output.Shape is { Length: >= 2 } s && s[1] > 0) classes = checked((int)s[1]);
            }
            return new ModelSetup(modelPath, session, loss, inputs, examples, classes)
            {
                Notes = [.. Ties.PlanFor(model, graph.Untie).Describe(), .. session.Manifest.Warnings.Select(w => "warning: " + w)],
            };
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>What training does with the model's ties, and warnings for globs that take part of a module: one line each.</summary>
    public IReadOnlyList<string> Notes { get; private init; } = [];

    public static string[] Globs(Config cfg, string key)
    {
        var globs = cfg.List(key);
        foreach (var g in globs)
            if (string.IsNullOrWhiteSpace(g)) throw cfg.Error(key, "empty pattern");
        return globs;
    }

    /// <summary><c>--input-shape NAME=d1,d2</c>: per-example shapes of inputs with dynamic non-batch dimensions.</summary>
    public static Dictionary<string, long[]> ExampleShapes(Config cfg)
    {
        var result = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var spec in cfg.List("input_shape"))
        {
            int eq = spec.IndexOf('=');
            string name = eq < 0 ? "" : spec[..eq].Trim();
            var dims = eq < 0 ? [] : spec[(eq + 1)..].Split(',', StringSplitOptions.TrimEntries);
            var shape = new long[dims.Length];
            bool ok = name.Length > 0 && dims.Length > 0;
            for (int k = 0; ok && k < dims.Length; k++)
                ok = long.TryParse(dims[k], NumberStyles.None, CultureInfo.InvariantCulture, out shape[k]) && shape[k] > 0;
            if (!ok) throw cfg.Error("input_shape", $"'{spec}' should be NAME=d1,d2,... with positive sizes and no batch dimension, e.g. input=1,28,28");
            result[name] = shape;
        }
        return result;
    }

    /// <summary>Data options that make the readers check the data against the model (the feature shape: with one input).</summary>
    public DataOptions DataOptions => new()
    {
        ClassCount = Classes,
        ExpectedFeatureShape = Inputs.Length != 1 || InputShapes[0].Length == 0 ? null : InputShapes[0],
        LabelKind = Classification ? LabelKind.ClassIndex : LabelKind.Regression,
    };

    /// <summary>Opens a data set for this model; a shape that does not fit names the model input.</summary>
    public Dataset OpenData(Config cfg, string key, string labelsKey)
    {
        try { return DataSources.Open(cfg, key, labelsKey, DataOptions, Inputs.Select(i => i.Name).ToArray()); }
        catch (OnnxKfacException e) when (e.Message.Contains("but the expected feature shape is", StringComparison.Ordinal))
        {
            throw new OnnxKfacException(e.Message.Replace("but the expected feature shape is",
                $"but model input '{Inputs[0].Name}' takes", StringComparison.Ordinal) + " per example", e);
        }
    }

    public long ParameterValues => Session.Parameters.Sum(p => (long)p.Value.Length);

    public void Dispose() => Session.Dispose();
}
