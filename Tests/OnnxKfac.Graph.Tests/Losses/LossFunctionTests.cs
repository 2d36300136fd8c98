using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Graph.Tests.Losses;

/// <summary>The loss table and each loss's output-space Fisher bilinear form against a dense Hessian.</summary>
public class LossFunctionTests
{
    [Fact]
    public void EveryKindHasOneLossAndNamesRoundTrip()
    {
        foreach (var kind in Enum.GetValues<LossKind>())
        {
            var f = LossFunctions.For(kind);
            Assert.Equal(kind, f.Kind);
            Assert.Equal(kind, LossOptions.ParseKind(f.Name));
            Assert.Equal(f.Name, LossOptions.Name(kind));
            foreach (var alias in f.Aliases) Assert.Equal(kind, LossOptions.ParseKind(alias.ToUpperInvariant()));
        }
        Assert.Equal(LossKind.CrossEntropy, LossOptions.ParseKind(" CE "));
        var e = Assert.Throws<OnnxKfacException>(() => LossOptions.ParseKind("hinge"));
        Assert.Equal("unknown loss 'hinge'; expected one of: cross-entropy, mse, l1, bce-with-logits", e.Message);
    }

    [Fact]
    public void TargetsFollowTheLoss()
    {
        var ce = LossFunctions.For(LossKind.CrossEntropy);
        Assert.Equal(new TensorInfo((int)DataType.Int64, [-1, 7, 5]).Shape, ce.TargetInfo(new TensorInfo(1, [-1, 3, 7, 5])).Shape);
        Assert.Equal((int)DataType.Int64, ce.TargetInfo(new TensorInfo(1, [4, 3])).ElemType);
        Assert.Null(ce.TargetInfo(new TensorInfo(1, [4])).Shape);   // reported when the loss is appended
        var mse = LossFunctions.For(LossKind.Mse);
        var target = mse.TargetInfo(new TensorInfo((int)DataType.Double, [4, 3]));
        Assert.Equal((int)DataType.Double, target.ElemType);
        Assert.Equal([4L, 3L], target.Shape!);
        var bad = Assert.Throws<OnnxKfacException>(() => ce.CheckTarget("t.pb", new LossOptions(LossKind.CrossEntropy), "y", 1, [2, 3], (int)DataType.Int64, [2], () => [0, 3]));
        Assert.Contains("label 3 at flat index 1 is outside [0, 3)", bad.Message);
        var shape = Assert.Throws<OnnxKfacException>(() => mse.CheckTarget("t.pb", new LossOptions(LossKind.Mse), "y", 1, [2, 3], 1, [2], () => []));
        Assert.Equal("t.pb: mse expects a float target shaped like output 'y' [2,3], got float [2]", shape.Message);
    }

    /// <summary>
    /// bce-with-logits per element, summed: max(z, 0) − z·t + log(1 + e^−|z|), against float64
    /// log1p, over logits from 0 to ±90 (where e^−|z| is far below float's epsilon and a plain
    /// log(1 + e^−|z|) would read 0). Each element alone, so the error of the log1p term is not hidden
    /// by a sum: relative 1e-6 in float32, 1e-14 in float64.
    /// </summary>
    [Theory]
    [InlineData((int)DataType.Float, 1e-6)]
    [InlineData((int)DataType.Double, 1e-14)]
    public void BceWithLogitsIsAccurateForConfidentLogits(int type, double tol)
    {
        double[] zs = [0, 1e-3, -0.5, 2, -7, 12, -17, 20, -30, 45, -90];
        var o = new LossOptions(LossKind.BceWithLogits) { Reduction = LossReduction.Sum };
        foreach (double target in new[] { 0.0, 1.0, 0.25 })
            for (int i = 0; i < zs.Length; i++)
            {
                // z ≥ 0 with t = 1, or z ≤ 0 with t = 0: the loss is log(1 + e^−|z|) alone.
                var z = new TestTensor(type, [1, 1], [zs[i]]);
                var t = new TestTensor(type, [1, 1], [target]);
                var model = TestModels.Graph(18, [], new Dictionary<string, TestTensor> { ["z"] = z, ["t"] = t }, null, []);
                var g = new GraphBuildContext(model, 18);
                var loss = o.Function.Append(g, o, "z", "t", "loss");
                g.Commit();
                model.Graph.Output.Add(ValueInfos.Tensor(loss.Loss, type, []));
                using var ort = new Ort(model);
                double got = ort.Run(new Dictionary<string, TestTensor> { ["z"] = z, ["t"] = t }, [loss.Loss])[loss.Loss].Data[0];
                double zi = type == (int)DataType.Float ? (float)zs[i] : zs[i];
                double want = Math.Max(zi, 0) - zi * target + Log1p(Math.Exp(-Math.Abs(zi)));
                Assert.True(Math.Abs(got - want) <= tol * Math.Abs(want), $"z {zs[i]}, t {target}: loss {got:G17}, want {want:G17}");
            }
    }

    // log(1 + x) in float64 to a few ulps for any x ≥ 0 (Goldberg's form; Math has no Log1p).
    private static double Log1p(double x) => 1 + x is var u && u == 1 ? x : Math.Log(u) * x / (u - 1);

    public static IEnumerable<object[]> Cases()
    {
        var ce = new LossOptions(LossKind.CrossEntropy);
        yield return [ce, new long[] { 4, 3 }];
        yield return [ce with { Reduction = LossReduction.Sum, IgnoreIndex = 1 }, new long[] { 3, 4, 2 }];
        yield return [ce with { ClassWeights = [0.5f, 2f, 1f, 1.5f], IgnoreIndex = 2, LabelSmoothing = 0.2 }, new long[] { 3, 4, 2 }];
        yield return [ce with { LabelSmoothing = 0.1, IgnoreIndex = 0 }, new long[] { 5, 3 }];
        yield return [new LossOptions(LossKind.Mse), new long[] { 4, 3 }];
        yield return [new LossOptions(LossKind.Mse) { Reduction = LossReduction.Sum }, new long[] { 2, 3, 2 }];
        yield return [new LossOptions(LossKind.BceWithLogits), new long[] { 4, 3 }];
    }

    /// <summary>
    /// uᵀ H w with H the Hessian of the appended loss itself, by central differences of its
    /// closed-form gradient along w. Float64 where ONNX Runtime allows; cross-entropy runs in
    /// float32 (the CPU build has no float64 OneHot), with a larger step and tolerance.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void FisherBilinearIsTheLossHessian(LossOptions o, long[] shape)
    {
        var f = o.Function;
        int D = f.ClassIndexTargets ? (int)DataType.Float : (int)DataType.Double;
        double h = D == (int)DataType.Float ? 1e-2 : 1e-5, tol = D == (int)DataType.Float ? 1e-3 : 1e-7;
        var z = TestTensor.Random(D, shape, 1, -2, 2);
        long[] tShape = f.ClassIndexTargets ? [shape[0], .. shape[2..]] : shape;
        var t = f.ClassIndexTargets
            ? new TestTensor((int)DataType.Int64, tShape, Enumerable.Range(0, (int)TensorData.ElementCount(tShape)).Select(k => (double)((k * 7 + 1) % shape[1])).ToArray())
            : TestTensor.Random(D, shape, 2, 0, 1);
        var u = TestTensor.Random(D, shape, 3);
        var w = TestTensor.Random(D, shape, 4);

        var model = TestModels.Graph(18, [], new Dictionary<string, TestTensor> { ["z"] = z, ["t"] = t, ["u"] = u, ["w"] = w }, null, []);
        var g = new GraphBuildContext(model, 18);
        var loss = f.Append(g, o, "z", "t", "loss");
        string q = f.FisherBilinear(g.Emitter("fisher"), g, o, "z", "t", "u", "w");
        g.Commit();
        model.Graph.Output.Add(ValueInfos.Tensor(q, D, []));
        model.Graph.Output.Add(ValueInfos.Tensor(loss.OutputGradient, D, shape));
        using var ort = new Ort(model);
        double Directional(double h)
        {
            var zh = z with { Data = z.Data.Select((x, i) => x + h * w.Data[i]).ToArray() };
            var grad = ort.Run(new Dictionary<string, TestTensor> { ["z"] = zh, ["t"] = t, ["u"] = u, ["w"] = w }, [loss.OutputGradient])[loss.OutputGradient];
            return grad.Data.Select((x, i) => x * u.Data[i]).Sum();
        }
        double got = ort.Run(new Dictionary<string, TestTensor> { ["z"] = z, ["t"] = t, ["u"] = u, ["w"] = w }, [q])[q].Data[0];
        double numeric = (Directional(h) - Directional(-h)) / (2 * h);
        Assert.True(Math.Abs(got - numeric) <= tol * Math.Max(1e-2, Math.Abs(numeric)), $"uᵀHw {got:G12} vs d/dh uᵀ∇L(z + h w) {numeric:G12}");
    }
}
