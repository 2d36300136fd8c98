using Google.Protobuf;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Tests.ModelIO;

/// <summary>Load + save keeps everything, including fields this version of onnx.proto does not know.</summary>
public class RoundTripTests
{
    [Fact]
    public void KeepsMetadataAndUnknownFieldsByteForByte()
    {
        using var dir = new TempFolder();
        var model = ModelFiles.Dense();
        // An unknown field inside a node (length-delimited) and two at the top level (varint 99, bytes 100).
        var node = model.Graph.Node[0];
        var nodeBytes = node.ToByteArray().Concat(ModelFiles.BytesField(77, [1, 2, 3])).ToArray();
        model.Graph.Node[0] = NodeProto.Parser.ParseFrom(nodeBytes);
        byte[] original = model.ToByteArray()
            .Concat(ModelFiles.VarintField(99, 123456789))
            .Concat(ModelFiles.BytesField(100, "future"u8.ToArray()))
            .ToArray();
        File.WriteAllBytes(dir["in.onnx"], original);

        var loaded = OnnxModelIO.Load(dir["in.onnx"]);
        Assert.Equal("tests", loaded.MetadataProps.Single(p => p.Key == "author").Value);
        Assert.Equal("välue", loaded.MetadataProps.Single(p => p.Key == "ünïcode").Value);
        OnnxModelIO.Save(loaded, dir["out.onnx"]);
        byte[] saved = File.ReadAllBytes(dir["out.onnx"]);
        Assert.Equal(original, saved);
        Assert.Equal(ModelProto.Parser.ParseFrom(original), ModelProto.Parser.ParseFrom(saved));
        Assert.True(saved.AsSpan().IndexOf(ModelFiles.VarintField(99, 123456789)) >= 0);
        Assert.Single(Directory.GetFiles(dir.Path, "out.onnx*")); // atomic: no temporary left

        // ONNX Runtime ignores the unknown fields and computes the same outputs.
        var x = ModelFiles.Input();
        Assert.Equal(ModelFiles.Run(ModelFiles.Dense(), x).Data, ModelFiles.Run(OnnxModelIO.Load(dir["out.onnx"]), x).Data);
    }

    [Fact]
    public void FixtureModelsRoundTripIdentically()
    {
        using var dir = new TempFolder();
        foreach (var fixture in Directory.GetDirectories(Support.Fixture.Root).Order(StringComparer.Ordinal))
        {
            string path = Path.Combine(fixture, "model.onnx");
            var model = OnnxModelIO.Load(path);
            string copy = dir[Path.GetFileName(fixture) + ".onnx"];
            OnnxModelIO.Save(model, copy);
            Assert.Equal(File.ReadAllBytes(path), File.ReadAllBytes(copy));
        }
    }

    [Fact]
    public void SaveReplacesAnExistingFileAtomically()
    {
        using var dir = new TempFolder();
        File.WriteAllText(dir["m.onnx"], "old contents");
        OnnxModelIO.Save(ModelFiles.Dense(), dir["m.onnx"]);
        Assert.Equal(ModelFiles.Dense(), OnnxModelIO.Load(dir["m.onnx"]));
        Assert.Single(Directory.GetFiles(dir.Path));
    }
}
