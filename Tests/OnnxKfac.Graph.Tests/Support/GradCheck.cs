using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Proto;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Tests.Support;

/// <summary>
/// Finite-difference gradient checks through ONNX Runtime. The scalar checked is
/// L = Σ_k Σ R_k ⊙ Y_k with fixed random R_k per output, so dL/dY_k = R_k seeds the
/// backward graph; every (or a sample of) input element is perturbed by ±h and the
/// central difference of L is compared with the analytic gradient.
/// <para>
/// Tolerances are relative to the scale of each input's gradient, for float32 and float64
/// alike: err = |analytic − numeric| / s with s = max(max |numeric|, max |analytic| over the
/// whole tensor, noise floor). The noise floor is what rounding alone can put into a central
/// difference, c·u·Σ|R ⊙ Y| / h (u the unit roundoff of the element type, c = 64 for the
/// rounding inside the op), so gradients far smaller than 1 are still checked to
/// <see cref="Options.Tolerance"/> of their own size instead of passing under an absolute bound.
/// </para>
/// <para>
/// Every check also proves it can fail: (1) each input's numeric gradient must stand out
/// of its tolerance, so a zero gradient would be rejected, unless the test declares it
/// legitimately zero in <see cref="Options.ZeroGradient"/>; (2) for every op type of the
/// model whose rule the backward pass calls, the check is repeated with a
/// <see cref="GradientRegistry"/> in which that rule returns zeros, and this mutant must be
/// rejected (it reuses the finite differences, so it costs one backward run).
/// </para>
/// </summary>
public static class GradCheck
{
    public sealed record Options
    {
        /// <summary>Outputs to seed (default: all graph outputs).</summary>
        public IReadOnlyList<string>? Outputs { get; init; }
        public double Step { get; init; } = double.NaN;
        /// <summary>Allowed |analytic - numeric| relative to the gradient's scale (see the class summary); default 1e-6 for float64, 2e-2 for float32.</summary>
        public double Tolerance { get; init; } = double.NaN;
        public int MaxElementsPerInput { get; init; } = 48;
        public int Seed { get; init; } = 7;
        /// <summary>Inputs whose gradient is legitimately zero at the checked point (the call site says why); the check asserts that it is.</summary>
        public IReadOnlyList<string> ZeroGradient { get; init; } = [];
        /// <summary>Op types whose rule is replaced by a zero rule, one mutant each (default: every op type of the model).</summary>
        public IReadOnlyList<string>? Mutate { get; init; }
        /// <summary>The rules to check (default: the built-in table); a broken table must make the check fail.</summary>
        public GradientRegistry? Registry { get; init; }
    }

    /// <summary>The default rules with <paramref name="op"/>'s rule replaced by one that returns no gradient (zero).</summary>
    public static GradientRegistry Zeroed(string op)
    {
        var r = GradientRegistry.CreateDefault();
        r.Replace(op, _ => { }, r.Find(op)!.DifferentiableInputs);
        return r;
    }

    /// <summary>Rounding allowance of the noise floor: ops round more than once per output.</summary>
    private const double NoiseFactor = 64;

    /// <summary>Checks gradients of <paramref name="wrt"/> (graph inputs of <paramref name="model"/>); returns the worst error.</summary>
    public static double Check(ModelProto model, IReadOnlyDictionary<string, TestTensor> inputs, IReadOnlyList<string> wrt, Options? options = null)
    {
        options ??= new Options();
        var outputs = options.Outputs ?? model.Graph.Output.Select(o => o.Name).ToArray();
        bool isDouble = wrt.All(w => inputs[w].ElemType == (int)DataType.Double);
        double h = double.IsNaN(options.Step) ? (isDouble ? 1e-6 : 1e-2) : options.Step;
        double tol = double.IsNaN(options.Tolerance) ? (isDouble ? 1e-6 : 2e-2) : options.Tolerance;
        foreach (var z in options.ZeroGradient) Assert.Contains(z, wrt);

        using var forward = new Ort(model);
        var y0 = forward.Run(inputs, outputs);
        var seeds = new Dictionary<string, TestTensor>();
        for (int k = 0; k < outputs.Count; k++)
            seeds[outputs[k]] = TestTensor.Random(y0[outputs[k]].ElemType, y0[outputs[k]].Shape, options.Seed + 101 * k);

        // Rounding noise of one central difference: every output rounded to its type.
        double magnitude = 0;
        bool outputsDouble = true;
        foreach (var (name, r) in seeds)
        {
            for (int i = 0; i < r.Data.Length; i++) magnitude += Math.Abs(r.Data[i] * y0[name].Data[i]);
            outputsDouble &= y0[name].ElemType == (int)DataType.Double;
        }
        double roundoff = outputsDouble && isDouble ? Math.Pow(2, -53) : Math.Pow(2, -24);
        double floor = NoiseFactor * roundoff * Math.Max(magnitude, 1e-30) / h;

        var analytic = Analytic(model, outputs, wrt, inputs, seeds, options.Registry);

        double Loss(Dictionary<string, TestTensor> ins)
        {
            var ys = forward.Run(ins, outputs);
            double l = 0;
            foreach (var (name, r) in seeds)
            {
                var y = ys[name];
                Assert.Equal(r.Count, y.Count);
                for (int i = 0; i < y.Data.Length; i++) l += r.Data[i] * y.Data[i];
            }
            return l;
        }

        double worst = 0;
        var rng = new Random(options.Seed);
        var sampled = new Dictionary<string, (int[] Index, double[] Numeric)>();
        foreach (var w in wrt)
        {
            var x = inputs[w];
            var g = analytic[w];
            Assert.Equal(x.Shape, g.Shape);
            var idx = Enumerable.Range(0, x.Data.Length).ToArray();
            if (idx.Length > options.MaxElementsPerInput) idx = idx.OrderBy(_ => rng.Next()).Take(options.MaxElementsPerInput).Order().ToArray();
            var numeric = new double[idx.Length];
            for (int j = 0; j < idx.Length; j++)
            {
                int i = idx[j];
                var plus = new Dictionary<string, TestTensor>(inputs) { [w] = x.With(i, x.Data[i] + h) };
                var minus = new Dictionary<string, TestTensor>(inputs) { [w] = x.With(i, x.Data[i] - h) };
                numeric[j] = (Loss(plus) - Loss(minus)) / (2 * h);
            }
            sampled[w] = (idx, numeric);
            double scale = Scale(numeric, g, floor);
            for (int j = 0; j < idx.Length; j++)
            {
                double err = Math.Abs(g.Data[idx[j]] - numeric[j]) / scale;
                worst = Math.Max(worst, err);
                Assert.True(err <= tol,
                    $"d/d{w}[{idx[j]}]: analytic {g.Data[idx[j]]:G9} vs numeric {numeric[j]:G9} (relative error {err:G3} > {tol:G3}, scale {scale:G3})");
            }

            // Would a zero gradient for this input fail? It must, unless the test says the gradient is zero.
            double zeroError = numeric.Length == 0 ? 0 : numeric.Max(Math.Abs) / Scale(numeric, Zeros(g), floor);
            if (options.ZeroGradient.Contains(w))
                Assert.True(zeroError <= tol, $"d/d{w} is declared zero but its numeric gradient reaches {numeric.Max(Math.Abs):G3}");
            else
                Assert.True(zeroError > tol,
                    $"d/d{w} cannot fail: its numeric gradient (max {numeric.Select(Math.Abs).DefaultIfEmpty().Max():G3}) is within tolerance of zero " +
                    $"(noise floor {floor:G3}); choose inputs with a larger gradient or declare it in {nameof(Options.ZeroGradient)}");
        }

        CheckMutants(model, outputs, wrt, inputs, seeds, sampled, floor, tol, options);
        return worst;
    }

    private static double Scale(double[] numeric, TestTensor analytic, double floor) =>
        Math.Max(floor, Math.Max(numeric.Select(Math.Abs).DefaultIfEmpty().Max(), analytic.Data.Select(Math.Abs).DefaultIfEmpty().Max()));

    private static TestTensor Zeros(TestTensor like) => like with { Data = new double[like.Data.Length] };

    private static Dictionary<string, TestTensor> Analytic(ModelProto model, IReadOnlyList<string> outputs, IReadOnlyList<string> wrt,
        IReadOnlyDictionary<string, TestTensor> inputs, Dictionary<string, TestTensor> seeds, GradientRegistry? registry)
    {
        var gradModel = GradientGraph.Build(model, outputs, wrt, registry);
        using var backward = new Ort(gradModel);
        var feed = new Dictionary<string, TestTensor>(inputs);
        foreach (var (y, r) in seeds) feed[y + "_seed"] = r;
        var grads = backward.Run(feed, wrt.Select(w => w + "_grad").ToArray());
        return wrt.ToDictionary(w => w, w => grads[w + "_grad"]);
    }

    /// <summary>
    /// For each op type under test, the gradient with that op's rule returning zeros must be
    /// rejected by the same comparison. Op types whose rule the backward pass never calls
    /// (integer shape arithmetic, ops off the path) are not under test and are skipped.
    /// </summary>
    private static void CheckMutants(ModelProto model, IReadOnlyList<string> outputs, IReadOnlyList<string> wrt,
        IReadOnlyDictionary<string, TestTensor> inputs, Dictionary<string, TestTensor> seeds,
        Dictionary<string, (int[] Index, double[] Numeric)> sampled, double floor, double tol, Options options)
    {
        if (wrt.All(options.ZeroGradient.Contains)) return; // nothing a zero rule could change
        var ops = options.Mutate ?? model.Graph.Node.Where(n => n.Domain is "" or "ai.onnx").Select(n => n.OpType).Distinct().ToArray();
        foreach (var op in ops)
        {
            var registry = GradientRegistry.CreateDefault();
            if (registry.Find(op) is not { } entry) continue;
            bool called = false;
            registry.Replace(op, ctx =>
            {
                called = true;
                for (int i = 0; i < ctx.InputCount; i++)
                    if (ctx.Needs(i)) ctx.SetGrad(i, ctx.Emit.ZerosLike(ctx.X(i), ctx.ElemType(ctx.X(i))));
            }, entry.DifferentiableInputs);
            var mutant = Analytic(model, outputs, wrt, inputs, seeds, registry);
            if (!called) { Assert.Null(options.Mutate); continue; }
            double detected = 0;
            foreach (var w in wrt.Where(w => !options.ZeroGradient.Contains(w)))
            {
                var (idx, numeric) = sampled[w];
                double scale = Scale(numeric, mutant[w], floor);
                for (int j = 0; j < idx.Length; j++) detected = Math.Max(detected, Math.Abs(mutant[w].Data[idx[j]] - numeric[j]) / scale);
            }
            Assert.True(detected > tol, $"the check cannot fail: with the {op} gradient rule returning zeros it still passes (worst error {detected:G3} <= {tol:G3})");
        }
    }

    /// <summary>Convenience: one op, every float graph input checked, at each opset in <paramref name="opsets"/>.</summary>
    public static void Op(string opType, IReadOnlyList<string> inputOrder, IReadOnlyDictionary<string, TestTensor> inputs,
        IReadOnlyDictionary<string, TestTensor>? constants = null, int[]? opsets = null, int outputs = 1,
        IReadOnlyList<string>? wrt = null, Options? options = null, params AttributeProto[] attributes)
    {
        foreach (int opset in opsets ?? [13, 17, 20])
        {
            var model = TestModels.SingleOp(opType, opset, inputOrder, inputs, constants, outputs, attributes);
            var names = wrt ?? inputs.Where(kv => kv.Value.ElemType is (int)DataType.Float or (int)DataType.Double).Select(kv => kv.Key).ToArray();
            Check(model, inputs, names, options);
        }
    }
}
