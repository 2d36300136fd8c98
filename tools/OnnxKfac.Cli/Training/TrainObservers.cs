using System.Diagnostics;
using System.Globalization;
using OnnxKfac.Toolkit.Runtime;
using Spectre.Console;

namespace OnnxKfac.Cli.Training;

internal readonly record struct StepRecord(long Step, int Epoch, double Loss, bool Skipped);

/// <summary>A validation pass; <paramref name="TrainSeconds"/>: training seconds up to the update it follows, earlier validation passes excluded.</summary>
internal readonly record struct ValidationRecord(long Step, int Epoch, double Loss, double? Accuracy, bool Improved, double TrainSeconds);

internal readonly record struct EpochRecord(int Epoch, double TrainLoss, double? ValLoss, double? ValAccuracy);

/// <summary>What the run looks like: its planned length, for progress and ETA.</summary>
internal sealed record RunPlan(long TotalSteps, int? Epochs, int BatchSize, long StartStep, bool ValidateEveryStep, long EpochExamples);

/// <summary>Counts the examples trained on from the batches reported (per epoch, first to last batch seen).</summary>
internal sealed class ExampleCounter
{
    private readonly SortedDictionary<int, (int First, int Last)> _batches = [];

    public void Add(in StepReport step) =>
        _batches[step.Epoch] = _batches.TryGetValue(step.Epoch, out var b) ? (b.First, step.BatchInEpoch) : (step.BatchInEpoch, step.BatchInEpoch);

    public long Total(int batchSize, long epochExamples) =>
        _batches.Values.Sum(b => Math.Min((long)b.Last * batchSize, epochExamples) - (long)(b.First - 1) * batchSize);
}

/// <summary>Records every event of a run (for the report and the plot) and forwards it to a display.
/// <paramref name="clock"/> runs while training runs; validations are timed on it without the validation passes.</summary>
internal sealed class RunRecorder(ITrainingObserver? display, Stopwatch clock) : ITrainingObserver
{
    private TimeSpan _lastStep, _validating;

    public List<StepRecord> Steps { get; } = [];
    public List<ValidationRecord> Validations { get; } = [];
    public List<EpochRecord> Epochs { get; } = [];
    public List<string> Messages { get; } = [];
    public ExampleCounter Examples { get; } = new();

    public void OnStep(in StepReport step)
    {
        Steps.Add(new StepRecord(step.Step, step.Epoch + 1, step.Loss, step.Skipped));   // epochs count from 1, as printed
        Examples.Add(step);
        _lastStep = clock.Elapsed;
        display?.OnStep(step);
    }

    public void OnValidation(in ValidationReport v)
    {
        // The pass ran between the last update and now: its time is left out of this and later records.
        var now = clock.Elapsed;
        Validations.Add(new ValidationRecord(v.Step, v.Epoch + 1, v.Metrics.Loss, v.Metrics.Accuracy, v.Improved, (_lastStep - _validating).TotalSeconds));
        _validating += now - _lastStep;
        _lastStep = now;
        display?.OnValidation(v);
    }

    public void OnEpoch(in EpochReport e)
    {
        Epochs.Add(new EpochRecord(e.Epoch + 1, e.MeanTrainLoss, e.Validation?.Loss, e.Validation?.Accuracy));
        display?.OnEpoch(e);
    }

    public void OnMessage(string message)
    {
        Messages.Add(message);
        display?.OnMessage(message);
    }
}

/// <summary>Shared formatting of progress values.</summary>
internal static class ProgressText
{
    public static string Loss(double x) => double.IsFinite(x) ? x.ToString("F4", CultureInfo.InvariantCulture) : x.ToString(CultureInfo.InvariantCulture);

    public static string Percent(double? x) => x is { } v ? (100 * v).ToString("F2", CultureInfo.InvariantCulture) + "%" : "n/a";

    public static string Rate(double x) => x.ToString("N0", CultureInfo.InvariantCulture);

    /// <summary>"0.7 s", "42 s", "3:05"...</summary>
    public static string Seconds(TimeSpan t) => t.TotalSeconds < 10 ? t.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture) + " s"
        : t.TotalSeconds < 60 ? t.TotalSeconds.ToString("F0", CultureInfo.InvariantCulture) + " s" : Duration(t);

    public static string Duration(TimeSpan t) => t.TotalHours >= 1 ? t.ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture) : t.ToString(@"m\:ss", CultureInfo.InvariantCulture);

    public static string Epoch(int epoch, int? epochs) => epochs is { } n ? $"{epoch + 1}/{n}" : $"{epoch + 1}";

    public static string Validation(double loss, double? accuracy, bool improved) =>
        $"val loss {Loss(loss)}" + (accuracy is { } a ? $", val accuracy {Percent(a)}" : "") + (improved ? " (best so far)" : "");
}

/// <summary>Plain log lines for CI logs and pipes: every N updates, and at each validation and epoch end.</summary>
internal sealed class PlainLog(TextWriter output, RunPlan plan, int every) : ITrainingObserver
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly ExampleCounter _examples = new();
    private double _sum, _lastSeconds;
    private long _lastExamples;
    private int _count;

    public void OnStep(in StepReport step)
    {
        _examples.Add(step);
        if (step.Skipped)
        {
            output.WriteLine($"step {step.Step + 1}: skipped (loss {step.Loss}) in epoch {ProgressText.Epoch(step.Epoch, plan.Epochs)}");
            return;
        }
        _sum += step.Loss;
        _count++;
        if (step.Step % every != 0 && step.Step != plan.TotalSteps) return;
        long done = step.Step - plan.StartStep;
        double now = _clock.Elapsed.TotalSeconds;
        long examples = _examples.Total(plan.BatchSize, plan.EpochExamples);
        double rate = now > _lastSeconds ? (examples - _lastExamples) / (now - _lastSeconds) : 0;
        var eta = done > 0 ? TimeSpan.FromSeconds(now / done * Math.Max(0, plan.TotalSteps - step.Step)) : TimeSpan.Zero;
        output.WriteLine(
            $"step {step.Step}/{plan.TotalSteps}  epoch {ProgressText.Epoch(step.Epoch, plan.Epochs)}  loss {ProgressText.Loss(step.Loss)}  " +
            $"mean {ProgressText.Loss(_sum / _count)}  {ProgressText.Rate(rate)} ex/s  eta {ProgressText.Duration(eta)}");
        _sum = 0;
        _count = 0;
        _lastSeconds = now;
        _lastExamples = examples;
    }

    public void OnValidation(in ValidationReport v)
    {
        // End-of-epoch validations print with the epoch line.
        if (plan.ValidateEveryStep)
            output.WriteLine($"validation at step {v.Step}: {ProgressText.Validation(v.Metrics.Loss, v.Metrics.Accuracy, v.Improved)}");
    }

    public void OnEpoch(in EpochReport e)
    {
        string val = e.Validation is { } m && !plan.ValidateEveryStep
            ? ", " + ProgressText.Validation(m.Loss, m.Accuracy, improved: false)
            : "";
        output.WriteLine($"epoch {ProgressText.Epoch(e.Epoch, plan.Epochs)} done: mean train loss {ProgressText.Loss(e.MeanTrainLoss)}{val}");
    }

    public void OnMessage(string message) => output.WriteLine(message);
}

/// <summary>A Spectre.Console progress bar with loss, throughput and ETA, for terminals.</summary>
internal sealed class SpectreProgress(IAnsiConsole console, RunPlan plan) : ITrainingObserver
{
    private ProgressTask? _task;
    private readonly Stopwatch _clock = new();
    private readonly ExampleCounter _examples = new();

    /// <summary>Runs <paramref name="run"/> while the progress bar is shown.</summary>
    public T Run<T>(Func<T> run)
    {
        T result = default!;
        console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                _task = ctx.AddTask("training", autoStart: true, maxValue: Math.Max(1, plan.TotalSteps));
                _task.Value = plan.StartStep;
                _clock.Start();
                try { result = run(); }
                finally { _task.StopTask(); }
            });
        return result;
    }

    public void OnStep(in StepReport step)
    {
        if (_task is null) return;
        _examples.Add(step);
        if (step.Skipped)
        {
            console.MarkupLine($"[yellow]step {step.Step + 1}: skipped (loss {Markup.Escape(step.Loss.ToString(CultureInfo.InvariantCulture))})[/]");
            return;
        }
        _task.Value = Math.Min(step.Step, _task.MaxValue);
        double seconds = _clock.Elapsed.TotalSeconds;
        double rate = seconds > 0 ? _examples.Total(plan.BatchSize, plan.EpochExamples) / seconds : 0;
        _task.Description = $"epoch {ProgressText.Epoch(step.Epoch, plan.Epochs)}  loss {ProgressText.Loss(step.Loss)}  {ProgressText.Rate(rate)} ex/s";
    }

    public void OnValidation(in ValidationReport v)
    {
        if (plan.ValidateEveryStep)
            console.MarkupLine(Markup.Escape($"validation at step {v.Step}: {ProgressText.Validation(v.Metrics.Loss, v.Metrics.Accuracy, v.Improved)}"));
    }

    public void OnEpoch(in EpochReport e)
    {
        string val = e.Validation is { } m && !plan.ValidateEveryStep ? ", " + ProgressText.Validation(m.Loss, m.Accuracy, improved: false) : "";
        console.MarkupLine(Markup.Escape($"epoch {ProgressText.Epoch(e.Epoch, plan.Epochs)} done: mean train loss {ProgressText.Loss(e.MeanTrainLoss)}{val}"));
    }

    public void OnMessage(string message) => console.MarkupLine(Markup.Escape(message));
}
