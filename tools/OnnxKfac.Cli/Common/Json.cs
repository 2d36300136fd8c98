using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using OnnxKfac.Cli.Commands;
using OnnxKfac.Cli.Training;

namespace OnnxKfac.Cli.Common;

/// <summary>
/// The JSON the commands write: snake_case, indented, every key always present. The types are
/// those of <see cref="CliJsonContext"/> (metadata generated at compile time, so the trimmed and
/// NativeAOT builds need no reflection); serializing any other type throws, in every build.
/// </summary>
internal static class Json
{
    public static JsonSerializerOptions Options { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = null,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        TypeInfoResolver = CliJsonContext.Default,
    };

    public static string Serialize<T>(T value) => JsonSerializer.Serialize(value, (JsonTypeInfo<T>)Options.GetTypeInfo(typeof(T)));

    /// <summary>A value whose type is known only at run time (one of the context's types).</summary>
    public static JsonTypeInfo TypeOf(object value) => Options.GetTypeInfo(value.GetType());
}

/// <summary>Every type the CLI writes as JSON, and the run-time types of its <c>object</c> values (shape entries, config values).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(InspectReport))]
[JsonSerializable(typeof(TrainReport))]
[JsonSerializable(typeof(EvalReport))]
[JsonSerializable(typeof(GradLoss))]
[JsonSerializable(typeof(Dictionary<string, string>))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(long))]
[JsonSerializable(typeof(int))]
[JsonSerializable(typeof(double))]
[JsonSerializable(typeof(bool))]
[JsonSerializable(typeof(string[]))]
internal sealed partial class CliJsonContext : JsonSerializerContext;
