namespace OnnxKfac.Graph.Model;

/// <summary>Shape formatting and matching for messages: -1 (or a negative dim) prints as the dim's symbolic name or '?'.</summary>
public static class Shapes
{
    public static string Format(IReadOnlyList<long>? shape, IReadOnlyList<string?>? names = null)
    {
        if (shape is null) return "[?]";
        var parts = new string[shape.Count];
        for (int k = 0; k < shape.Count; k++)
            parts[k] = shape[k] >= 0 ? shape[k].ToString(System.Globalization.CultureInfo.InvariantCulture)
                : names is not null && k < names.Count && !string.IsNullOrEmpty(names[k]) ? names[k]! : "?";
        return "[" + string.Join(",", parts) + "]";
    }

    /// <summary>Concrete shape <paramref name="actual"/> fits <paramref name="declared"/> (-1: any size).</summary>
    public static bool Fits(IReadOnlyList<long>? declared, IReadOnlyList<long> actual)
    {
        if (declared is null) return true;
        if (declared.Count != actual.Count) return false;
        for (int k = 0; k < declared.Count; k++)
            if (declared[k] >= 0 && declared[k] != actual[k]) return false;
        return true;
    }
}
