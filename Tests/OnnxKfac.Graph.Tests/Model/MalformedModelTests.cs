using Google.Protobuf;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Training;

namespace OnnxKfac.Graph.Tests.ModelIO;

/// <summary>Minimal reproductions of what the fuzz test found: malformed models end in an OnnxKfacException, never a crash.</summary>
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

    private static void BuildFailsCleanly(ModelProto m, bool patches = false)
    {
        var parsed = OnnxModelIO.Parse(m.ToByteArray(), "model");
        foreach (var kind in Enum.GetValues<LossKind>())
        {
            try { TrainingGraphBuilder.Build(parsed, new TrainingGraphOptions(new LossOptions(kind)) { ConvPatches = patches, SampledFisher = patches }); }
            catch (OnnxKfacException e) { Assert.DoesNotContain('\n', e.Message); }
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
        BuildFailsCleanly(Model([new NodeProto { OpType = "Gemm", Name = "gemm", Input = { "x", "w" }, Output = { "y" } }],
            [TensorData.FromFloats("w", [4], new float[4])]));

    [Fact]
    public void MatMulWithScalarOperand() =>
        BuildFailsCleanly(Model([new NodeProto { OpType = "MatMul", Name = "mm", Input = { "s", "w" }, Output = { "y" } }],
            [TensorData.FromFloats("s", [], [2f]), TensorData.FromFloats("w", [4, 3], new float[12])]));

    [Fact]
    public void MatMulFollowedByAddWithOneInput() =>
        BuildFailsCleanly(Model(
            [
                new NodeProto { OpType = "MatMul", Name = "mm", Input = { "x", "w" }, Output = { "h" } },
                new NodeProto { OpType = "Add", Name = "add", Input = { "h" }, Output = { "y" } },
            ],
            [TensorData.FromFloats("w", [4, 3], new float[12])]));

    [Fact]
    public void LayerOpsWithMissingInputs() =>
        BuildFailsCleanly(Model(
            [
                new NodeProto { OpType = "MatMul", Name = "mm", Input = { "x", "w" }, Output = { "h" } },
                new NodeProto { OpType = "Gemm", Name = "gemm", Input = { "h" }, Output = { "y" } },
            ],
            [TensorData.FromFloats("w", [4, 3], new float[12])]));

    [Fact]
    public void ConvWithZeroStride()
    {
        var m = Model([new NodeProto { OpType = "Conv", Name = "conv", Input = { "x4", "w" }, Output = { "y" }, Attribute = { Attributes.Ints("strides", [0, 0]) } }],
            [TensorData.FromFloats("w", [2, 1, 3, 3], new float[18])]);
        m.Graph.Input[0] = ValueInfos.Tensor("x4", 1, [1, 1, 5, 5]);
        Assert.NotNull(ShapeInference.Infer(m)); // inference leaves the output unknown instead of dividing by zero
        BuildFailsCleanly(m);
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
    public void LayerNormalizationWithHugeAxis()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        BuildFailsCleanly(Model(
            [new NodeProto { OpType = "LayerNormalization", Name = "ln", Input = { "x", "scale", "bias" }, Output = { "y" }, Attribute = { Attributes.Int("axis", -(1L << 33) + 3) } }],
            [TensorData.FromFloats("scale", [4], [1, 1, 1, 1]), TensorData.FromFloats("bias", [4], [0, 0, 0, 0])]));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"took {watch.Elapsed}");
    }

    [Theory]
    [InlineData(0L, 5L)]
    [InlineData(1L, 1L)]
    public void TransposeWithInvalidPerm(long p0, long p1) =>
        BuildFailsCleanly(Model(
            [
                new NodeProto { OpType = "MatMul", Name = "mm", Input = { "x", "w" }, Output = { "h" } },
                new NodeProto { OpType = "Transpose", Name = "t", Input = { "h" }, Output = { "y" }, Attribute = { Attributes.Ints("perm", [p0, p1]) } },
            ],
            [TensorData.FromFloats("w", [4, 3], new float[12])]));

    [Fact]
    public void GradientOnlyIntoAnOutputTheOpDoesNotHave() =>
        BuildFailsCleanly(Model(
            [
                new NodeProto { OpType = "Gemm", Name = "gemm", Input = { "x", "w" }, Output = { "g0", "g1" } },
                new NodeProto { OpType = "Identity", Name = "id", Input = { "g1" }, Output = { "y" } },
            ],
            [TensorData.FromFloats("w", [4, 3], new float[12])]));

    [Fact]
    public void ConvPatchesWithHugeKernel()
    {
        var m = Model([new NodeProto { OpType = "Conv", Name = "conv", Input = { "x4", "w" }, Output = { "y" }, Attribute = { Attributes.Ints("kernel_shape", [4096, 4096]) } }],
            [TensorData.FromFloats("w", [2, 1, 3, 3], new float[18])]);
        m.Graph.Input[0] = ValueInfos.Tensor("x4", 1, [1, 1, 5, 5]);
        BuildFailsCleanly(m, patches: true);
    }
}
