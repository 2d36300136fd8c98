namespace OnnxKfac.Cli.Common;

/// <summary>Checks, before any work, that an output file can be written where it was asked for.</summary>
internal static class OutputPaths
{
    /// <summary>
    /// The folder of <paramref name="path"/> exists (or is created) and accepts a file, and the
    /// path is no folder; else <paramref name="error"/>'s exception, whose message names the path.
    /// </summary>
    public static void CheckWritable(string path, Func<string, Exception?, Exception> error)
    {
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw error($"{path} is a folder; give a file name", null);
        string dir = Path.GetDirectoryName(full)!;
        string probe = Path.Combine(dir, $".onnx-kfac-probe-{Environment.ProcessId}");
        try
        {
            Directory.CreateDirectory(dir);
            using (File.Create(probe, 1, FileOptions.DeleteOnClose)) { }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw error($"{path}: cannot write there ({e.Message.TrimEnd('.')})", e);
        }
    }
}
