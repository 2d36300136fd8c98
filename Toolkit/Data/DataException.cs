namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// The one exception the data layer throws for bad input: an empty data set, a truncated
/// file, a wrong magic number, inconsistent counts, labels out of range, a cell that is not
/// a number, a shape that does not match. The message names the file (and, where it
/// applies, the line, column, offset, entry or example) and says what is wrong.
/// </summary>
public sealed class DataException : Exception
{
    /// <summary>Creates the exception with a message that names the file at fault.</summary>
    public DataException(string message) : base(message) { }

    /// <summary>Creates the exception wrapping the lower-level error that revealed the problem.</summary>
    public DataException(string message, Exception innerException) : base(message, innerException) { }
}
