using Microsoft.ML.OnnxRuntime;

namespace OnnxKfac.Cli;

internal static class Program
{
    public static int Main(string[] args)
    {
        // ONNX Runtime's own log lines (e.g. a CUDA library it cannot load) would stand beside
        // the one error line the CLI prints; show them only with --verbose.
        if (!args.Contains("--verbose", StringComparer.Ordinal))
            OrtEnv.Instance().EnvLogLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL;
        return CliApp.Run(args, Console.Out, Console.Error, isTerminal: !Console.IsOutputRedirected);
    }
}
