using System.Text.RegularExpressions;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Model;

/// <summary>
/// The PyTorch module path behind each initializer. The exporter keeps a parameter's
/// state-dict name (<c>encoder.layers.0.linear1.bias</c>) but renames the copies constant
/// folding makes (<c>onnx::MatMul_262</c>, the transposed weight of a Linear on 3-D input);
/// its node names carry the module scope (<c>/encoder/layers.0/self_attn/MatMul</c>), so an
/// initializer's module is its reader's scope. Each initializer gets the names a glob may
/// select it by: its own, plus <c>{module}.weight</c> / <c>{module}.bias</c> (by the input it
/// feeds) for every reader whose module its name does not already carry.
/// </summary>
public static partial class ModulePaths
{
    /// <summary>The module path of a node named by the PyTorch exporter (<c>/a/b.0/MatMul</c> → <c>a.b.0</c>; root: ""), else null.</summary>
    public static string? OfNode(NodeProto n)
    {
        if (!n.Name.StartsWith('/')) return null;
        var parts = n.Name[1..].Split('/');
        return string.Join('.', parts[..^1]);
    }

    /// <summary>The module a state-dict name belongs to (<c>a.b.weight</c> → <c>a.b</c>; a root parameter: ""), null for exporter-made names.</summary>
    public static string? OfName(string name) =>
        IsGenerated(name) ? null : name.LastIndexOf('.') is var k and > 0 ? name[..k] : "";

    /// <summary>True for names the exporter makes up (<c>onnx::Mul_7</c>, <c>/ln/Constant_output_0</c>), as opposed to a model's parameter names.</summary>
    public static bool IsGenerated(string name) => name.Contains("::", StringComparison.Ordinal) || name.StartsWith('/');

    /// <summary>
    /// For every float initializer, the names it may be selected by (its own first). A reader
    /// reached through Identity copies counts; a second call of a module (<c>shared_1</c>) is the module.
    /// </summary>
    public static IReadOnlyDictionary<string, IReadOnlyList<string>> Names(GraphIndex index)
    {
        var result = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal);
        foreach (var t in index.Graph.Initializer)
        {
            if (!TensorData.IsFloat(t.DataType)) continue;
            var names = new List<string> { t.Name };
            foreach (var (reader, input) in Readers(index, t.Name))
            {
                string? module = OfNode(reader);
                if (module is null || module.Length == 0) continue;
                string alias = $"{module}.{Role(reader, input, t.Name)}";
                if (!names.Contains(alias) && !t.Name.StartsWith(module + ".", StringComparison.Ordinal)) names.Add(alias);
            }
            result[t.Name] = names;
        }
        return result;
    }

    /// <summary>The module of an initializer: its state-dict prefix, else its first reader's scope (null: unknown).</summary>
    public static string? ModuleOf(GraphIndex index, string name)
    {
        if (OfName(name) is { } m) return m;
        foreach (var (reader, _) in Readers(index, name))
            if (OfNode(reader) is { } s) return Canonical(s);
        return null;
    }

    /// <summary>The scope without call counters (<c>shared_1</c> → <c>shared</c>): the exporter numbers repeated calls of one module.</summary>
    public static string Canonical(string module) => CallCounter().Replace(module, "");

    /// <summary>The nodes that read <paramref name="tensor"/>, following Identity copies, with the input index each reads it at.</summary>
    public static IEnumerable<(NodeProto Reader, int Input)> Readers(GraphIndex index, string tensor)
    {
        var stack = new Stack<string>([tensor]);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (stack.Count > 0)
        {
            string name = stack.Pop();
            if (!seen.Add(name)) continue;
            foreach (var c in index.Consumers(name))
            {
                if (c.OpType == "Identity") { stack.Push(c.Output[0]); continue; }
                for (int i = 0; i < c.Input.Count; i++)
                    if (c.Input[i] == name) yield return (c, i);
            }
        }
    }

    /// <summary>"weight" for the weight input of MatMul/Gemm/Conv/Gather (and for a Transpose's input), "bias" for Gemm C, Conv B and Add, else the initializer's own name.</summary>
    private static string Role(NodeProto reader, int input, string name) => (reader.OpType, input) switch
    {
        ("MatMul", _) or ("Gemm", 1) or ("Conv", 1) or ("ConvTranspose", 1) or ("Gather", 0) or ("Transpose", 0) => "weight",
        ("Gemm", 2) or ("Conv", 2) or ("ConvTranspose", 2) or ("Add", _) => "bias",
        _ => name,
    };

    [GeneratedRegex(@"_[0-9]+(?=\.|$)")]
    private static partial Regex CallCounter();
}
