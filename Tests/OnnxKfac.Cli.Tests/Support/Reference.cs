using OnnxKfac.Graph.Model;
using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Cli.Tests.Support;

/// <summary>Hand-written loss and gradients of <see cref="Models.Linear2"/> in double precision.</summary>
internal static class Reference
{
    public sealed record Result(double Loss, Dictionary<string, double[]> Grads);

    /// <param name="labels">class indices for cross-entropy (null: mse against <paramref name="target"/>).</param>
    public static Result Linear2(ModelProto model, float[] x, int n, float[]? target, long[]? labels, long ignoreIndex = -100)
    {
        var p = model.Graph.Initializer.ToDictionary(t => t.Name, t => TensorData.ToDoubles(t));
        double[] w1 = p["fc1.weight"], b1 = p["fc1.bias"], w2 = p["fc2.weight"], b2 = p["fc2.bias"];
        int d = 4, hdim = 5, c = b2.Length;
        var h = new double[n * hdim];
        var y = new double[n * c];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < hdim; j++)
            {
                double s = b1[j];
                for (int k = 0; k < d; k++) s += x[i * d + k] * w1[k * hdim + j];
                h[i * hdim + j] = s;
            }
            for (int j = 0; j < c; j++)
            {
                double s = b2[j];
                for (int k = 0; k < hdim; k++) s += h[i * hdim + k] * w2[k * c + j];
                y[i * c + j] = s;
            }
        }
        var dy = new double[n * c];
        double loss = 0;
        if (labels is null)
        {
            for (int i = 0; i < n * c; i++)
            {
                double diff = y[i] - target![i];
                loss += diff * diff / (n * c);
                dy[i] = 2 * diff / (n * c);
            }
        }
        else
        {
            int kept = labels.Count(l => l != ignoreIndex);
            for (int i = 0; i < n; i++)
            {
                if (labels[i] == ignoreIndex) continue;
                double max = Enumerable.Range(0, c).Max(j => y[i * c + j]);
                double z = Enumerable.Range(0, c).Sum(j => Math.Exp(y[i * c + j] - max));
                loss += -(y[i * c + labels[i]] - max - Math.Log(z)) / kept;
                for (int j = 0; j < c; j++)
                    dy[i * c + j] = (Math.Exp(y[i * c + j] - max) / z - (j == labels[i] ? 1 : 0)) / kept;
            }
        }
        var gw2 = new double[hdim * c];
        var gb2 = new double[c];
        var dh = new double[n * hdim];
        var gw1 = new double[d * hdim];
        var gb1 = new double[hdim];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < c; j++)
            {
                gb2[j] += dy[i * c + j];
                for (int k = 0; k < hdim; k++)
                {
                    gw2[k * c + j] += h[i * hdim + k] * dy[i * c + j];
                    dh[i * hdim + k] += dy[i * c + j] * w2[k * c + j];
                }
            }
            for (int k = 0; k < hdim; k++)
            {
                gb1[k] += dh[i * hdim + k];
                for (int m = 0; m < d; m++) gw1[m * hdim + k] += x[i * d + m] * dh[i * hdim + k];
            }
        }
        return new Result(loss, new() { ["fc1.weight"] = gw1, ["fc1.bias"] = gb1, ["fc2.weight"] = gw2, ["fc2.bias"] = gb2 });
    }

    public static void AssertClose(double[] expected, TensorProto actual, string what)
    {
        var got = TensorData.ToDoubles(actual);
        Assert.Equal(expected.Length, got.Length);
        double scale = Math.Max(1e-6, expected.Max(Math.Abs));
        double err = expected.Zip(got, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(err <= 1e-4 * scale, $"{what}: max abs error {err:G3} > 1e-4 x {scale:G3}");
    }
}
