using Google.Protobuf;
using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;
using OnnxKfac.Graph.Tests.Support;

namespace OnnxKfac.Graph.Tests.ModelIO;

/// <summary>External data: written and read back exactly, and never read from outside the model's folder (CVE-2024-27318).</summary>
public class ExternalDataTests
{
    [Fact]
    public void SavedWithExternalDataLoadsBackIdenticallyAndRunsTheSame()
    {
        using var dir = new TempFolder();
        var model = ModelFiles.Dense();
        string path = dir["model.onnx"];
        OnnxModelIO.Save(model, path, new SaveOptions { ExternalData = true });
        Assert.True(File.Exists(dir["model.onnx.data"]));
        Assert.Equal(ModelFiles.Dense(), model); // saving did not touch the caller's model

        // On disk the large tensors refer to the data file; small ones stay inline.
        var raw = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        var external = raw.Graph.Initializer.Where(t => t.DataLocation == TensorProto.Types.DataLocation.External).Select(t => t.Name).ToArray();
        Assert.Equal(["w1", "w2"], external);
        Assert.All(raw.Graph.Initializer.Where(t => external.Contains(t.Name)), t =>
        {
            Assert.False(t.HasRawData);
            Assert.Equal("model.onnx.data", t.ExternalData.Single(e => e.Key == "location").Value);
            Assert.Equal(0, long.Parse(t.ExternalData.Single(e => e.Key == "offset").Value) % 4096);
        });

        var loaded = OnnxModelIO.Load(path);
        Assert.Equal(model, loaded);
        Assert.Equal(model.ToByteArray(), loaded.ToByteArray());

        // ONNX Runtime reading the external data itself, and our loaded copy, give the original's outputs.
        var x = ModelFiles.Input();
        var expected = ModelFiles.Run(model, x).Data;
        Assert.Equal(expected, ModelFiles.Run(loaded, x).Data);
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(path);
        using var input = x.ToOrtValue();
        using var runOptions = new Microsoft.ML.OnnxRuntime.RunOptions();
        using var results = session.Run(runOptions, ["x"], [input], ["y"]);
        Assert.Equal(expected, TestTensor.FromOrtValue(results[0]).Data);
    }

    [Fact]
    public void ThresholdKeepsSmallTensorsInline()
    {
        using var dir = new TempFolder();
        OnnxModelIO.Save(ModelFiles.Dense(), dir["m.onnx"], new SaveOptions { ExternalData = true, ExternalThresholdBytes = 1025 });
        var raw = ModelProto.Parser.ParseFrom(File.ReadAllBytes(dir["m.onnx"]));
        Assert.Equal(["w1"], raw.Graph.Initializer.Where(t => t.DataLocation == TensorProto.Types.DataLocation.External).Select(t => t.Name));
        Assert.Equal(ModelFiles.Dense(), OnnxModelIO.Load(dir["m.onnx"]));
    }

    /// <summary>Writes the dense model with w1's data at <paramref name="location"/> (the bytes are put in <paramref name="dataFile"/> when given).</summary>
    private static string WithLocation(TempFolder dir, string location, string? dataFile = null, string offset = "0", string? length = null)
    {
        var model = ModelFiles.Dense();
        var w1 = model.Graph.Initializer.Single(t => t.Name == "w1");
        if (dataFile is not null)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(dataFile)!);
            File.WriteAllBytes(dataFile, w1.RawData.ToByteArray());
        }
        length ??= w1.RawData.Length.ToString();
        w1.ClearRawData();
        w1.DataLocation = TensorProto.Types.DataLocation.External;
        w1.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        w1.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset });
        w1.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length });
        string path = dir["models/model.onnx"];
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    private static OnnxKfacException Refused(string path, params string[] fragments)
    {
        var e = Assert.ThrowsAny<OnnxKfacException>(() => OnnxModelIO.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("'w1'", e.Message);
        foreach (var f in fragments) Assert.Contains(f, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    [Fact]
    public void DataInsideTheFolderIsAccepted()
    {
        using var dir = new TempFolder();
        string path = WithLocation(dir, "weights/w1.bin", dir["models/weights/w1.bin"]);
        Assert.Equal(ModelFiles.Dense(), OnnxModelIO.Load(path));
        path = WithLocation(dir, "./w1.bin", dir["models/w1.bin"]);
        Assert.Equal(ModelFiles.Dense(), OnnxModelIO.Load(path));
    }

    [Fact]
    public void AbsoluteLocationIsRefused()
    {
        using var dir = new TempFolder();
        string outside = dir["secret.bin"];
        string path = WithLocation(dir, outside, outside);
        Refused(path, $"'{outside}'", "absolute path", "model's folder");
        Refused(WithLocation(dir, "/etc/passwd"), "absolute path");
        Refused(WithLocation(dir, "C:\\Windows\\win.ini"), "absolute path");
    }

    [Fact]
    public void ParentTraversalIsRefused()
    {
        using var dir = new TempFolder();
        Refused(WithLocation(dir, "../secret.bin", dir["secret.bin"]), "'../secret.bin'", "'..'");
        Refused(WithLocation(dir, "sub/../../secret.bin", dir["secret.bin"]), "'..'");
        Refused(WithLocation(dir, "sub\\..\\..\\secret.bin", dir["secret.bin"]), "'..'");
    }

    [Fact]
    public void SymbolicLinksAreRefused()
    {
        using var dir = new TempFolder();
        using var elsewhere = new TempFolder();
        string secret = elsewhere["secret.bin"];
        File.WriteAllBytes(secret, ModelFiles.Dense().Graph.Initializer.Single(t => t.Name == "w1").RawData.ToByteArray());
        string path = WithLocation(dir, "link.bin");
        File.CreateSymbolicLink(dir["models/link.bin"], secret);
        Refused(path, "symbolic link");
        // A linked folder on the way is refused too.
        path = WithLocation(dir, "linked/secret.bin");
        Directory.CreateSymbolicLink(dir["models/linked"], elsewhere.Path);
        Refused(path, "symbolic link");
    }

    [Fact]
    public void BrokenReferencesAreClearErrors()
    {
        using var dir = new TempFolder();
        Refused(WithLocation(dir, "missing.bin"), "does not exist");
        Refused(WithLocation(dir, "w1.bin", dir["models/w1.bin"], offset: "4096"), "reads bytes 4096..", "which holds 2048");
        Refused(WithLocation(dir, "w1.bin", dir["models/w1.bin"], offset: "-5"), "offset '-5'", "not a non-negative integer");
        Refused(WithLocation(dir, "w1.bin", dir["models/w1.bin"], length: "lots"), "length 'lots'");
        Refused(WithLocation(dir, ""), "names no location");
    }
}
