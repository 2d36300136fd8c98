using System.Text;
using System.Text.RegularExpressions;

namespace OnnxKfac.Graph.Model;

/// <summary>
/// Shell-style glob over tensor and initializer names: <c>*</c> matches any run of
/// characters (dots and slashes included, since ONNX names such as <c>layer1.0.conv.weight</c>
/// are flat strings), <c>?</c> one character, <c>[abc]</c> a set. Matching is ordinal and
/// anchored at both ends.
/// </summary>
public sealed class Glob
{
    private readonly Regex _regex;

    public Glob(string pattern)
    {
        ArgumentException.ThrowIfNullOrEmpty(pattern);
        Pattern = pattern;
        _regex = new Regex(ToRegex(pattern), RegexOptions.CultureInvariant | RegexOptions.Singleline);
    }

    public string Pattern { get; }

    public bool IsMatch(string name) => _regex.IsMatch(name);

    /// <summary>True when any of <paramref name="globs"/> matches <paramref name="name"/>.</summary>
    public static bool AnyMatch(IEnumerable<Glob> globs, string name) => globs.Any(g => g.IsMatch(name));

    private static string ToRegex(string pattern)
    {
        var sb = new StringBuilder("^");
        for (int i = 0; i < pattern.Length; i++)
        {
            char c = pattern[i];
            switch (c)
            {
                case '*': sb.Append(".*"); break;
                case '?': sb.Append('.'); break;
                case '[':
                    int close = pattern.IndexOf(']', i + 1);
                    if (close < 0) { sb.Append(@"\["); break; }
                    string set = pattern.Substring(i + 1, close - i - 1);
                    if (set.StartsWith('!')) set = "^" + set[1..];
                    sb.Append('[').Append(set.Replace(@"\", @"\\")).Append(']');
                    i = close;
                    break;
                default: sb.Append(Regex.Escape(c.ToString())); break;
            }
        }
        return sb.Append('$').ToString();
    }

    public override string ToString() => Pattern;
}
