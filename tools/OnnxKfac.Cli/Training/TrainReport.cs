using System.Text.Json.Nodes;
using OnnxKfac.Cli.Common;
using OnnxKfac.Graph.Model;

namespace OnnxKfac.Cli.Training;

internal sealed record DataSummary(string Source, int Examples);

/// <summary>The JSON report of a train or eval run (snake_case keys; every key always present).</summary>
internal sealed record TrainReport
{
    public int Version { get; init; } = 1;
    public required string Command { get; init; }
    public required string Model { get; init; }
    public bool DefaultJob { get; init; }
    public required JsonNode? Config { get; init; }
    public required string StartedAt { get; init; }
    public required Dictionary<string, DataSummary?> Data { get; init; }
    public NormalizationSummary? Normalization { get; init; }
    public int Parameters { get; init; }
    public long ParameterValues { get; init; }
    public long? ResumedFromStep { get; init; }
    public double WallSeconds { get; init; }
    public double TrainSeconds { get; init; }
    public long Steps { get; init; }
    public long SkippedSteps { get; init; }
    public int Epochs { get; init; }
    public double StepsPerSecond { get; init; }
    public double ExamplesPerSecond { get; init; }
    public string StopReason { get; init; } = "";
    public string? Error { get; init; }
    public IReadOnlyList<StepRecord> StepLosses { get; init; } = [];
    public IReadOnlyList<EpochRecord> EpochMetrics { get; init; } = [];
    public IReadOnlyList<ValidationRecord> Validations { get; init; } = [];
    public IReadOnlyList<string> Messages { get; init; } = [];

    /// <summary>Every metric a gate can name (null: not measured in this run).</summary>
    public required SortedDictionary<string, double?> Metrics { get; init; }

    /// <summary>Classifiers: the final validation's and the test's (after training) confusion matrices, rows true class, columns predicted.</summary>
    public Dictionary<string, long[][]?> ConfusionMatrices { get; init; } = [];
    public IReadOnlyList<GateResult> Gates { get; init; } = [];
    public bool GatesPassed { get; init; } = true;
    public Dictionary<string, string?> Outputs { get; init; } = [];

    public void Write(string path) => WriteJson(this, path);

    /// <summary>Writes a report as JSON, atomically, creating its folder (train's and eval's reports).</summary>
    public static void WriteJson<T>(T report, string path)
    {
        CreateParent(path);
        Commands.PrepareCommand.Write(() => AtomicFile.WriteAllText(path, Json.Serialize(report) + "\n"), path);
    }

    /// <summary>Creates the folder a file is written into (report, plot, checkpoint, export).</summary>
    public static void CreateParent(string path)
    {
        string? dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is null || Directory.Exists(dir)) return;
        Commands.PrepareCommand.Write(() => Directory.CreateDirectory(dir), dir);
    }
}

/// <summary>What <c>eval</c> writes: the run's identity, data and metrics, and no training keys.</summary>
internal sealed record EvalReport
{
    public int Version { get; init; } = 1;
    public string Command { get; init; } = "eval";
    public required string Model { get; init; }
    public bool DefaultJob { get; init; }
    public required JsonNode? Config { get; init; }
    public required string StartedAt { get; init; }
    public required Dictionary<string, DataSummary?> Data { get; init; }
    public NormalizationSummary? Normalization { get; init; }
    public int Parameters { get; init; }
    public long ParameterValues { get; init; }
    public double WallSeconds { get; init; }
    public double EvalSeconds { get; init; }
    public string? Error { get; init; }
    public required SortedDictionary<string, double?> Metrics { get; init; }

    /// <summary>Classifiers: counts by true class (rows) and predicted class (columns); else null.</summary>
    public long[][]? ConfusionMatrix { get; init; }
    public IReadOnlyList<GateResult> Gates { get; init; } = [];
    public bool GatesPassed { get; init; } = true;
    public Dictionary<string, string?> Outputs { get; init; } = [];

    public void Write(string path) => TrainReport.WriteJson(this, path);
}
