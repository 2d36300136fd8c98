using System.Security.Cryptography;
using System.Text;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Model;
using OnnxKfac.Toolkit.Optim;

namespace OnnxKfac.Toolkit.Checkpoints;

/// <summary>
/// Everything a run needs to continue exactly where it stopped: weights, optimizer state,
/// update count, the data loader's position and RNG, the Fisher noise RNG, the trainer's
/// own counters and the resolved configuration. One binary file, written atomically
/// (temporary file, fsync, rename, fsync of the folder: see <see cref="AtomicFile"/>): a crash
/// at any moment leaves the previous checkpoint.
/// </summary>
public sealed class Checkpoint
{
    private static readonly byte[] Magic = "OKFCKPT1"u8.ToArray();
    private const int Version = 1;

    /// <summary>Identifies the model: a hash over parameter names, shapes and the graph's nodes.</summary>
    public required string ModelFingerprint { get; init; }

    public required IReadOnlyList<Parameter> Parameters { get; init; }

    public OptimizerState? Optimizer { get; init; }

    /// <summary>Named integers: update count, epoch, loader position, counters.</summary>
    public IDictionary<string, long> Longs { get; init; } = new SortedDictionary<string, long>(StringComparer.Ordinal);

    /// <summary>Named reals: best validation metric and the like.</summary>
    public IDictionary<string, double> Doubles { get; init; } = new SortedDictionary<string, double>(StringComparer.Ordinal);

    /// <summary>Named RNG states and other word arrays.</summary>
    public IDictionary<string, ulong[]> Words { get; init; } = new SortedDictionary<string, ulong[]>(StringComparer.Ordinal);

    /// <summary>Named extra float tensors (e.g. the best weights seen so far).</summary>
    public IDictionary<string, float[]> Tensors { get; init; } = new SortedDictionary<string, float[]>(StringComparer.Ordinal);

    /// <summary>The resolved configuration of the run that wrote it (JSON), for reports.</summary>
    public string Config { get; init; } = "";

    public static string Fingerprint(Graph.Proto.ModelProto model, IEnumerable<Parameter> parameters)
    {
        var sb = new StringBuilder();
        foreach (var p in parameters) sb.Append(p.Name).Append('[').Append(string.Join(",", p.Shape)).Append("];");
        foreach (var n in model.Graph.Node) sb.Append(n.OpType).Append(':').Append(string.Join(",", n.Input)).Append("->").Append(string.Join(",", n.Output)).Append(';');
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
    }

    public void Save(string path) => Save(path, null);

    /// <summary>Save with a stream wrapper (tests use it to simulate a full disk).</summary>
    internal void Save(string path, Func<Stream, Stream>? wrap)
    {
        AtomicFile.Write(path, raw =>
        {
            var stream = wrap is null ? raw : wrap(raw); // the wrapper leaves raw open
            using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
            w.Write(Magic);
            w.Write(Version);
            w.Write(ModelFingerprint);
            w.Write(Config);
            w.Write(Parameters.Count);
            foreach (var p in Parameters)
            {
                w.Write(p.Name);
                w.Write(p.Shape.Length);
                foreach (long d in p.Shape) w.Write(d);
                w.Write(p.Value.Length);
                w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(p.Value.AsSpan()));
            }
            w.Write(Longs.Count);
            foreach (var (k, v) in Longs) { w.Write(k); w.Write(v); }
            w.Write(Doubles.Count);
            foreach (var (k, v) in Doubles) { w.Write(k); w.Write(v); }
            w.Write(Words.Count);
            foreach (var (k, v) in Words) { w.Write(k); w.Write(v.Length); foreach (var x in v) w.Write(x); }
            w.Write(Tensors.Count);
            foreach (var (k, v) in Tensors)
            {
                w.Write(k);
                w.Write(v.Length);
                w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()));
            }
            w.Write(Optimizer is not null);
            Optimizer?.Write(w);
            w.Write(Magic); // trailer: a torn file never parses
            w.Flush();
            stream.Flush();
        });
    }

    public static Checkpoint Load(string path)
    {
        if (!File.Exists(path)) throw new OnnxKfacException($"{path}: no such checkpoint");
        try
        {
            using var fs = File.OpenRead(path);
            using var r = new BinaryReader(fs, Encoding.UTF8);
            if (!r.ReadBytes(Magic.Length).AsSpan().SequenceEqual(Magic)) throw new OnnxKfacException($"{path}: not an onnx-kfac checkpoint");
            int version = r.ReadInt32();
            if (version != Version) throw new OnnxKfacException($"{path}: checkpoint version {version}, this build reads {Version}");
            string fingerprint = r.ReadString();
            string config = r.ReadString();
            int count = r.ReadInt32();
            var parameters = new List<Parameter>(count);
            for (int k = 0; k < count; k++)
            {
                string name = r.ReadString();
                var shape = new long[r.ReadInt32()];
                for (int d = 0; d < shape.Length; d++) shape[d] = r.ReadInt64();
                var p = Parameter.Create(name, shape);
                int n = r.ReadInt32();
                if (n != p.Value.Length) throw new OnnxKfacException($"{path}: parameter '{name}' holds {n} values for shape [{string.Join(",", shape)}]");
                r.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(p.Value.AsSpan()));
                parameters.Add(p);
            }
            var cp = new Checkpoint { ModelFingerprint = fingerprint, Parameters = parameters, Config = config, Optimizer = null };
            for (int k = r.ReadInt32(); k > 0; k--) cp.Longs[r.ReadString()] = r.ReadInt64();
            for (int k = r.ReadInt32(); k > 0; k--) cp.Doubles[r.ReadString()] = r.ReadDouble();
            for (int k = r.ReadInt32(); k > 0; k--)
            {
                string key = r.ReadString();
                var words = new ulong[r.ReadInt32()];
                for (int i = 0; i < words.Length; i++) words[i] = r.ReadUInt64();
                cp.Words[key] = words;
            }
            for (int k = r.ReadInt32(); k > 0; k--)
            {
                string key = r.ReadString();
                var data = new float[r.ReadInt32()];
                r.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
                cp.Tensors[key] = data;
            }
            var optimizer = r.ReadBoolean() ? OptimizerState.Read(r) : null;
            if (!r.ReadBytes(Magic.Length).AsSpan().SequenceEqual(Magic)) throw new OnnxKfacException($"{path}: checkpoint is truncated");
            return new Checkpoint
            {
                ModelFingerprint = fingerprint, Parameters = parameters, Config = config, Optimizer = optimizer,
                Longs = cp.Longs, Doubles = cp.Doubles, Words = cp.Words, Tensors = cp.Tensors,
            };
        }
        catch (Exception e) when (e is EndOfStreamException or IOException or InvalidDataException or ArgumentException or OverflowException)
        {
            throw new OnnxKfacException($"{path}: unreadable checkpoint ({e.Message})", e);
        }
    }

    /// <summary>
    /// Copies the saved weights into <paramref name="target"/> after checking the checkpoint
    /// belongs to this model; the refusal names the first difference.
    /// </summary>
    public void RestoreInto(IReadOnlyList<Parameter> target, string modelFingerprint, string source)
    {
        var mine = Parameters.ToDictionary(p => p.Name, StringComparer.Ordinal);
        foreach (var p in target)
        {
            if (!mine.TryGetValue(p.Name, out var saved))
                throw new OnnxKfacException($"{source}: checkpoint is from another model: it has no parameter '{p.Name}'");
            if (!saved.Shape.SequenceEqual(p.Shape))
                throw new OnnxKfacException($"{source}: checkpoint is from another model: parameter '{p.Name}' is [{string.Join(",", saved.Shape)}] there, [{string.Join(",", p.Shape)}] here");
        }
        if (mine.Count != target.Count)
            throw new OnnxKfacException($"{source}: checkpoint is from another model: it has {mine.Count} parameters, this model trains {target.Count} (e.g. '{mine.Keys.Except(target.Select(t => t.Name)).FirstOrDefault()}')");
        if (ModelFingerprint != modelFingerprint)
            throw new OnnxKfacException($"{source}: checkpoint is from another model: same parameters but a different graph");
        foreach (var p in target) mine[p.Name].Value.AsSpan().CopyTo(p.Value);
    }
}
