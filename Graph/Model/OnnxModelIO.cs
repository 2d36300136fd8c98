using Google.Protobuf;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Model;

/// <summary>Options for writing a model.</summary>
public sealed record SaveOptions
{
    /// <summary>
    /// Tensors at least this many bytes go to an external data file when
    /// <see cref="ExternalData"/> is on. Default 1 KiB, as ONNX's own converter does.
    /// </summary>
    public long ExternalThresholdBytes { get; init; } = 1024;

    /// <summary>
    /// Write large tensors to <c>{model file}.data</c> beside the model. Null (default):
    /// only when the model would not fit in one protobuf message (about 2 GB).
    /// </summary>
    public bool? ExternalData { get; init; }
}

/// <summary>
/// Loads and saves ONNX <see cref="ModelProto"/>s. Unknown fields survive a round trip.
/// External data files must sit in the model's folder or below it: absolute locations,
/// <c>..</c> and symbolic links are refused (CVE-2024-27318).
/// </summary>
public static class OnnxModelIO
{
    private const long ProtobufLimit = int.MaxValue - 64L * 1024 * 1024;

    public static ModelProto Load(string path)
    {
        if (!File.Exists(path)) throw new OnnxKfacException($"{path}: no such file");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (IOException e) { throw new OnnxKfacException($"{path}: cannot read: {e.Message}", e); }
        catch (UnauthorizedAccessException e) { throw new OnnxKfacException($"{path}: cannot read: {e.Message}", e); }
        var model = Parse(bytes, path);
        LoadExternalData(model, Path.GetDirectoryName(Path.GetFullPath(path))!, path);
        return model;
    }

    /// <summary>Parses and validates model bytes; <paramref name="source"/> names them in errors.</summary>
    public static ModelProto Parse(ReadOnlySpan<byte> bytes, string source)
    {
        if (bytes.Length == 0) throw new OnnxKfacException($"{source}: empty file, not an ONNX model");
        ModelProto model;
        try
        {
            model = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OnnxKfacException($"{source}: not an ONNX model (truncated or corrupt protobuf: {e.Message})", e);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or OverflowException)
        {
            throw new OnnxKfacException($"{source}: not an ONNX model (undecodable protobuf: {e.Message})", e);
        }
        ModelValidator.Validate(model, source);
        return model;
    }

    /// <summary>Writes the model atomically (temporary file, flush, rename).</summary>
    public static void Save(ModelProto model, string path, SaveOptions? options = null)
    {
        options ??= new SaveOptions();
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        long size = model.CalculateSize();
        bool external = options.ExternalData ?? size > ProtobufLimit;
        ModelProto toWrite = model;
        string? dataFile = null;
        if (external)
        {
            toWrite = model.Clone();
            dataFile = Path.GetFileName(full) + ".data";
            WriteExternal(toWrite, Path.Combine(dir, dataFile), dataFile, options.ExternalThresholdBytes);
        }
        AtomicFile.Write(full, stream => toWrite.WriteTo(stream));
    }

    private static void WriteExternal(ModelProto model, string dataPath, string location, long threshold)
    {
        AtomicFile.Write(dataPath, stream =>
        {
            long offset = 0;
            foreach (var t in AllTensors(model))
            {
                if (!t.HasRawData || t.RawData.Length < threshold) continue;
                // Align each tensor to 4 KiB as ONNX's converter does (mmap-friendly).
                long pad = (4096 - offset % 4096) % 4096;
                if (pad > 0) { stream.Write(new byte[pad]); offset += pad; }
                t.RawData.WriteTo(stream);
                long length = t.RawData.Length;
                t.ClearRawData();
                t.ExternalData.Clear();
                t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
                t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString() });
                t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString() });
                t.DataLocation = TensorProto.Types.DataLocation.External;
                offset += length;
            }
        });
    }

    /// <summary>Every tensor held by the model: initializers and tensor attributes, subgraphs included.</summary>
    internal static IEnumerable<TensorProto> AllTensors(ModelProto model)
    {
        if (model.Graph is null) yield break;
        foreach (var t in GraphTensors(model.Graph)) yield return t;
        foreach (var f in model.Functions)
            foreach (var n in f.Node)
                foreach (var t in NodeTensors(n)) yield return t;
    }

    private static IEnumerable<TensorProto> GraphTensors(GraphProto g)
    {
        foreach (var t in g.Initializer) yield return t;
        foreach (var s in g.SparseInitializer)
        {
            if (s.Values is not null) yield return s.Values;
            if (s.Indices is not null) yield return s.Indices;
        }
        foreach (var n in g.Node)
            foreach (var t in NodeTensors(n)) yield return t;
    }

    private static IEnumerable<TensorProto> NodeTensors(NodeProto n)
    {
        foreach (var a in n.Attribute)
        {
            if (a.T is not null) yield return a.T;
            foreach (var t in a.Tensors) yield return t;
            if (a.G is not null) foreach (var t in GraphTensors(a.G)) yield return t;
            foreach (var g in a.Graphs) foreach (var t in GraphTensors(g)) yield return t;
        }
    }

    private static void LoadExternalData(ModelProto model, string baseDir, string source)
    {
        var open = new Dictionary<string, FileStream>(StringComparer.Ordinal);
        try
        {
            foreach (var t in AllTensors(model))
            {
                if (t.DataLocation != TensorProto.Types.DataLocation.External) continue;
                string? location = null; long offset = 0; long length = -1;
                foreach (var e in t.ExternalData)
                {
                    switch (e.Key)
                    {
                        case "location": location = e.Value; break;
                        case "offset": offset = ParseLong(e.Value, t, "offset", source); break;
                        case "length": length = ParseLong(e.Value, t, "length", source); break;
                    }
                }
                if (string.IsNullOrEmpty(location))
                    throw new OnnxKfacException($"{source}: tensor '{t.Name}' is external but names no location");
                string file = ResolveExternal(baseDir, location, t.Name, source);
                if (!open.TryGetValue(file, out var fs))
                {
                    try { fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read); }
                    catch (IOException e) { throw new OnnxKfacException($"{source}: external data '{location}' of tensor '{t.Name}': {e.Message}", e); }
                    open[file] = fs;
                }
                if (length < 0) length = fs.Length - offset;
                if (offset < 0 || offset + length > fs.Length)
                    throw new OnnxKfacException($"{source}: tensor '{t.Name}' reads bytes {offset}..{offset + length} of '{location}', which holds {fs.Length}");
                var buf = new byte[length];
                fs.Seek(offset, SeekOrigin.Begin);
                fs.ReadExactly(buf);
                t.RawData = ByteString.CopyFrom(buf);
                t.ExternalData.Clear();
                t.ClearDataLocation();
            }
        }
        finally
        {
            foreach (var fs in open.Values) fs.Dispose();
        }
    }

    private static long ParseLong(string s, TensorProto t, string key, string source) =>
        long.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long v)
            ? v
            : throw new OnnxKfacException($"{source}: tensor '{t.Name}' has external {key} '{s}', not a non-negative integer");

    /// <summary>
    /// Resolves an external-data location against the model folder and refuses anything
    /// that leaves it: absolute paths, <c>..</c> segments, and symbolic links on the way.
    /// </summary>
    internal static string ResolveExternal(string baseDir, string location, string tensor, string source)
    {
        string refuse(string why) => throw new OnnxKfacException(
            $"{source}: external data location '{location}' of tensor '{tensor}' is refused: {why} (data must sit in the model's folder)");
        if (Path.IsPathRooted(location) || location.Contains(':')) refuse("it is an absolute path");
        var parts = location.Split('/', '\\');
        if (parts.Any(p => p == "..")) refuse("it contains '..'");
        string root = Path.GetFullPath(baseDir);
        string current = root;
        foreach (var part in parts.Where(p => p.Length > 0 && p != "."))
        {
            current = Path.Combine(current, part);
            var info = new FileInfo(current);
            if (info.Exists && info.LinkTarget is not null) refuse("it goes through a symbolic link");
            var dinfo = new DirectoryInfo(current);
            if (dinfo.Exists && dinfo.LinkTarget is not null) refuse("it goes through a symbolic link");
        }
        string full = Path.GetFullPath(current);
        if (!full.StartsWith(root.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            refuse("it resolves outside the model's folder");
        if (!File.Exists(full)) throw new OnnxKfacException($"{source}: external data file '{location}' of tensor '{tensor}' does not exist");
        return full;
    }
}

/// <summary>Writes a file atomically: temporary file in the same folder, flush to disk, rename, flush the folder.</summary>
public static partial class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string tmp = full + ".tmp-" + Environment.ProcessId;
        try
        {
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
        SyncFolder(Path.GetDirectoryName(full)!);
    }

    /// <summary>
    /// Makes the rename durable. On Linux and macOS the rename lives in the folder's entries,
    /// which reach the disk only when the folder itself is fsynced, as SQLite, PostgreSQL and git
    /// do; without it a power cut right after the rename can bring back the old file, or none.
    /// Windows has no folder handle to flush (NTFS journals the rename). No test can see this:
    /// the page cache outlives a killed process (the kill -9 test passes either way), and only a
    /// power cut or a kernel crash loses an unsynced folder entry.
    /// </summary>
    private static void SyncFolder(string folder)
    {
        if (OperatingSystem.IsWindows()) return;
        int fd = Open(folder, 0 /* O_RDONLY */);
        if (fd < 0) return; // a folder we may write into but not open: nothing more we can do
        try
        {
            // EINVAL: the file system cannot sync folders (some network and FUSE mounts); anything else is an I/O error.
            if (Fsync(fd) != 0 && System.Runtime.InteropServices.Marshal.GetLastPInvokeError() is var errno && errno != 22)
                throw new IOException($"{folder}: fsync of the folder failed (errno {errno})");
        }
        finally { _ = Close(fd); }
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "open", StringMarshalling = System.Runtime.InteropServices.StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    public static void WriteAllText(string path, string text) =>
        Write(path, s => { using var w = new StreamWriter(s, leaveOpen: true); w.Write(text); });

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        byte[] copy = bytes.ToArray();
        Write(path, s => s.Write(copy));
    }
}
