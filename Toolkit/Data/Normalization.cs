namespace OnnxKfac.Toolkit.Data;

/// <summary>Which features share one mean and standard deviation.</summary>
public enum NormalizationAxis
{
    /// <summary>Every feature element has its own mean and std (length = <see cref="Dataset.FeatureLength"/>).</summary>
    PerFeature,
    /// <summary>
    /// One mean and std per channel, the channel being the first axis of
    /// <see cref="Dataset.FeatureShape"/> (C, H, W layout; set <see cref="DataOptions.ExpectedFeatureShape"/>
    /// to e.g. [1, 28, 28] to give MNIST a channel axis). For 1-D features it equals PerFeature.
    /// </summary>
    PerChannel,
}

/// <summary>
/// Feature scaling applied when examples are copied out of a <see cref="Dataset"/>:
/// <c>y = (x * Scale - Mean[k]) / Std[k]</c>, where k is the feature or channel. Mean and Std
/// are in scaled units (e.g. Scale = 1/255 with MNIST's mean 0.1307 and std 0.3081). Set it
/// with <see cref="Dataset.WithNormalization"/>; the stored data is not changed.
/// </summary>
public sealed record Normalization
{
    /// <summary>Multiplier applied first (1/255 maps bytes to [0, 1]). Default 1.</summary>
    public float Scale { get; init; } = 1f;

    /// <summary>Whether <see cref="Mean"/> and <see cref="Std"/> are per feature or per channel. Default per feature.</summary>
    public NormalizationAxis Axis { get; init; } = NormalizationAxis.PerFeature;

    /// <summary>Means to subtract (after scaling); one per feature or channel, or a single value for all. Null: 0.</summary>
    public IReadOnlyList<float>? Mean { get; init; }

    /// <summary>Standard deviations to divide by; one per feature or channel, or a single value for all. Null: 1. Must be positive.</summary>
    public IReadOnlyList<float>? Std { get; init; }

    /// <summary>Scaling only: divide every feature by <paramref name="divisor"/> (e.g. 255).</summary>
    public static Normalization DivideBy(float divisor)
    {
        if (!(divisor > 0) || !float.IsFinite(divisor)) throw new ArgumentOutOfRangeException(nameof(divisor), divisor, "The divisor must be a positive finite number.");
        return new Normalization { Scale = 1f / divisor };
    }

    /// <summary>
    /// Computes means and standard deviations (population, in scaled units) from
    /// <paramref name="training"/>, typically the training split, so that the same values can be
    /// applied to the validation split. One pass; streamed data sets are streamed. Any
    /// normalization already set on <paramref name="training"/> is ignored. A feature or channel
    /// whose std is below <paramref name="minStd"/> (e.g. an always-black border pixel) gets std 1,
    /// so it is centred but not blown up.
    /// </summary>
    public static Normalization Compute(Dataset training, NormalizationAxis axis, float scale = 1f, float minStd = 1e-6f)
    {
        ArgumentNullException.ThrowIfNull(training);
        int groups = GroupCount(training, axis);
        int length = training.FeatureLength;
        int perGroup = length / groups;
        var mean = new double[groups];
        var m2 = new double[groups];
        var buffer = new float[length];
        long n = 0;
        using (var reader = training.OpenRawReader())
        {
            while (reader.TryRead(buffer, out _))
            {
                for (int k = 0; k < length; k++)
                {
                    // Welford's update, counted per element of the group.
                    int g = k / perGroup;
                    long count = n * perGroup + (k % perGroup) + 1;
                    double x = buffer[k] * (double)scale;
                    double delta = x - mean[g];
                    mean[g] += delta / count;
                    m2[g] += delta * (x - mean[g]);
                }
                n++;
            }
        }
        var meanOut = new float[groups];
        var stdOut = new float[groups];
        for (int g = 0; g < groups; g++)
        {
            meanOut[g] = (float)mean[g];
            double std = Math.Sqrt(m2[g] / (n * perGroup));
            stdOut[g] = std < minStd ? 1f : (float)std;
        }
        return new Normalization { Scale = scale, Axis = axis, Mean = Array.AsReadOnly(meanOut), Std = Array.AsReadOnly(stdOut) };
    }

    internal static int GroupCount(Dataset dataset, NormalizationAxis axis) => GroupCount(dataset.FeatureShape, axis);

    private static int GroupCount(IReadOnlyList<long> shape, NormalizationAxis axis) =>
        axis == NormalizationAxis.PerChannel && shape.Count > 0 ? checked((int)shape[0]) : checked((int)shape.Aggregate(1L, (a, d) => a * d));

    /// <summary>Expands to per-element multiplier and offset: y = x * mul + add.</summary>
    internal (float[] Mul, float[] Add) Expand(Dataset dataset) => Expand(dataset.FeatureShape, dataset.Source);

    /// <summary>
    /// The per-element multiplier and offset (y = x · mul + add) for examples of
    /// <paramref name="featureShape"/> (e.g. [1, 28, 28]); what the data set applies, and what
    /// an exported model bakes in (<see cref="Export.ModelExport.WithPreprocessing"/>).
    /// </summary>
    public (float[] Mul, float[] Add) Expand(IReadOnlyList<long> featureShape, string source)
    {
        if (!(Scale > 0) || !float.IsFinite(Scale))
            throw new ArgumentException($"Normalization.Scale must be a positive finite number, not {Scale}.");
        int groups = GroupCount(featureShape, Axis);
        CheckLength(Mean, nameof(Mean), groups, featureShape, source);
        CheckLength(Std, nameof(Std), groups, featureShape, source);
        int length = checked((int)featureShape.Aggregate(1L, (a, d) => a * d));
        int perGroup = length / groups;
        var mul = new float[length];
        var add = new float[length];
        for (int k = 0; k < length; k++)
        {
            int g = k / perGroup;
            float mean = Mean is null ? 0f : Mean.Count == 1 ? Mean[0] : Mean[g];
            float std = Std is null ? 1f : Std.Count == 1 ? Std[0] : Std[g];
            if (!(std > 0) || !float.IsFinite(std))
                throw new ArgumentException($"Normalization.Std[{(Std!.Count == 1 ? 0 : g)}] is {std}; standard deviations must be positive and finite.");
            mul[k] = Scale / std;
            add[k] = -mean / std;
        }
        return (mul, add);
    }

    private void CheckLength(IReadOnlyList<float>? values, string name, int groups, IReadOnlyList<long> featureShape, string source)
    {
        if (values is null || values.Count == 1 || values.Count == groups) return;
        throw new ArgumentException(
            $"Normalization.{name} has {values.Count} values but {source} has {groups} {(Axis == NormalizationAxis.PerChannel ? "channels" : "features")} " +
            $"(feature shape [{string.Join(", ", featureShape)}], axis {Axis}).");
    }

    /// <inheritdoc/>
    public override string ToString() =>
        $"Normalization {{ Scale = {Scale}, Axis = {Axis}, Mean = [{(Mean is null ? "" : string.Join(", ", Mean))}], Std = [{(Std is null ? "" : string.Join(", ", Std))}] }}";
}
