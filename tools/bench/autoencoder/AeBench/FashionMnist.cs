using System.IO.Compression;

namespace OnnxKfac.AeBench;

/// <summary>Fashion-MNIST images (IDX, gzip) as [n, 784] floats in [0, 1].</summary>
internal static class FashionMnist
{
    public const int Pixels = 784;

    public static float[] Load(string path, out int count)
    {
        using var gz = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
        using var ms = new MemoryStream();
        gz.CopyTo(ms);
        var bytes = ms.GetBuffer();
        count = (bytes[4] << 24) | (bytes[5] << 16) | (bytes[6] << 8) | bytes[7];
        var x = new float[count * Pixels];
        for (int i = 0; i < x.Length; i++) x[i] = bytes[16 + i] / 255f;
        return x;
    }
}
