using System.Globalization;

namespace OnnxKfac.Toolkit.Optim;

/// <summary>Option validation shared by the optimizers' records: every failure names the option.</summary>
internal static class Checks
{
    public static ArgumentException Error(string option, object value, string rule) =>
        new(string.Create(CultureInfo.InvariantCulture, $"{option} {rule} (got {value})."), option);

    public static double NonNegative(double value, string option) =>
        double.IsFinite(value) && value >= 0 ? value : throw Error(option, value, "must be a finite number ≥ 0");

    public static double? NonNegative(double? value, string option) =>
        value is { } v ? NonNegative(v, option) : null;

    /// <summary>A decay rate in [0, 1) (Adam's betas).</summary>
    public static double UnitInterval(double value, string option) =>
        value is >= 0 and < 1 ? value : throw Error(option, value, "must lie in [0, 1)");

    public static long Update(long update) =>
        update >= 1 ? update : throw new ArgumentOutOfRangeException(nameof(update), update, "Updates are counted from 1.");

    public static T NotNull<T>(T? value, string option) where T : class =>
        value ?? throw new ArgumentNullException(option, $"{option} must not be null.");
}
