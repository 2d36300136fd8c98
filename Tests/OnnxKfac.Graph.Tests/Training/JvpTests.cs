using System.Text.Json;
using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using OnnxKfac.Graph.Training;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Tests.Training;

/// <summary>
/// The JVP graph (<see cref="JvpGraphBuilder"/>): J v and Q = vᵢᵀ F vⱼ against PyTorch
/// (tools/fixtures/export_jvp_references.py), against the closed-form Hessians applied to its
/// own J v outputs, and against a linear model whose Fisher is known exactly.
/// </summary>
public class JvpTests(Xunit.Abstractions.ITestOutputHelper log)
{
    public static IEnumerable<object[]> Fixtures =>
        Fixture.All().Where(n => Directory.Exists(Path.Combine(Fixture.Root, (string)n[0], "jvp")));

    /// <summary>The committed references of one fixture: tangents per direction, J v per direction, Q.</summary>
    private sealed record Reference(Dictionary<string, TestTensor>[] Tangents, TestTensor[] Jvp, double[,] Q)
    {
        public static Reference Load(Fixture f)
        {
            string dir = Path.Combine(f.Dir, "jvp");
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")));
            var root = doc.RootElement;
            TestTensor Read(string file) => TestTensor.FromProto(TensorProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(dir, file))));
            var tangents = root.GetProperty("tangents").EnumerateArray()
                .Select(t => t.EnumerateObject().ToDictionary(p => p.Name, p => Read(p.Value.GetString()!), StringComparer.Ordinal)).ToArray();
            var jvp = root.GetProperty("jvp").EnumerateArray().Select(j => Read(j.GetString()!)).ToArray();
            var rows = root.GetProperty("fisher_quadratic").EnumerateArray().Select(r => r.EnumerateArray().Select(x => x.GetDouble()).ToArray()).ToArray();
            var q = new double[rows.Length, rows.Length];
            for (int i = 0; i < rows.Length; i++) for (int j = 0; j < rows.Length; j++) q[i, j] = rows[i][j];
            return new Reference(tangents, jvp, q);
        }
    }

    private static Dictionary<string, TestTensor> Feed(Fixture f, TrainingGraph tg, Reference r)
    {
        var feed = new Dictionary<string, TestTensor>(f.Inputs) { [tg.Manifest.Loss.Target] = f.Target };
        foreach (var t in tg.Manifest.Inputs.Where(t => t.Role == TensorRole.Tangent))
            feed[t.Name] = r.Tangents[t.Direction!.Value][t.Of!];
        return feed;
    }

    private static (double Jvp, double Q) Errors(TrainingGraph tg, Dictionary<string, TestTensor> outputs, Reference r)
    {
        double jvpErr = 0;
        foreach (var t in tg.Manifest.OutputsOf(TensorRole.Jvp))
        {
            var expected = r.Jvp[t.Direction!.Value];
            var got = outputs[t.Name];
            Assert.Equal(expected.Shape, got.Shape);
            double scale = expected.Data.Max(Math.Abs);
            jvpErr = Math.Max(jvpErr, expected.Data.Zip(got.Data, (a, b) => Math.Abs(a - b)).Max() / scale);
        }
        var q = outputs[tg.Manifest.OutputsOf(TensorRole.FisherQuadratic).Single().Name];
        int k = r.Q.GetLength(0);
        Assert.Equal([k, k], q.Shape);
        double qScale = r.Q.Cast<double>().Max(Math.Abs), qErr = 0;
        for (int i = 0; i < k; i++) for (int j = 0; j < k; j++) qErr = Math.Max(qErr, Math.Abs(q.Data[i * k + j] - r.Q[i, j]) / qScale);
        return (jvpErr, qErr);
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void JvpAndFisherQuadraticMatchPyTorch(string name)
    {
        var f = Fixture.Load(name);
        var r = Reference.Load(f);
        var tg = JvpGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions), r.Jvp.Length);
        using var ort = new Ort(tg.Model);
        var outputs = ort.Run(Feed(f, tg, r));
        double loss = outputs[tg.Manifest.Loss.Loss].Data[0];
        Assert.True(Math.Abs(loss - f.Loss) <= 1e-5 * Math.Max(1, Math.Abs(f.Loss)), $"loss {loss} vs PyTorch {f.Loss}");
        var (jvpErr, qErr) = Errors(tg, outputs, r);
        log.WriteLine($"{name}: J v max error {jvpErr:G3} of the largest entry, Q max error {qErr:G3} relative, {tg.Model.Graph.Node.Count} nodes");
        Assert.True(jvpErr <= 1e-4, $"{name}: J v error {jvpErr:G3} > 1e-4 of the largest entry");
        Assert.True(qErr <= 1e-4, $"{name}: Q error {qErr:G3} > 1e-4 relative");
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void FisherQuadraticIsTheClosedFormHessianOfItsJvps(string name)
    {
        var f = Fixture.Load(name);
        var r = Reference.Load(f);
        var tg = JvpGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions), r.Jvp.Length);
        using var ort = new Ort(tg.Model);
        var outputs = ort.Run(Feed(f, tg, r));
        var z = outputs[f.Output];
        var jv = tg.Manifest.OutputsOf(TensorRole.Jvp).OrderBy(t => t.Direction).Select(t => outputs[t.Name]).ToArray();
        var q = outputs[JvpGraphBuilder.QuadraticName];
        int k = jv.Length;
        double scale = 0;
        var dense = new double[k, k];
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
            {
                dense[i, j] = DenseBilinear(f.LossOptions, z, f.Target, jv[i], jv[j]);
                scale = Math.Max(scale, Math.Abs(dense[i, j]));
            }
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
                Assert.True(Math.Abs(q.Data[i * k + j] - dense[i, j]) <= 1e-5 * scale, $"{name}: Q[{i},{j}] {q.Data[i * k + j]:G9} vs dense {dense[i, j]:G9}");
    }

    /// <summary>uᵀ H w for the loss's closed-form Hessian w.r.t. the output, written densely (logits [N, C] for cross-entropy).</summary>
    private static double DenseBilinear(LossOptions o, TestTensor z, TestTensor target, TestTensor u, TestTensor w)
    {
        int n = z.Data.Length;
        bool mean = o.Reduction == LossReduction.Mean;
        switch (o.Kind)
        {
            case LossKind.Mse: return z.Data.Select((_, i) => 2 * u.Data[i] * w.Data[i]).Sum() / (mean ? n : 1);
            case LossKind.BceWithLogits:
                return z.Data.Select((x, i) => { double p = 1 / (1 + Math.Exp(-x)); return p * (1 - p) * u.Data[i] * w.Data[i]; }).Sum() / (mean ? n : 1);
            case LossKind.CrossEntropy:
            {
                int rows = (int)z.Shape[0], c = (int)z.Shape[1];
                var weights = o.ClassWeights?.Select(x => (double)x).ToArray() ?? Enumerable.Repeat(1.0, c).ToArray();
                var keep = target.Data.Select(t => (long)t == o.IgnoreIndex ? 0.0 : 1.0).ToArray();
                var coeff = target.Data.Select((t, r) => keep[r] * ((long)t == o.IgnoreIndex ? 0 : o.ClassWeights is null ? 1 : weights[(int)t])).ToArray();
                double sumCoeff = coeff.Sum(), eps = o.LabelSmoothing;
                double total = 0;
                for (int r = 0; r < rows; r++)
                {
                    var zr = Enumerable.Range(0, c).Select(j => z.Data[r * c + j]).ToArray();
                    double max = zr.Max();
                    var p = zr.Select(x => Math.Exp(x - max)).ToArray();
                    double s = p.Sum();
                    for (int j = 0; j < c; j++) p[j] /= s;
                    var H = new double[c, c];
                    for (int a = 0; a < c; a++) for (int b = 0; b < c; b++) H[a, b] = (a == b ? p[a] : 0) - p[a] * p[b];
                    // (1 − ε)·NLL weighted by coeff, plus (ε/C)·Σ_c w_c·(−log p_c) per kept row.
                    double rowWeight = (1 - eps) * coeff[r] / (mean ? sumCoeff : 1)
                        + eps / c * weights.Sum() * keep[r] / (mean ? (o.ClassWeights is null ? rows : sumCoeff) : 1);
                    for (int a = 0; a < c; a++) for (int b = 0; b < c; b++) total += rowWeight * u.Data[r * c + a] * H[a, b] * w.Data[r * c + b];
                }
                return total;
            }
            default: throw new NotSupportedException(o.Kind.ToString());
        }
    }

    /// <summary>
    /// y = X W + b with mse: J v = X V + v_b exactly, and F = (2/count) Σ_n J_nᵀ J_n, written out
    /// densely over θ = (W, b) as the Kronecker product of [X 1]ᵀ[X 1] with the identity.
    /// </summary>
    [Fact]
    public void LinearModelWithMseHasTheExactFisher()
    {
        const int N = 5, D = 3, M = 2;
        var x = TestTensor.Random((int)DataType.Double, [N, D], 1);
        var w = TestTensor.Random((int)DataType.Double, [D, M], 2);
        var b = TestTensor.Random((int)DataType.Double, [M], 3);
        var nodes = new[]
        {
            new NodeProto { OpType = "MatMul", Name = "mm", Input = { "x", "W" }, Output = { "xw" } },
            new NodeProto { OpType = "Add", Name = "add", Input = { "xw", "b" }, Output = { "y" } },
        };
        var model = TestModels.Graph(17, nodes, new Dictionary<string, TestTensor> { ["x"] = x },
            new Dictionary<string, TestTensor> { ["W"] = w, ["b"] = b }, ["y"]);
        var tg = JvpGraphBuilder.Build(model, new TrainingGraphOptions(new LossOptions(LossKind.Mse)));
        var v = new[] { (W: TestTensor.Random((int)DataType.Double, [D, M], 4), B: TestTensor.Random((int)DataType.Double, [M], 5)),
                        (W: TestTensor.Random((int)DataType.Double, [D, M], 6), B: TestTensor.Random((int)DataType.Double, [M], 7)) };
        var feed = new Dictionary<string, TestTensor>
        {
            ["x"] = x, ["W"] = w, ["b"] = b, [tg.Manifest.Loss.Target] = TestTensor.Random((int)DataType.Double, [N, M], 8),
            [JvpGraphBuilder.TangentName("W", 0)] = v[0].W, [JvpGraphBuilder.TangentName("b", 0)] = v[0].B,
            [JvpGraphBuilder.TangentName("W", 1)] = v[1].W, [JvpGraphBuilder.TangentName("b", 1)] = v[1].B,
        };
        using var ort = new Ort(tg.Model);
        var outputs = ort.Run(feed);

        // θ = vec(W) (row-major, d·M + m) then b (D·M + m); a row [x_n, 1] per example.
        int p = (D + 1) * M;
        var f = new double[p, p];
        for (int n = 0; n < N; n++)
            for (int d1 = 0; d1 <= D; d1++)
                for (int d2 = 0; d2 <= D; d2++)
                {
                    double a1 = d1 < D ? x.Data[n * D + d1] : 1, a2 = d2 < D ? x.Data[n * D + d2] : 1;
                    for (int m = 0; m < M; m++) f[d1 * M + m, d2 * M + m] += 2.0 * a1 * a2 / (N * M);
                }
        double[] Flat((TestTensor W, TestTensor B) t) => [.. t.W.Data, .. t.B.Data];
        for (int k = 0; k < 2; k++)
        {
            var jv = outputs[$"y/jvp{k}"];
            for (int n = 0; n < N; n++)
                for (int m = 0; m < M; m++)
                {
                    double expected = v[k].B.Data[m] + Enumerable.Range(0, D).Sum(d => x.Data[n * D + d] * v[k].W.Data[d * M + m]);
                    Assert.Equal(expected, jv.Data[n * M + m], 12);
                }
        }
        var q = outputs[JvpGraphBuilder.QuadraticName];
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++)
            {
                var vi = Flat(v[i]);
                var vj = Flat(v[j]);
                double dense = 0;
                for (int r = 0; r < p; r++) for (int c = 0; c < p; c++) dense += vi[r] * f[r, c] * vj[c];
                Assert.Equal(dense, q.Data[i * 2 + j], 12);
            }
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void JvpGraphIsDeterministic(string name)
    {
        var f = Fixture.Load(name);
        var options = new TrainingGraphOptions(f.LossOptions);
        var a = JvpGraphBuilder.Build(f.Model, options);
        var b = JvpGraphBuilder.Build(OnnxModelIO.Load(Path.Combine(f.Dir, "model.onnx")), options);
        Assert.Equal(Google.Protobuf.MessageExtensions.ToByteArray(a.Model), Google.Protobuf.MessageExtensions.ToByteArray(b.Model));
        Assert.Equal(a.Manifest.ToJson(), b.Manifest.ToJson());
    }

    [Theory]
    [InlineData("mlp_opset17", "Where")]                 // Relu's backward: Where(x > 0, dY, 0)
    [InlineData("cnn_opset17", "ScatterElements")]       // MaxPool's backward scatters dY onto the arg-max
    [InlineData("cnn_opset17", "ConvTranspose")]         // Conv's input gradient
    [InlineData("transformer_opset17", "ScatterND")]     // the embedding's backward
    public void ABrokenRuleOfTheSecondPassIsDetected(string name, string op)
    {
        var f = Fixture.Load(name);
        var r = Reference.Load(f);
        var registry = GradientRegistry.CreateDefault();
        registry.Replace(op, _ => { }, registry.Find(op)!.DifferentiableInputs);
        var tg = JvpGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { Registry = registry }, r.Jvp.Length);
        using var ort = new Ort(tg.Model);
        var (jvpErr, _) = Errors(tg, ort.Run(Feed(f, tg, r)), r);
        Assert.True(jvpErr > 1e-2, $"{name}: with the {op} rule zeroed J v still matches PyTorch (error {jvpErr:G3})");
    }

    [Fact]
    public void AnOpWithoutARuleInTheSecondPassNamesNodeOpAndOpset()
    {
        var f = Fixture.Load("cnn_opset17");
        var registry = new GradientRegistry();
        foreach (var op in GradientRegistry.Default.SupportedOps.Where(o => o != "ScatterElements"))
            registry.Add(op, GradientRegistry.Default.Find(op)!.Rule, GradientRegistry.Default.Find(op)!.DifferentiableInputs);
        registry.DeclareNonDifferentiable([.. GradientRegistry.Default.NonDifferentiableOps]);
        var e = Assert.Throws<UnsupportedOpException>(() => JvpGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions) { Registry = registry }));
        Assert.Contains("(ScatterElements)", e.Message);
        Assert.Contains("no gradient rule for op 'ScatterElements' at opset 17", e.Message);
    }

    [Fact]
    public void L1HasNoCurvature()
    {
        var f = Fixture.Load("mlp_l1_opset17");
        var e = Assert.Throws<OnnxKfacException>(() => JvpGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions)));
        Assert.Equal("l1 has no curvature: the exact quadratic model needs cross-entropy, mse or bce-with-logits", e.Message);
    }

    [Theory]
    [InlineData("cnn_opset17")]
    [InlineData("transformer_opset17")]
    public void ManifestNamesTangentsJvpsAndTheQuadratic(string name)
    {
        var f = Fixture.Load(name);
        var options = new TrainingGraphOptions(f.LossOptions) { KeepInitialValues = false };
        var tg = JvpGraphBuilder.Build(f.Model, options, directions: 3);
        var training = TrainingGraphBuilder.Build(f.Model, options);
        var m = tg.Manifest;
        Assert.Equal(training.Manifest.Parameters.Select(p => p.Name), m.Parameters.Select(p => p.Name));
        Assert.Equal(training.Manifest.Inputs.Select(i => (i.Name, i.Role)), m.Inputs.Where(i => i.Role != TensorRole.Tangent).Select(i => (i.Name, i.Role)));
        Assert.Equal(training.Manifest.Loss, m.Loss with { });
        foreach (var p in m.Parameters)
        {
            Assert.DoesNotContain(tg.Model.Graph.Initializer, t => t.Name == p.Name);
            for (int k = 0; k < 3; k++)
            {
                var t = m.Inputs.Single(i => i.Role == TensorRole.Tangent && i.Of == p.Name && i.Direction == k);
                Assert.Equal(JvpGraphBuilder.TangentName(p.Name, k), t.Name);
                Assert.Equal(p.Shape, t.Shape);
            }
        }
        Assert.Equal([0, 1, 2], m.OutputsOf(TensorRole.Jvp).Select(t => t.Direction!.Value));
        Assert.All(m.OutputsOf(TensorRole.Jvp), t => Assert.Equal($"{f.Output}/jvp{t.Direction}", t.Name));
        Assert.Equal([3L, 3L], m.OutputsOf(TensorRole.FisherQuadratic).Single().Shape!);
        Assert.Equal(tg.Model.Graph.Output.Select(o => o.Name), m.Outputs.Select(o => o.Name));
        Assert.Equal(tg.Model.Graph.Input.Select(i => i.Name).Order(StringComparer.Ordinal), m.Inputs.Select(i => i.Name).Order(StringComparer.Ordinal));
        var json = TrainingManifest.FromJson(m.ToJson(), "test");
        Assert.Equal(m.ToJson(), json.ToJson());
    }

    /// <summary>
    /// Nothing of the first reverse pass that depends on the cotangent survives pruning when
    /// shapes are static: the second pass reads only forward tensors (and forward-only products
    /// of the first pass). With a dynamic batch, run-time shape reads are pointed at forward
    /// tensors of the same symbolic shape; what static inference cannot prove equal (shapes
    /// with dims it does not know, e.g. a flattened N·C·H·W) keeps the first-pass nodes those
    /// shapes come from: none for the dense models.
    /// </summary>
    [Theory]
    [MemberData(nameof(Fixtures))]
    public void PruningLeavesNoCotangentPath(string name)
    {
        var f = Fixture.Load(name);
        var dynamicCount = CotangentDependents(JvpGraphBuilder.Build(f.Model, new TrainingGraphOptions(f.LossOptions)), out int nodes);
        var model = f.Model.Clone();
        foreach (var vi in model.Graph.Input.Concat(model.Graph.Output))
            foreach (var d in vi.Type.TensorType.Shape.Dim.Where(d => d.HasDimParam))
                d.DimValue = f.Inputs.Values.First().Shape[0];
        var staticCount = CotangentDependents(JvpGraphBuilder.Build(model, new TrainingGraphOptions(f.LossOptions)), out int staticNodes);
        log.WriteLine($"{name}: dynamic batch {nodes} nodes, {dynamicCount} first-pass nodes kept for run-time shapes; static batch {staticNodes} nodes, {staticCount} kept");
        Assert.Equal(0, staticCount);
        if (name.StartsWith("mlp", StringComparison.Ordinal) || name.StartsWith("autoencoder", StringComparison.Ordinal)) Assert.Equal(0, dynamicCount);
    }

    /// <summary>How many first-pass nodes (nodes that depend on the cotangent and are not Shape/Size reads) the graph kept.</summary>
    private static int CotangentDependents(TrainingGraph tg, out int nodes)
    {
        var graph = tg.Model.Graph;
        nodes = graph.Node.Count;
        var dependent = new HashSet<string>(StringComparer.Ordinal);
        int count = 0;
        foreach (var n in graph.Node)
        {
            bool cotangent = n.OpType == "ConstantOfShape" && n.Output[0].EndsWith("/jvp/cotangent", StringComparison.Ordinal);
            if (!cotangent && (n.OpType is "Shape" or "Size" || !n.Input.Any(dependent.Contains))) continue;
            count++;
            foreach (var o in n.Output) dependent.Add(o);
        }
        return count;
    }
}
