using OnnxKfac.Graph.Autodiff;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;
using static OnnxKfac.Graph.Tests.Support.TestTensor;

namespace OnnxKfac.Graph.Tests.Autodiff;

public class ShapeRulesTests
{
    private const int D = 11; // double
    private const long Big = long.MaxValue, Small = long.MinValue;

    private static Dictionary<string, TestTensor> X(long[] shape, int seed = 1) => new() { ["x"] = Random(D, shape, seed) };

    private static Dictionary<string, TestTensor> C(params (string Name, TestTensor Value)[] items) => items.ToDictionary(i => i.Name, i => i.Value);

    private static TestTensor I(params long[] values) => Int64([values.Length], values);

    private static NodeProto Node(string op, string[] inputs, string[] outputs, params AttributeProto[] attributes)
    {
        var n = new NodeProto { OpType = op, Name = op.ToLowerInvariant() + "_" + outputs[0] };
        n.Input.Add(inputs);
        n.Output.Add(outputs);
        n.Attribute.Add(attributes);
        return n;
    }

    private static NodeProto ConstNode(string output, long[] dims, params long[] values) =>
        Node("Constant", [], [output], Attributes.Tensor("value", TensorData.FromInt64s(output, dims, values)));

    /// <summary>
    /// Makes the listed dimensions of graph input <paramref name="input"/> dynamic, and every
    /// output dimension too (as exporters declare them), so nothing downstream is static by accident.
    /// </summary>
    internal static void Dynamic(ModelProto model, string input, params int[] dims)
    {
        var vi = model.Graph.Input.Single(i => i.Name == input);
        foreach (int d in dims) vi.Type.TensorType.Shape.Dim[d].ClearDimValue();
        foreach (var o in model.Graph.Output)
            if (o.Type?.TensorType?.Shape is { } shape)
                foreach (var d in shape.Dim) d.ClearDimValue();
    }

    // ---- Reshape, Flatten, Squeeze, Unsqueeze, Transpose ------------------------------------

    [Theory]
    [InlineData(new long[] { 4, -1 })]
    [InlineData(new long[] { 0, 12 })]
    [InlineData(new long[] { 24 })]
    [InlineData(new long[] { 2, 2, 1, 6 })]
    public void Reshape(long[] shape)
    {
        GradCheck.Op("Reshape", ["x", "s"], X([2, 3, 4]), C(("s", I(shape))));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(-1)]
    public void Flatten(int axis)
    {
        GradCheck.Op("Flatten", ["x"], X([2, 3, 4]), attributes: Attributes.Int("axis", axis));
    }

    [Fact]
    public void SqueezeWithAxesAndWithout()
    {
        GradCheck.Op("Squeeze", ["x", "a"], X([2, 1, 3, 1]), C(("a", I(1))));
        GradCheck.Op("Squeeze", ["x", "a"], X([2, 1, 3, 1]), C(("a", I(-1, 1))));
        GradCheck.Op("Squeeze", ["x"], X([1, 2, 1, 3, 1]));
    }

    [Fact]
    public void Unsqueeze()
    {
        GradCheck.Op("Unsqueeze", ["x", "a"], X([2, 3]), C(("a", I(0, -1))));
        GradCheck.Op("Unsqueeze", ["x", "a"], X([2, 3]), C(("a", I(1))));
    }

    [Fact]
    public void Transpose()
    {
        GradCheck.Op("Transpose", ["x"], X([2, 3, 4])); // default: reverse the axes
        GradCheck.Op("Transpose", ["x"], X([2, 3, 4]), attributes: Attributes.Ints("perm", [1, 2, 0]));
        GradCheck.Op("Transpose", ["x"], X([2, 3, 4, 5]), attributes: Attributes.Ints("perm", [0, 2, 3, 1]));
    }

    [Fact]
    public void ReshapeOfDynamicBatchUsesRuntimeShape()
    {
        var inputs = X([3, 2, 4]);
        var model = TestModels.SingleOp("Reshape", 17, ["x", "s"], inputs, C(("s", I(0, -1))));
        Dynamic(model, "x", 0, 2);
        GradCheck.Check(model, inputs, ["x"]);
    }

    // ---- Concat / Split ---------------------------------------------------------------------

    [Theory]
    [InlineData(1)]
    [InlineData(-1)]
    public void ConcatOfDifferentSizes(int axis)
    {
        var inputs = new Dictionary<string, TestTensor> { ["a"] = Random(D, [2, 1], 1), ["b"] = Random(D, [2, 3], 2), ["c"] = Random(D, [2, 2], 3) };
        GradCheck.Op("Concat", ["a", "b", "c"], inputs, attributes: Attributes.Int("axis", axis));
        // The same tensor twice, and a constant operand that needs no gradient.
        GradCheck.Op("Concat", ["b", "k", "b"], new Dictionary<string, TestTensor> { ["b"] = Random(D, [2, 3], 2) },
            C(("k", Random(D, [2, 2], 4))), attributes: Attributes.Int("axis", axis));
    }

    [Fact]
    public void ConcatWithDynamicSizesSplitsByRuntimeShapes()
    {
        var inputs = new Dictionary<string, TestTensor> { ["a"] = Random(D, [3, 2], 1), ["b"] = Random(D, [1, 2], 2), ["c"] = Random(D, [2, 2], 3) };
        var model = TestModels.SingleOp("Concat", 17, ["a", "b", "c"], inputs, attributes: Attributes.Int("axis", 0));
        Dynamic(model, "a", 0);
        Dynamic(model, "c", 0, 1);
        GradCheck.Check(model, inputs, ["a", "b", "c"]);
    }

    [Fact]
    public void SplitBySizes()
    {
        GradCheck.Op("Split", ["x", "s"], X([2, 6]), C(("s", I(1, 3, 2))), outputs: 3, attributes: Attributes.Int("axis", 1));
        GradCheck.Op("Split", ["x", "s"], X([4, 3]), C(("s", I(3, 1))), outputs: 2, attributes: Attributes.Int("axis", -2));
    }

    [Fact]
    public void SplitEqualWithoutSizes()
    {
        // Opsets 13 and 17 split evenly by the output count; 18+ by num_outputs, the last chunk smaller.
        GradCheck.Op("Split", ["x"], X([2, 6]), outputs: 3, opsets: [13, 17], attributes: Attributes.Int("axis", 1));
        GradCheck.Op("Split", ["x"], X([2, 5]), outputs: 3, opsets: [18, 20], attributes: [Attributes.Int("axis", 1), Attributes.Int("num_outputs", 3)]);
    }

    [Fact]
    public void SplitWithUnusedOutputsGetsZeros()
    {
        var options = new GradCheck.Options { Outputs = ["y0", "y2"] };
        GradCheck.Op("Split", ["x", "s"], X([5, 2]), C(("s", I(2, 1, 2))), outputs: 3, options: options);
        GradCheck.Op("Split", ["x"], X([3, 2]), outputs: 3, opsets: [20], options: options with { Outputs = ["y1"] },
            attributes: Attributes.Int("num_outputs", 3));
    }

    // ---- Slice ------------------------------------------------------------------------------

    public static TheoryData<long[], long[], long[]?, long[]?> Slices => new()
    {
        { [1], [3], [1], null },                                 // plain step-1 slice
        { [0, 1], [2, 4], null, null },                          // no axes input: leading axes
        { [-3, -4], [-1, Big], [1, -1], null },                  // negative bounds, negative axis, end past the dim
        { [-100], [100], [2], [1] },                             // clamped on both sides
        { [1], [Big], [2], [2] },                                // step 2
        { [-1], [Small], [1], [-1] },                            // reversed (torch.flip)
        { [4, 2], [0, Small], [2, 0], [-2, -1] },                // negative steps on two axes
        { [0, 3], [3, 0], [0, 1], [3, 1] },                      // step larger than the remaining dim; empty slice
    };

    [Theory]
    [MemberData(nameof(Slices))]
    public void Slice(long[] starts, long[] ends, long[]? axes, long[]? steps)
    {
        var constants = C(("st", I(starts)), ("en", I(ends)));
        var order = new List<string> { "x", "st", "en" };
        if (axes is not null || steps is not null) { constants["ax"] = I(axes ?? Enumerable.Range(0, starts.Length).Select(k => (long)k).ToArray()); order.Add("ax"); }
        if (steps is not null) { constants["sp"] = I(steps); order.Add("sp"); }
        // An empty slice takes nothing from x: its gradient is zero, and the check says so.
        long[] shape = [3, 4, 5];
        bool empty = starts.Where((s, k) => ShapeInference.SliceLength(shape[(int)((axes?[k] ?? k) + 3) % 3], s, ends[k], steps?[k] ?? 1) == 0).Any();
        GradCheck.Op("Slice", order, X(shape), constants, options: new GradCheck.Options { ZeroGradient = empty ? ["x"] : [] });
    }

    [Fact]
    public void SliceWithDynamicDimsAndBounds()
    {
        // The sliced axis is dynamic and the bounds come from graph inputs: the index-grid path.
        var inputs = new Dictionary<string, TestTensor>
        {
            ["x"] = Random(D, [3, 6], 1), ["st"] = I(-5), ["en"] = I(Big), ["ax"] = I(1), ["sp"] = I(2),
        };
        var model = TestModels.SingleOp("Slice", 17, ["x", "st", "en", "ax", "sp"], inputs);
        Dynamic(model, "x", 0, 1);
        GradCheck.Check(model, inputs, ["x"]);
        var ones = new Dictionary<string, TestTensor>(inputs) { ["sp"] = I(1) };
        GradCheck.Check(TestModels.SingleOp("Slice", 17, ["x", "st", "en", "ax", "sp"], ones), ones, ["x"]);
    }

    // ---- Gather and friends -----------------------------------------------------------------

    public static TheoryData<int, long[], long[]> Gathers => new()
    {
        { 0, [2, 3], [0, 2, 2, -1, 0, 3] },          // duplicate and negative rows (embedding lookup)
        { 0, [], [-2] },                             // scalar index
        { 1, [4], [1, 1, -1, 0] },                   // middle axis, duplicates
        { -1, [2, 2], [4, 0, -5, 4] },               // last axis
        { 2, [], [3] },                              // scalar index, last axis
    };

    [Theory]
    [MemberData(nameof(Gathers))]
    public void Gather(int axis, long[] idxShape, long[] idx)
    {
        GradCheck.Op("Gather", ["x", "i"], X([4, 3, 5]), C(("i", Int64(idxShape, idx))), attributes: Attributes.Int("axis", axis));
    }

    [Fact]
    public void GatherWithRuntimeIndicesAndDynamicRows()
    {
        // Indices fed at run time (values unknown statically, some negative) into a table with a dynamic row count.
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(D, [5, 3], 1), ["i"] = Int64([2, 3], 1, -1, 1, 4, -5, 0) };
        var model = TestModels.SingleOp("Gather", 17, ["x", "i"], inputs);
        Dynamic(model, "x", 0);
        GradCheck.Check(model, inputs, ["x"]);
        var columns = new Dictionary<string, TestTensor> { ["x"] = Random(D, [2, 3], 1), ["i"] = Int64([2, 2], 2, -1, -3, 2) };
        var byColumn = TestModels.SingleOp("Gather", 17, ["x", "i"], columns, attributes: Attributes.Int("axis", 1));
        Dynamic(byColumn, "x", 0, 1);
        GradCheck.Check(byColumn, columns, ["x"]);
        var points = new Dictionary<string, TestTensor> { ["x"] = Random(D, [3, 4], 1), ["i"] = Int64([3, 2], -1, 0, 2, -4, -1, 0) };
        var nd = TestModels.SingleOp("GatherND", 17, ["x", "i"], points);
        Dynamic(nd, "x", 0);
        GradCheck.Check(nd, points, ["x"]);
    }

    [Fact]
    public void GatherDuplicatesAccumulate()
    {
        // d/dx Σ_k r_k x[i_k] = Σ of the r_k that picked the row: checked exactly, not only by finite differences.
        var model = TestModels.SingleOp("Gather", 17, ["x", "i"], X([3, 2]), C(("i", I(1, 1, 1, 0))));
        var grad = GradientGraph.Build(model, ["y0"], ["x"]);
        using var ort = new Ort(grad);
        var seed = Double([4, 2], [1, 2, 3, 4, 5, 6, 7, 8]);
        var g = ort.Run(new Dictionary<string, TestTensor> { ["x"] = X([3, 2])["x"], ["y0_seed"] = seed }, ["x_grad"])["x_grad"];
        Assert.Equal([7.0, 8, 9, 12, 0, 0], g.Data);
    }

    [Fact]
    public void GatherElementsAndGatherND()
    {
        GradCheck.Op("GatherElements", ["x", "i"], X([3, 4]), C(("i", Int64([3, 2], 1, 1, 0, -1, 3, 3))), attributes: Attributes.Int("axis", 1));
        GradCheck.Op("GatherElements", ["x", "i"], X([3, 4]), C(("i", Int64([2, 4], 0, 2, 2, 1, 2, 0, 0, 1))));
        GradCheck.Op("GatherND", ["x", "i"], X([3, 4, 2]), C(("i", Int64([3, 2], 0, 1, 2, 3, 0, 1))));
        GradCheck.Op("GatherND", ["x", "i"], X([3, 4]), C(("i", Int64([2, 2, 1], 1, 2, 1, 0))));
        GradCheck.Op("GatherND", ["x", "i"], X([3, 4]), C(("i", Int64([3, 2], -1, 0, 2, -4, 2, 0))));
    }

    // ScatterElements and ScatterND: what the Gather, MaxPool and Slice rules emit, so the second
    // reverse pass of the JVP graph differentiates them (w.r.t. data and updates).
    [Theory]
    [InlineData("none")]
    [InlineData("add")]
    public void ScatterElements(string reduction)
    {
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(D, [3, 4], 1), ["u"] = Random(D, [3, 2], 2) };
        // Unique positions without a reduction (the result is undefined otherwise); repeats with add.
        var idx = reduction == "none" ? Int64([3, 2], 1, 3, 0, -1, 2, 0) : Int64([3, 2], 1, 1, 0, -1, 3, 3);
        var attrs = new[] { Attributes.Int("axis", 1), Attributes.String("reduction", reduction) };
        GradCheck.Op("ScatterElements", ["x", "i", "u"], inputs, C(("i", idx)), opsets: [18], attributes: attrs);
        Assert.ThrowsAny<Exception>(() => GradCheck.Op("ScatterElements", ["x", "i", "u"], inputs, C(("i", idx)), opsets: [18],
            options: new GradCheck.Options { Registry = GradCheck.Zeroed("ScatterElements") }, attributes: attrs));
    }

    [Theory]
    [InlineData("none")]
    [InlineData("add")]
    public void ScatterND(string reduction)
    {
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(D, [4, 3, 2], 1), ["u"] = Random(D, [3, 2], 2) };
        var idx = reduction == "none" ? Int64([3, 2], 0, 1, 3, 2, 2, 0) : Int64([3, 2], 0, 1, 3, 2, 0, 1);
        var attrs = new[] { Attributes.String("reduction", reduction) };
        GradCheck.Op("ScatterND", ["x", "i", "u"], inputs, C(("i", idx)), opsets: [18], attributes: attrs);
        Assert.ThrowsAny<Exception>(() => GradCheck.Op("ScatterND", ["x", "i", "u"], inputs, C(("i", idx)), opsets: [18],
            options: new GradCheck.Options { Registry = GradCheck.Zeroed("ScatterND") }, attributes: attrs));
        // Only the updates: rows of the table (embedding gradient layout).
        var rows = new Dictionary<string, TestTensor> { ["x"] = Random(D, [5, 3], 3), ["u"] = Random(D, [2, 2, 3], 4) };
        GradCheck.Op("ScatterND", ["x", "i", "u"], rows, C(("i", Int64([2, 2, 1], 4, 0, 4, 2))), opsets: [18], attributes: Attributes.String("reduction", "add"));
    }

    [Fact]
    public void ScatterWithMulReductionIsRefused()
    {
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(D, [3, 4], 1), ["u"] = Random(D, [3, 2], 2) };
        var model = TestModels.SingleOp("ScatterElements", 18, ["x", "i", "u"], inputs, C(("i", Int64([3, 2], 1, 3, 0, 2, 2, 0))), 1,
            Attributes.Int("axis", 1), Attributes.String("reduction", "mul"));
        var e = Assert.Throws<UnsupportedOpException>(() => GradientGraph.Build(model, ["y0"], ["x", "u"]));
        Assert.Contains("reduction=\"mul\"", e.Message);
    }

    [Fact]
    public void FloatEmbeddingSliceAndReflectPad()
    {
        var table = new Dictionary<string, TestTensor> { ["x"] = Random(1, [6, 4], 1) };
        GradCheck.Op("Gather", ["x", "i"], table, C(("i", Int64([2, 3], 5, 0, 5, 2, -1, 3))));
        GradCheck.Op("Slice", ["x", "st", "en", "ax", "sp"], table, C(("st", I(-1)), ("en", I(Small)), ("ax", I(0)), ("sp", I(-2))));
        GradCheck.Op("Pad", ["x", "p"], table, C(("p", I(1, 2, 3, 1))), attributes: Attributes.String("mode", "reflect"));
    }

    // ---- Trilu --------------------------------------------------------------------------------

    [Theory]
    [InlineData(1, null)]
    [InlineData(1, 1L)]
    [InlineData(0, 0L)]
    [InlineData(0, -1L)]
    public void Trilu(int upper, long? k)
    {
        // batched [2, 3, 4] (the triangle is over the last two axes), also with a dynamic batch axis
        var inputs = X([2, 3, 4]);
        var consts = k is { } kk ? C(("k", Int64([], [kk]))) : null;
        string[] order = k is null ? ["x"] : ["x", "k"];
        GradCheck.Op("Trilu", order, inputs, consts, opsets: [14, 17, 20], attributes: Attributes.Int("upper", upper));
        var all = new Dictionary<string, TestTensor>(inputs);
        if (consts is not null) foreach (var (n, v) in consts) all[n] = v;
        var model = TestModels.SingleOp("Trilu", 17, order, all, attributes: Attributes.Int("upper", upper));
        Dynamic(model, "x", 0);
        GradCheck.Check(model, all, ["x"]);
    }

    // ---- Resize (float32: ONNX Runtime has no float64 Resize; linear in x, so a large step is exact) ----

    private static readonly GradCheck.Options ResizeCheck = new() { Step = 0.25, Tolerance = 1e-4, MaxElementsPerInput = 64 };

    private static void ResizeCase(long[] shape, double[]? scales, long[]? sizes, params AttributeProto[] attributes)
    {
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(1, shape, 3) };
        var consts = scales is not null ? C(("s", Float([scales.Length], scales))) : C(("z", I(sizes!)));
        string[] order = scales is not null ? ["x", "", "s"] : ["x", "", "", "z"];
        GradCheck.Op("Resize", order, inputs, consts, opsets: [13, 17, 20], wrt: ["x"], options: ResizeCheck, attributes: attributes);
    }

    [Fact]   // nn.Upsample(scale_factor=2) as torch exports it
    public void ResizeNearestUpsample() => ResizeCase([2, 2, 3, 4], [1, 1, 2, 2], null,
        Attributes.String("mode", "nearest"), Attributes.String("coordinate_transformation_mode", "asymmetric"), Attributes.String("nearest_mode", "floor"));

    [Fact]   // F.interpolate(mode="bilinear", align_corners=False), a non-integer scale
    public void ResizeLinearPytorchHalfPixel() => ResizeCase([1, 2, 4, 5], [1, 1, 2, 1.6], null,
        Attributes.String("mode", "linear"), Attributes.String("coordinate_transformation_mode", "pytorch_half_pixel"));

    [Fact]   // bilinear with align_corners=True, to given sizes (down along one axis, up along the other)
    public void ResizeLinearAlignCornersToSizes() => ResizeCase([2, 1, 5, 3], null, [2, 1, 3, 7],
        Attributes.String("mode", "linear"), Attributes.String("coordinate_transformation_mode", "align_corners"));

    [Fact]   // bicubic downsampling, half_pixel (the default), 1-D signal [N, C, L] too
    public void ResizeCubicDown()
    {
        ResizeCase([1, 2, 6, 6], [1, 1, 0.5, 0.5], null, Attributes.String("mode", "cubic"));
        ResizeCase([2, 3, 7], [1, 1, 1.5], null, Attributes.String("mode", "linear"));
    }

    [Fact]
    public void ResizeWithComputedScalesOrACroppedRegionIsRefusedNamingTheNode()
    {
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(1, [1, 1, 2, 2], 3), ["s"] = Float([4], [1, 1, 2, 2]) };
        var model = TestModels.SingleOp("Resize", 17, ["x", "", "s"], inputs);
        var err = Assert.ThrowsAny<OnnxKfacException>(() => GradCheck.Check(model, inputs, ["x"]));
        Assert.Contains("resize0", err.Message);
        Assert.Contains("constants", err.Message);
    }

    // ---- Expand, Tile, Pad -------------------------------------------------------------------

    [Theory]
    [InlineData(new long[] { 3, 1 }, new long[] { 2, 3, 4 })]
    [InlineData(new long[] { 4 }, new long[] { 2, 3, 1 })]
    [InlineData(new long[] { 2, 3 }, new long[] { 1, 3 })]
    [InlineData(new long[] { 2, 1 }, new long[] { 3, 1, 1 })]
    [InlineData(new long[] { 2, 3 }, new long[] { 2, 3 })]
    public void Expand(long[] shape, long[] target)
    {
        GradCheck.Op("Expand", ["x", "s"], X(shape), C(("s", I(target))));
    }

    [Fact]
    public void ExpandWithDynamicShapes()
    {
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(D, [3, 1], 1), ["s"] = I(2, 3, 4) };
        var model = TestModels.SingleOp("Expand", 17, ["x", "s"], inputs);
        Dynamic(model, "x", 0, 1);
        GradCheck.Check(model, inputs, ["x"]);
    }

    [Theory]
    [InlineData(new long[] { 2, 1 })]
    [InlineData(new long[] { 1, 3 })]
    [InlineData(new long[] { 3, 2 })]
    public void Tile(long[] repeats)
    {
        GradCheck.Op("Tile", ["x", "r"], X([2, 3]), C(("r", I(repeats))));
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(D, [2, 3], 1), ["r"] = I(repeats) };
        var model = TestModels.SingleOp("Tile", 17, ["x", "r"], inputs);
        Dynamic(model, "x", 0);
        GradCheck.Check(model, inputs, ["x"]);
    }

    [Theory]
    [InlineData("constant", new long[] { 1, 0, 2, 1 })]
    [InlineData("constant", new long[] { -1, 1, 0, -2 })]
    [InlineData("reflect", new long[] { 2, 1, 1, 2 })]
    [InlineData("edge", new long[] { 1, 3, 2, 0 })]
    public void Pad(string mode, long[] pads)
    {
        GradCheck.Op("Pad", ["x", "p"], X([3, 4]), C(("p", I(pads))), attributes: Attributes.String("mode", mode));
        GradCheck.Op("Pad", ["x", "p", "v"], X([3, 4]), C(("p", I(pads)), ("v", Double([], [0.5]))), attributes: Attributes.String("mode", mode));
    }

    [Fact]
    public void PadWrapAndAxes()
    {
        GradCheck.Op("Pad", ["x", "p"], X([3, 4]), C(("p", I(2, 5, 1, 3))), opsets: [19, 20], attributes: Attributes.String("mode", "wrap"));
        GradCheck.Op("Pad", ["x", "p", "", "a"], X([2, 3, 4]), C(("p", I(1, -1, 2, 0)), ("a", I(-1, 1))), opsets: [18, 20]);
        GradCheck.Op("Pad", ["x", "p", "", "a"], X([2, 3, 4]), C(("p", I(1, 2)), ("a", I(2))), opsets: [18, 20],
            attributes: Attributes.String("mode", "reflect"));
    }

    [Fact]
    public void PadWithRuntimePads()
    {
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(D, [3, 4], 1), ["p"] = I(1, -1, 0, 2) };
        var model = TestModels.SingleOp("Pad", 17, ["x", "p"], inputs);
        Dynamic(model, "x", 0);
        GradCheck.Check(model, inputs, ["x"]);
    }

    // ---- exporter shape arithmetic ------------------------------------------------------------

    [Theory]
    [InlineData(13)]
    [InlineData(17)]
    public void DynamicBatchMultiHeadReshapesCarryGradients(int opset)
    {
        // torch's dynamic-batch export of attention head splitting:
        //   b = Unsqueeze(Gather(Shape(x), 0)); s = Unsqueeze(Gather(Shape(x), 1))
        //   q = Transpose(Reshape(x @ w, Concat(b, s, [H], [Dh])), [0, 2, 1, 3])
        //   y = Reshape(Transpose((q @ kᵀ) @ q, [0, 2, 1, 3]), Concat(b, s, [E]))
        const long S = 3, H = 2, Dh = 2, E = H * Dh;
        var nodes = new List<NodeProto>
        {
            Node("MatMul", ["x", "w"], ["proj"]),
            Node("Shape", ["x"], ["shp"]),
            ConstNode("i0", [], 0), ConstNode("i1", [], 1), ConstNode("ax0", [1], 0),
            ConstNode("heads", [1], H), ConstNode("hdim", [1], Dh), ConstNode("embed", [1], E),
            Node("Gather", ["shp", "i0"], ["b"], Attributes.Int("axis", 0)),
            Node("Gather", ["shp", "i1"], ["s"], Attributes.Int("axis", 0)),
            Node("Unsqueeze", ["b", "ax0"], ["b1"]),
            Node("Unsqueeze", ["s", "ax0"], ["s1"]),
            Node("Concat", ["b1", "s1", "heads", "hdim"], ["split_shape"], Attributes.Int("axis", 0)),
            Node("Reshape", ["proj", "split_shape"], ["q4"]),
            Node("Transpose", ["q4"], ["q"], Attributes.Ints("perm", [0, 2, 1, 3])),
            Node("Transpose", ["q4"], ["kt"], Attributes.Ints("perm", [0, 2, 3, 1])),
            Node("MatMul", ["q", "kt"], ["scores"]),
            Node("MatMul", ["scores", "q"], ["mixed"]),
            Node("Transpose", ["mixed"], ["merged4"], Attributes.Ints("perm", [0, 2, 1, 3])),
            Node("Concat", ["b1", "s1", "embed"], ["merge_shape"], Attributes.Int("axis", 0)),
            Node("Reshape", ["merged4", "merge_shape"], ["y"]),
        };
        var inputs = new Dictionary<string, TestTensor> { ["x"] = Random(D, [2, S, E], 1), ["w"] = Random(D, [E, E], 2) };
        var model = TestModels.Graph(opset, nodes, inputs, null, ["y"]);
        Dynamic(model, "x", 0);

        var infos = ShapeInference.Infer(model);
        Assert.Equal([TensorInfo.UnknownValue, S, H, Dh], infos["split_shape"].Value!);
        Assert.Equal([-1, S, H, Dh], infos["q4"].Shape!);
        Assert.Equal([-1, S, E], infos["y"].Shape!);

        GradCheck.Check(model, inputs, ["x", "w"]);
        // The same graph runs with another batch size.
        var three = new Dictionary<string, TestTensor> { ["x"] = Random(D, [3, S, E], 3), ["w"] = inputs["w"] };
        GradCheck.Check(model, three, ["x", "w"]);
    }

    [Fact]
    public void ShapeIndicesAndPadsAreNotDifferentiated()
    {
        // Shape feeds only Reshape's shape input: the gradient flows through the data input alone.
        var nodes = new[]
        {
            Node("Shape", ["x"], ["shp"]),
            Node("Reshape", ["x", "shp"], ["y"]),
        };
        var inputs = X([2, 3]);
        var model = TestModels.Graph(17, nodes, inputs, null, ["y"]);
        GradCheck.Check(model, inputs, ["x"]);
        var registry = GradientRegistry.Default;
        foreach (var (op, inputIndex) in new[] { ("Reshape", 1), ("Slice", 1), ("Slice", 4), ("Gather", 1), ("Pad", 1), ("Split", 1), ("Expand", 1), ("Tile", 1) })
            Assert.False(registry.Find(op)!.IsDifferentiable(inputIndex), $"{op} input {inputIndex}");
    }
}
