using Google.Protobuf;
using OnnxKfac.Cli.Common;
using OnnxKfac.Cli.Tests.Support;
using OnnxKfac.Graph;
using OnnxKfac.Graph.Losses;
using OnnxKfac.Graph.Model;

namespace OnnxKfac.Cli.Tests;

/// <summary>inspect is a diagnostic: on any model that loads it reports, or fails with a user error, never crashes.</summary>
public class InspectFuzzTests
{
    [Fact]
    public void MutatedModelsInspectWithoutCrashing()
    {
        var seeds = new[] { Models.Linear2(), Models.TwoOutputsTied(), Models.WithDet(), Models.TwoInputs() }.Select(m => m.ToByteArray()).ToArray();
        // ONNXKFAC_FUZZ_SEED explores other inputs; the default keeps the test reproducible.
        // Only OnnxKfacException is a clean refusal: anything else (shape inference included) is a crash.
        var rng = new Random(int.TryParse(Environment.GetEnvironmentVariable("ONNXKFAC_FUZZ_SEED"), out int seed) ? seed : 7);
        int parsed = 0;
        var crashes = new List<string>();
        for (int k = 0; k < 6000; k++)
        {
            var bytes = seeds[k % seeds.Length].ToArray();
            for (int flips = rng.Next(1, 4); flips > 0; flips--)
            {
                int at = rng.Next(bytes.Length);
                if (rng.Next(4) == 0) bytes = bytes[..at];
                else if (bytes.Length > 0) bytes[rng.Next(bytes.Length)] ^= (byte)(1 << rng.Next(8));
            }
            try
            {
                var model = OnnxModelIO.Parse(bytes, $"mutation #{k}");
                parsed++;
                var report = ModelInspector.Inspect(model, "m.onnx", k % 2 == 0 ? new LossOptions(LossKind.CrossEntropy) : null, null);
                Json.Serialize(report);
                InspectCommandRender(report);
            }
            catch (OnnxKfacException) { }
            catch (Exception e) { crashes.Add($"mutation #{k}: {e.GetType().Name}: {e.Message} {e.StackTrace?.Split('\n')[0].Trim()}"); }
        }
        Assert.True(parsed > 500, $"only {parsed} mutations parsed");
        Assert.True(crashes.Count == 0, string.Join("\n", crashes.Take(10)));
    }

    private static void InspectCommandRender(InspectReport report) =>
        Commands.InspectCommand.Render(report, new PlainReportWriter(TextWriter.Null));
}
