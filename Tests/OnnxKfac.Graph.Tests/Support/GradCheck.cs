using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Proto;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Tests.Support;

/// <summary>
/// Finite-difference gradient checks through ONNX Runtime. The scalar checked is
/// L = Σ_k Σ R_k ⊙ Y_k with fixed random R_k per output, so dL/dY_k = R_k seeds the
/// backward graph; every (or a sample of) input element is perturbed by ±h and the
/// central difference of L is compared with the analytic gradient.
/// </summary>
public static class GradCheck
{
    public sealed record Options
    {
        /// <summary>Outputs to seed (default: all graph outputs).</summary>
        public IReadOnlyList<string>? Outputs { get; init; }
        public double Step { get; init; } = double.NaN;
        /// <summary>Allowed |analytic - numeric| relative to max(1, max |numeric|).</summary>
        public double Tolerance { get; init; } = double.NaN;
        public int MaxElementsPerInput { get; init; } = 48;
        public int Seed { get; init; } = 7;
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

    /// <summary>Checks gradients of <paramref name="wrt"/> (graph inputs of <paramref name="model"/>); returns the worst error.</summary>
    public static double Check(ModelProto model, IReadOnlyDictionary<string, TestTensor> inputs, IReadOnlyList<string> wrt, Options? options = null)
    {
        options ??= new Options();
        var outputs = options.Outputs ?? model.Graph.Output.Select(o => o.Name).ToArray();
        bool isDouble = wrt.All(w => inputs[w].ElemType == (int)DataType.Double);
        double h = double.IsNaN(options.Step) ? (isDouble ? 1e-6 : 1e-2) : options.Step;
        double tol = double.IsNaN(options.Tolerance) ? (isDouble ? 1e-6 : 2e-2) : options.Tolerance;

        using var forward = new Ort(model);
        var y0 = forward.Run(inputs, outputs);
        var seeds = new Dictionary<string, TestTensor>();
        for (int k = 0; k < outputs.Count; k++)
            seeds[outputs[k]] = TestTensor.Random(y0[outputs[k]].ElemType, y0[outputs[k]].Shape, options.Seed + 101 * k);

        var gradModel = GradientGraph.Build(model, outputs, wrt, options.Registry);
        using var backward = new Ort(gradModel);
        var feed = new Dictionary<string, TestTensor>(inputs);
        foreach (var (y, r) in seeds) feed[y + "_seed"] = r;
        var analytic = backward.Run(feed, wrt.Select(w => w + "_grad").ToArray());

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
        foreach (var w in wrt)
        {
            var x = inputs[w];
            var g = analytic[w + "_grad"];
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
            double scale = Math.Max(1, numeric.Max(Math.Abs));
            for (int j = 0; j < idx.Length; j++)
            {
                double err = Math.Abs(g.Data[idx[j]] - numeric[j]) / scale;
                worst = Math.Max(worst, err);
                Assert.True(err <= tol,
                    $"d/d{w}[{idx[j]}]: analytic {g.Data[idx[j]]:G9} vs numeric {numeric[j]:G9} (relative error {err:G3} > {tol:G3})");
            }
        }
        return worst;
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
