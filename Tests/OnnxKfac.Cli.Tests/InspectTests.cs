using System.Text.Json;
using OnnxKfac.Cli.Tests.Support;
using static OnnxKfac.Cli.Tests.Support.CliRunner;

namespace OnnxKfac.Cli.Tests;

public class InspectTests
{
    [Fact]
    public void TextReportListsModelParametersLayersAndExclusions()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.Linear2(), dir["m.onnx"]);
        var r = AssertOk(Run("inspect", model));
        Assert.Contains("IR version  8", r.Out);
        Assert.Contains("ai.onnx 17", r.Out);
        Assert.Contains("OnnxKfac.Cli.Tests 1", r.Out);
        Assert.Matches(@"\n  x +float +\[N,4\]", r.Out);
        Assert.Matches(@"\n  logits +float +\[N,3\]", r.Out);
        Assert.Contains("Trainable parameters (loss on 'logits'): 4 tensors, 43 elements", r.Out);
        Assert.Matches(@"\n  fc1.weight +float +\[4,5\] +20\n", r.Out);
        Assert.Contains("onnx::Mul_7", r.Out);
        Assert.Contains("single-element exporter constant", r.Out);
        Assert.Contains("Layers: 2 (2 dense)", r.Out);
        Assert.Contains("Ops without a gradient rule: 0", r.Out);
        Assert.Empty(r.Err);
    }

    [Fact]
    public void JsonReportIsStableSnakeCase()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.Linear2(), dir["m.onnx"]);
        var r = AssertOk(Run("inspect", model, "--json", "--loss", "cross-entropy"));
        Assert.Equal(r.Out, AssertOk(Run("inspect", model, "--json", "--loss", "cross-entropy")).Out);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.Equal("onnx-kfac/inspect/1", root.GetProperty("format").GetString());
        Assert.Equal(8, root.GetProperty("ir_version").GetInt64());
        Assert.Equal(17, root.GetProperty("opset").GetInt32());
        Assert.Equal("OnnxKfac.Cli.Tests", root.GetProperty("producer").GetString());
        var input = root.GetProperty("inputs")[0];
        Assert.Equal("x", input.GetProperty("name").GetString());
        Assert.Equal("float", input.GetProperty("elem_type").GetString());
        Assert.Equal("N", input.GetProperty("shape")[0].GetString());
        Assert.Equal(4, input.GetProperty("shape")[1].GetInt64());
        Assert.Equal("logits", root.GetProperty("loss_output").GetString());
        var loss = root.GetProperty("loss");
        Assert.Equal("cross-entropy", loss.GetProperty("kind").GetString());
        Assert.Equal("int64", loss.GetProperty("target").GetProperty("elem_type").GetString());
        Assert.Equal("[\"N\"]", loss.GetProperty("target").GetProperty("shape").GetRawText().Replace(" ", "").Replace("\n", "").Replace("\r", ""));
        var names = root.GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()!).ToArray();
        Assert.Equal(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"], names);
        Assert.Equal(43, root.GetProperty("parameter_elements").GetInt64());
        var excluded = root.GetProperty("excluded")[0];
        Assert.Equal("onnx::Mul_7", excluded.GetProperty("name").GetString());
        Assert.Equal("single-element exporter constant", excluded.GetProperty("reason").GetString());
        var layers = root.GetProperty("layers").EnumerateArray().ToArray();
        Assert.Equal(2, layers.Length);
        Assert.Equal("dense", layers[0].GetProperty("kind").GetString());
        Assert.Equal("fc1.weight", layers[0].GetProperty("weight").GetString());
        Assert.Equal("fc1.bias", layers[0].GetProperty("bias").GetString());
        Assert.Equal(4, layers[0].GetProperty("in_features").GetInt64());
        Assert.Equal(5, layers[0].GetProperty("out_features").GetInt64());
        Assert.Equal(0, root.GetProperty("ops_without_gradient").GetArrayLength());
        Assert.Contains(root.GetProperty("ops").EnumerateArray(), o => o.GetProperty("op_type").GetString() == "MatMul" && o.GetProperty("count").GetInt32() == 2);
        foreach (var key in new[] { "rejected_layers", "tied", "notes", "opset_imports", "outputs", "producer_version" })
            Assert.True(root.TryGetProperty(key, out _), key);
    }

    [Fact]
    public void ReportsOpsWithoutGradientRule()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.WithDet(), dir["det.onnx"]);
        var r = AssertOk(Run("inspect", model, "--json"));
        using var doc = JsonDocument.Parse(r.Out);
        var ops = doc.RootElement.GetProperty("ops_without_gradient").EnumerateArray().ToArray();
        var det = Assert.Single(ops);
        Assert.Equal("Det", det.GetProperty("op_type").GetString());
        Assert.Equal("ai.onnx", det.GetProperty("domain").GetString());
        Assert.True(det.GetProperty("on_gradient_path").GetBoolean());
        Assert.Contains("the_det", det.GetProperty("nodes")[0].GetString());
        var text = AssertOk(Run("inspect", model));
        Assert.Contains("Ops without a gradient rule: 1", text.Out);
        Assert.Contains("prepare and grad will fail", text.Out);
    }

    [Fact]
    public void ReportsEveryOpWithoutGradientRuleInOneList()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.WithDetAndReduceProd(), dir["det_prod.onnx"]);
        var r = AssertOk(Run("inspect", model, "--json"));
        using var doc = JsonDocument.Parse(r.Out);
        var ops = doc.RootElement.GetProperty("ops_without_gradient").EnumerateArray().ToArray();
        Assert.Equal(["Det", "ReduceProd"], ops.Select(o => o.GetProperty("op_type").GetString()));
        Assert.All(ops, o => Assert.True(o.GetProperty("on_gradient_path").GetBoolean()));
        Assert.Contains("the_prod", ops[1].GetProperty("nodes")[0].GetString());
        var text = AssertOk(Run("inspect", model));
        Assert.Contains("Ops without a gradient rule: 2", text.Out);
        Assert.Contains("ReduceProd", text.Out);
    }

    [Fact]
    public void ReportsTiesAndChoosesOutput()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.TwoOutputsTied(), dir["tied.onnx"]);
        var r = AssertOk(Run("inspect", model, "--json"));
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        var tie = Assert.Single(root.GetProperty("tied").EnumerateArray());
        Assert.Equal("shared.weight", tie.GetProperty("name").GetString());
        Assert.Equal(2, tie.GetProperty("readers").GetArrayLength());
        Assert.Equal("logits", root.GetProperty("loss_output").GetString());
        Assert.Contains(root.GetProperty("notes").EnumerateArray(), n => n.GetString()!.Contains("2 outputs"));
        var aux = AssertOk(Run("inspect", model, "--json", "--output", "aux"));
        using var doc2 = JsonDocument.Parse(aux.Out);
        Assert.Equal("aux", doc2.RootElement.GetProperty("loss_output").GetString());
        Assert.Equal(0, doc2.RootElement.GetProperty("notes").GetArrayLength());
        var text = AssertOk(Run("inspect", model));
        Assert.Contains("Tied initializers: 1", text.Out);
    }

    [Fact]
    public void UnknownOutputIsAUserError()
    {
        using var dir = new TempDir();
        string model = Models.Save(Models.TwoOutputsTied(), dir["tied.onnx"]);
        AssertUserError(Run("inspect", model, "--output", "nope"), "no output 'nope'", "logits, aux");
    }

    [Fact]
    public void HelpDescribesOptions()
    {
        var r = AssertOk(Run("inspect", "--help"));
        Assert.Contains("--json", r.Out);
        Assert.Contains("--loss", r.Out);
        Assert.Contains("--output", r.Out);
        foreach (var cmd in new[] { "prepare", "grad" })
        {
            var h = AssertOk(Run(cmd, "--help"));
            Assert.Contains("--loss", h.Out);
            Assert.Contains("--trainable", h.Out);
        }
        Assert.Contains("inspect", AssertOk(Run("--help")).Out);
    }

    [Fact]
    public void WithOptimizerKfacEveryParameterHasABlockAndAReason()
    {
        string model = Path.Combine(AppContext.BaseDirectory, "Fixtures", "transformer_opset17", "model.onnx");
        var r = AssertOk(Run("inspect", model, "--optimizer", "kfac"));
        Assert.Contains("K-FAC blocks: 13 (1 embedding, 5 kronecker, 7 diagonal)", r.Out);
        Assert.Matches(@"\n  emb +embedding +emb\.weight +Gather of a \[20, 16\] table", r.Out);
        Assert.Matches(@"/ff1/MatMul +kronecker +onnx::MatMul_138, ff1\.bias +MatMul applied over 2 leading axes \(every position a row: the expand form\)", r.Out);
        Assert.Matches(@"ln1\.weight +diagonal +ln1\.weight +scale-and-shift \(LayerNormalization\)", r.Out);

        var json = JsonDocument.Parse(AssertOk(Run("inspect", model, "--optimizer", "kfac", "--kfac-block", "head.*:identity", "--kfac-fallback", "identity", "--json")).Out).RootElement;
        var blocks = json.GetProperty("kfac_blocks").EnumerateArray().ToArray();
        Assert.Equal("identity", blocks.First(b => b.GetProperty("block").GetString() == "head.weight").GetProperty("kind").GetString());
        Assert.Equal("identity", blocks.First(b => b.GetProperty("block").GetString() == "ln1.weight").GetProperty("kind").GetString());
        AssertUserError(Run("inspect", model, "--optimizer", "kfac", "--kfac-block", "nothing:diagonal"), "--kfac-block", "matches no trainable parameter");
        AssertUserError(Run("inspect", model, "--kfac-block", "head.*:identity"), "--optimizer kfac");
    }
}
