using Google.Protobuf;
using OnnxKfac.Cli.Common;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Proto;
using DataType = OnnxKfac.Graph.Proto.TensorProto.Types.DataType;

namespace OnnxKfac.Cli.Tests;

public class TensorFileTests
{
    [Fact]
    public void TypedFieldsAndRawDataReadTheSame()
    {
        using var dir = new TempDir();
        var typed = new TensorProto { Name = "t", DataType = (int)DataType.Float };
        typed.Dims.Add([2, 2]);
        typed.FloatData.Add([1f, -2f, 3.5f, 0f]);
        var raw = Models.Floats("t", [2, 2], [1f, -2f, 3.5f, 0f]);
        var a = TensorFile.Read(Models.SaveTensor(typed, dir["a.pb"]), "input");
        var b = TensorFile.Read(Models.SaveTensor(raw, dir["b.pb"]), "input");
        Assert.Equal(a.Raw, b.Raw);
        Assert.Equal([2L, 2L], a.Shape);
        var ints = TensorFile.Read(Models.SaveTensor(Models.Int32s("y", [3], 4, -1, 7), dir["y.pb"]), "target");
        Assert.Equal([4L, -1L, 7L], ints.ToInt64s());
        Assert.Equal([4L, -1L, 7L], ints.AsInt64().ToInt64s());
        var u8 = new TensorProto { Name = "u", DataType = (int)DataType.Uint8, Dims = { 2 }, Int32Data = { 200, 3 } };
        Assert.Equal([200L, 3L], TensorFile.Read(Models.SaveTensor(u8, dir["u.pb"]), "target").ToInt64s());
        var huge = new TensorProto { Name = "h", DataType = (int)DataType.Uint64, Dims = { 1 }, Uint64Data = { ulong.MaxValue } };
        Assert.Equal([long.MaxValue], TensorFile.Read(Models.SaveTensor(huge, dir["h.pb"]), "target").ToInt64s());
    }

    [Fact]
    public void RefusesWhatItCannotFeed()
    {
        using var dir = new TempDir();
        var strings = new TensorProto { Name = "s", DataType = (int)DataType.String, Dims = { 1 }, StringData = { ByteString.CopyFromUtf8("a") } };
        var e = Assert.Throws<OnnxKfacException>(() => TensorFile.Read(Models.SaveTensor(strings, dir["s.pb"]), "input"));
        Assert.Contains("not supported", e.Message);
        var ext = Models.Floats("t", [1], [1f]);
        ext.DataLocation = TensorProto.Types.DataLocation.External;
        e = Assert.Throws<OnnxKfacException>(() => TensorFile.Read(Models.SaveTensor(ext, dir["e.pb"]), "input"));
        Assert.Contains("external data", e.Message);
        var neg = Models.Floats("t", [1], [1f]);
        neg.Dims[0] = -1;
        e = Assert.Throws<OnnxKfacException>(() => TensorFile.Read(Models.SaveTensor(neg, dir["n.pb"]), "input"));
        Assert.Contains("negative dimension", e.Message);
        e = Assert.Throws<OnnxKfacException>(() => TensorFile.Read(Models.SaveTensor(new TensorProto { Name = "z" }, dir["z.pb"]), "input"));
        Assert.Contains("data_type 0", e.Message);
    }

    [Fact]
    public void MutatedFilesOnlyFailWithUserErrors()
    {
        using var dir = new TempDir();
        var seeds = new[]
        {
            Models.Floats("x", [3, 4], Models.Values(12, 1)).ToByteArray(),
            Models.Int64s("y", [3], 0, 1, 2).ToByteArray(),
            Models.Int32s("y", [3], 0, 1, 2).ToByteArray(),
        };
        var rng = new Random(3);
        string path = dir["t.pb"];
        int read = 0, refused = 0;
        var crashes = new List<string>();
        for (int k = 0; k < 3000; k++)
        {
            var bytes = seeds[k % seeds.Length].ToArray();
            if (k % 5 == 0) { bytes = new byte[rng.Next(1, 64)]; rng.NextBytes(bytes); }
            else if (rng.Next(3) == 0) bytes = bytes[..rng.Next(bytes.Length)];
            else bytes[rng.Next(bytes.Length)] ^= (byte)(1 << rng.Next(8));
            File.WriteAllBytes(path, bytes);
            try
            {
                var t = TensorFile.Read(path, "target");
                // What is read is self-consistent: as many bytes as the shape and type say, and ONNX Runtime agrees.
                Assert.True(t.Shape.All(d => d >= 0), $"#{k}: negative dimension [{string.Join(",", t.Shape)}]");
                long count = t.Shape.Aggregate(1L, (a, d) => a * d);
                Assert.Equal(count * TensorFile.ElementSize(t.ElemType)!.Value, t.Raw.LongLength);
                if (TensorFile.IsInteger(t.ElemType)) Assert.Equal(count, t.AsInt64().ToInt64s().Length);
                using var v = t.ToOrtValue();
                Assert.Equal(t.Shape, v.GetTensorTypeAndShape().Shape);
                read++;
            }
            catch (OnnxKfacException e)
            {
                Assert.DoesNotContain('\n', e.Message);
                refused++;
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException) { crashes.Add($"#{k}: {e.GetType().Name}: {e.Message}"); }
        }
        Assert.True(crashes.Count == 0, string.Join("\n", crashes.Take(10)));
        // Both outcomes occur often: a reader that refused every file, or accepted every one, fails here.
        Assert.True(read >= 300, $"only {read} of 3000 mutated files were read ({refused} refused)");
        Assert.True(refused >= 300, $"only {refused} of 3000 mutated files were refused ({read} read)");
        Assert.Equal(3000, read + refused);
    }
}
