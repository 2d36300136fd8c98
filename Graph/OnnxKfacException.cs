namespace OnnxKfac.Graph;

/// <summary>
/// An error in the user's input (a model, an option, a tensor file) that the toolkit can
/// describe in one line. Commands print <see cref="Exception.Message"/> and exit with
/// code 2; anything else that escapes is a bug.
/// </summary>
public class OnnxKfacException : Exception
{
    public OnnxKfacException(string message) : base(message) { }

    public OnnxKfacException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A node whose op has no gradient rule (or an unsupported form of one).</summary>
public sealed class UnsupportedOpException : OnnxKfacException
{
    public UnsupportedOpException(string message) : base(message) { }
}
