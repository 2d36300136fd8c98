using System.Diagnostics;
using System.Globalization;
using System.Text;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Cli.Training;

/// <summary>
/// The per-update CSV log (<c>--log-csv PATH</c>, or <c>REPORT.steps.csv</c> beside <c>--report</c>):
/// one row per update (<c>train</c>, or <c>skipped</c>) and per validation, written as it
/// happens. Each row goes to the file in one write and is flushed, so a run that is killed
/// keeps every row it logged and never a half row (SIGTERM and Ctrl+C stop between updates).
/// A resumed run appends to the log of the run it continues.
/// </summary>
internal sealed class StepLog : ITrainingObserver, IDisposable
{
    public const string Header = "kind,step,epoch,loss,accuracy,lr,grad_norm,wall_seconds";

    private readonly FileStream _file;
    private readonly ITrainingObserver? _next;
    private readonly Func<long, double?> _rate;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly StringBuilder _line = new();

    /// <param name="path">The CSV file.</param>
    /// <param name="append">Continue an existing log (a resumed run); else start a new one.</param>
    /// <param name="rate">The learning rate of an update (null where the optimizer has none, K-FAC's quadratic rule).</param>
    /// <param name="next">The observer every event is passed on to (the display).</param>
    public StepLog(string path, bool append, Func<long, double?> rate, ITrainingObserver? next)
    {
        _rate = rate;
        _next = next;
        bool fresh = !append || !File.Exists(path) || new FileInfo(path).Length == 0;
        // No buffer of its own: every row is one write(2) of the whole line.
        _file = new FileStream(path, fresh ? FileMode.Create : FileMode.Append, FileAccess.Write, FileShare.Read, bufferSize: 0);
        if (fresh) Write(Header);
    }

    public void OnStep(in StepReport step)
    {
        long update = step.Skipped ? step.Step + 1 : step.Step;
        _line.Clear().Append(step.Skipped ? "skipped" : "train").Append(',').Append(update).Append(',').Append(step.Epoch + 1).Append(',')
            .Append(Number(step.Loss)).Append(",,").Append(step.Skipped ? "" : Number(_rate(update))).Append(',')
            .Append(Number(step.GradNorm)).Append(',').Append(Number(_clock.Elapsed.TotalSeconds));
        Write(_line.ToString());
        _next?.OnStep(step);
    }

    public void OnValidation(in ValidationReport v)
    {
        _line.Clear().Append("validation,").Append(v.Step).Append(',').Append(v.Epoch + 1).Append(',')
            .Append(Number(v.Metrics.Loss)).Append(',').Append(Number(v.Metrics.Accuracy)).Append(",,,").Append(Number(_clock.Elapsed.TotalSeconds));
        Write(_line.ToString());
        _next?.OnValidation(v);
    }

    public void OnEpoch(in EpochReport e) => _next?.OnEpoch(e);

    public void OnMessage(string message) => _next?.OnMessage(message);

    private static string Number(double? x) => x is { } v ? v.ToString("R", CultureInfo.InvariantCulture) : "";

    private void Write(string line)
    {
        _file.Write(Encoding.UTF8.GetBytes(line + "\n"));
        _file.Flush();
    }

    public void Dispose() => _file.Dispose();
}
