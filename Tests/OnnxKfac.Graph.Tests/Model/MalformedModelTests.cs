using Google.Protobuf;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Graph.Tests.ModelIO;

/// <summary>
/// Minimal reproductions of what the fuzz test found. Each case states what it expects: a
/// one-line <see cref="OnnxKfacException"/> naming the node at fault, or a valid training graph.
/// </summary>
public class MalformedModelTests
{
    private static ModelProto Model(IEnumerable<NodeProto> nodes, IEnumerable<TensorProto> initializers, string output = "y")
    {
        var g = new GraphProto { Name = "malformed" };
        g.Input.Add(ValueInfos.Tensor("x", 1, [2, 4]));
        g.Initializer.Add(initializers);
        g.Node.Add(nodes);
        g.Output.Add(new ValueInfoProto { Name = output });
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return m;
    }

    private static TrainingGraphOptions Options(LossKind kind, bool patches) =>
        new(new LossOptions(kind)) { ConvPatches = patches, SampledFisher = patches };

    /// <summary>Every loss refuses the model with a one-line <see cref="OnnxKfacException"/> naming the node (and saying why).</summary>
    private static void RefusedNaming(ModelProto m, string node, string why, bool patches = false)
    {
        var parsed = OnnxModelIO.Parse(m.ToByteArray(), "model");
        foreach (var kind in Enum.GetValues<LossKind>())
        {
            var e = Assert.ThrowsAny<OnnxKfacException>(() => TrainingGraphBuilder.Build(parsed, Options(kind, patches)));
            Assert.DoesNotContain('\n', e.Message);
            Assert.Contains($"'{node}'", e.Message);
            Assert.Contains(why, e.Message);
        }
    }

    /// <summary>Every loss builds a training graph that ONNX Runtime loads.</summary>
    private static void BuildsValidGraph(ModelProto m)
    {
        var parsed = OnnxModelIO.Parse(m.ToByteArray(), "model");
        foreach (var kind in Enum.GetValues<LossKind>())
        {
            var built = TrainingGraphBuilder.Build(parsed, Options(kind, patches: false));
            using var session = new Support.Ort(built.Model);
            Assert.Contains(built.Manifest.Loss.Loss, session.OutputNames);
        }
    }

    [Theory]
    [InlineData(-1L)]
    [InlineData(long.MaxValue)]
    public void InitializerWithImpossibleShapeIsRefusedOnLoad(long dim)
    {
        var w = TensorData.FromFloats("w", [4, 3], new float[12]);
        w.Dims[1] = dim;
        var m = Model([new NodeProto { OpType = "MatMul", Input = { "x", "w" }, Output = { "y" } }], [w, TensorData.FromFloats("v", [4, 4], new float[16])]);
        if (dim == long.MaxValue) m.Graph.Initializer[0].Dims.Add(4); // the element count overflows
        var e = Assert.Throws<OnnxKfacException>(() => OnnxModelIO.Parse(m.ToByteArray(), "model.onnx"));
        Assert.Contains("initializer 'w' has an invalid shape", e.Message);
    }

    [Fact]
    public void GemmWithVectorWeight() =>
        RefusedNaming(Model([new NodeProto { OpType = "Gemm", Name = "gemm", Input = { "x", "w" }, Output = { "y" } }],
            [TensorData.FromFloats("w", [4], new float[4])]), "gemm", "'w' has rank 1");

    [Fact]
    public void GemmWithVectorBiasIsValid() =>
        BuildsValidGraph(Model([new NodeProto { OpType = "Gemm", Name = "gemm", Input = { "x", "w", "b" }, Output = { "y" } }],
            [TensorData.FromFloats("w", [4, 3], new float[12]), TensorData.FromFloats("b", [3], new float[3])], output: "y"));

    [Fact]
    public void MatMulWithScalarOperand() =>
        RefusedNaming(Model([new NodeProto { OpType = "MatMul", Name = "mm", Input = { "s", "w" }, Output = { "y" } }],
            [TensorData.FromFloats("s", [], [2f]), TensorData.FromFloats("w", [4, 3], new float[12])]), "mm", "'s' is a scalar");

    [Fact]
    public void MatMulFollowedByAddWithOneInput() =>
        RefusedNaming(Model(
            [
                new NodeProto { OpType = "MatMul", Name = "mm", Input = { "x", "w" }, Output = { "h" } },
                new NodeProto { OpType = "Add", Name = "add", Input = { "h" }, Output = { "y" } },
            ],
            [TensorData.FromFloats("w", [4, 3], new float[12])]), "add", "takes at least 2");

    [Fact]
    public void LayerOpsWithMissingInputs() =>
        RefusedNaming(Model(
            [
                new NodeProto { OpType = "MatMul", Name = "mm", Input = { "x", "w" }, Output = { "h" } },
                new NodeProto { OpType = "Gemm", Name = "gemm", Input = { "h" }, Output = { "y" } },
            ],
            [TensorData.FromFloats("w", [4, 3], new float[12])]), "gemm", "takes at least 2");

    [Fact]
    public void ConvWithZeroStride()
    {
        var m = Model([new NodeProto { OpType = "Conv", Name = "conv", Input = { "x4", "w" }, Output = { "y" }, Attribute = { Attributes.Ints("strides", [0, 0]) } }],
            [TensorData.FromFloats("w", [2, 1, 3, 3], new float[18])]);
        m.Graph.Input[0] = ValueInfos.Tensor("x4", 1, [1, 1, 5, 5]);
        var e = Assert.Throws<OnnxKfacException>(() => ShapeInference.Infer(m)); // not a division by zero
        Assert.Contains("node 'conv' (Conv)", e.Message);
        RefusedNaming(m, "conv", "must be positive");
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(1L << 40)]
    public void OpsetVersionOutOfRangeIsRefusedOnLoad(long version)
    {
        var m = Model([new NodeProto { OpType = "MatMul", Input = { "x", "w" }, Output = { "y" } }], [TensorData.FromFloats("w", [4, 3], new float[12])]);
        m.OpsetImport[0].Version = version;
        var e = Assert.Throws<OnnxKfacException>(() => OnnxModelIO.Parse(m.ToByteArray(), "model.onnx"));
        Assert.Contains($"opset_import version {version}", e.Message);
    }

    [Fact]
    public void LayerNormalizationWithHugeAxis() =>
        // Once a near-hang (the axis wrapped around to a huge loop); refused before any work now.
        RefusedNaming(Model(
            [new NodeProto { OpType = "LayerNormalization", Name = "ln", Input = { "x", "scale", "bias" }, Output = { "y" }, Attribute = { Attributes.Int("axis", -(1L << 33) + 3) } }],
            [TensorData.FromFloats("scale", [4], [1, 1, 1, 1]), TensorData.FromFloats("bias", [4], [0, 0, 0, 0])]), "ln", "out of range for rank 2");

    [Theory]
    [InlineData(0L, 5L)]
    [InlineData(1L, 1L)]
    public void TransposeWithInvalidPerm(long p0, long p1) =>
        RefusedNaming(Model(
            [
                new NodeProto { OpType = "MatMul", Name = "mm", Input = { "x", "w" }, Output = { "h" } },
                new NodeProto { OpType = "Transpose", Name = "t", Input = { "h" }, Output = { "y" }, Attribute = { Attributes.Ints("perm", [p0, p1]) } },
            ],
            [TensorData.FromFloats("w", [4, 3], new float[12])]), "t", "is not a permutation");

    [Fact]
    public void GradientOnlyIntoAnOutputTheOpDoesNotHave() =>
        RefusedNaming(Model(
            [
                new NodeProto { OpType = "Gemm", Name = "gemm", Input = { "x", "w" }, Output = { "g0", "g1" } },
                new NodeProto { OpType = "Identity", Name = "id", Input = { "g1" }, Output = { "y" } },
            ],
            [TensorData.FromFloats("w", [4, 3], new float[12])]), "gemm", "has 2 outputs; Gemm has 1");

    [Fact]
    public void ConvPatchesWithHugeKernel()
    {
        var m = Model([new NodeProto { OpType = "Conv", Name = "conv", Input = { "x4", "w" }, Output = { "y" }, Attribute = { Attributes.Ints("kernel_shape", [4096, 4096]) } }],
            [TensorData.FromFloats("w", [2, 1, 3, 3], new float[18])]);
        m.Graph.Input[0] = ValueInfos.Tensor("x4", 1, [1, 1, 5, 5]);
        RefusedNaming(m, "conv", "too large to expand into patches", patches: true);
    }

    /// <summary>What shape inference once swallowed (an index out of range, a bad cast) is now a named error.</summary>
    public static TheoryData<string, string> InferenceErrors => new()
    {
        { "Unsqueeze", "axis 5 is out of range for rank 3" },
        { "Concat", "different ranks" },
        { "Split", "split has 1 value(s) for 2 outputs" },
        { "Gather", "index 7 is out of range for a dimension of 2" },
        { "Slice", "a step is 0" },
        { "Tile", "repeats has 1 value(s) for rank 2" },
        { "Flatten", "axis 3 is out of range for rank 2" },
    };

    [Theory]
    [MemberData(nameof(InferenceErrors))]
    public void ShapeInferenceNamesTheNode(string op, string why)
    {
        var ints = (string name, long[] v) => TensorData.FromInt64s(name, [v.Length], v);
        var (node, inits) = op switch
        {
            "Unsqueeze" => (new NodeProto { Input = { "x", "a" } }, new[] { ints("a", [5]) }),
            "Concat" => (new NodeProto { Input = { "x", "v" }, Attribute = { Attributes.Int("axis", 0) } }, [TensorData.FromFloats("v", [4], new float[4])]),
            "Split" => (new NodeProto { Input = { "x", "s" }, Output = { "y", "z" }, Attribute = { Attributes.Int("axis", 1) } }, [ints("s", [4])]),
            "Gather" => (new NodeProto { Input = { "s", "i" } }, [ints("s", [2, 4]), ints("i", [7])]),
            "Slice" => (new NodeProto { Input = { "x", "b", "e", "a", "st" } }, [ints("b", [0]), ints("e", [1]), ints("a", [0]), ints("st", [0])]),
            "Tile" => (new NodeProto { Input = { "x", "r" } }, [ints("r", [2])]),
            _ => (new NodeProto { Input = { "x" }, Attribute = { Attributes.Int("axis", 3) } }, Array.Empty<TensorProto>()),
        };
        node.OpType = op;
        node.Name = "bad";
        if (node.Output.Count == 0) node.Output.Add("y");
        var m = Model([node], inits);
        var e = Assert.Throws<OnnxKfacException>(() => ShapeInference.Infer(m));
        Assert.Contains($"node 'bad' ({op})", e.Message);
        Assert.Contains(why, e.Message);
    }
}
