using System.Buffers;
using System.Text;

namespace OnnxKfac.Toolkit.Data;

/// <summary>One field of the current CSV row: its bytes (quotes stripped) and where it starts.</summary>
internal struct CsvField
{
    public int Start;       // in the scanned buffer
    public int Length;
    public bool Quoted;
    public bool Escaped;    // contains "" pairs
    public int Line;        // 1-based physical line where the field starts
    public long Column;     // 1-based byte column on that line
}

/// <summary>
/// Splits UTF-8 CSV text into rows and fields (RFC 4180: fields may be quoted, quotes doubled
/// inside, delimiters and line breaks allowed inside quotes; CRLF, LF or CR line ends). Keeps
/// line numbers for messages. Allocation-free once its field array has grown to the row width.
/// </summary>
internal sealed class CsvScanner(string path, byte delimiter)
{
    private readonly SearchValues<byte> _stops = SearchValues.Create([delimiter, (byte)'\n', (byte)'\r']);
    private CsvField[] _fields = new CsvField[16];

    public string Path => path;
    public byte Delimiter => delimiter;

    public int FieldCount { get; private set; }
    public int Line { get; private set; } = 1;      // line of the next row
    public long LineStart { get; private set; }     // absolute offset of that line's first byte
    public int RowLine { get; private set; }
    public long RowStart { get; private set; }      // absolute offset of the row's first byte
    public long RowEnd { get; private set; }        // absolute offset after the row's line end

    public ref CsvField this[int i] => ref _fields[i];

    public void Reset(int line, long lineStart)
    {
        Line = line;
        LineStart = lineStart;
    }

    /// <summary>
    /// Scans one row of <paramref name="buffer"/> starting at <paramref name="pos"/>, where
    /// buffer[0] is at absolute offset <paramref name="bufferBase"/>. Returns the position after
    /// the row's line end, or -1 when the row may continue past the buffer and
    /// <paramref name="final"/> is false. A blank line is a row of 0 fields.
    /// </summary>
    public int ScanRow(ReadOnlySpan<byte> buffer, int pos, long bufferBase, bool final)
    {
        int line = Line;
        long lineStart = LineStart;
        int p = pos;
        int n = 0;
        RowLine = line;
        RowStart = bufferBase + pos;
        // Blank line: a row of no fields.
        if (p < buffer.Length && (buffer[p] == '\n' || buffer[p] == '\r') || p == buffer.Length && final)
        {
            FieldCount = 0;
            return EndLine(buffer, p, bufferBase, final, ref line, ref lineStart);
        }
        while (true)
        {
            if (n == _fields.Length) Array.Resize(ref _fields, n * 2);
            ref var f = ref _fields[n];
            f.Line = line;
            f.Column = bufferBase + p - lineStart + 1;
            f.Escaped = false;
            if (p < buffer.Length && buffer[p] == '"')
            {
                f.Quoted = true;
                p++;
                f.Start = p;
                while (true)
                {
                    if (p >= buffer.Length)
                    {
                        if (!final) return -1;
                        throw new DataException($"{path}:{f.Line}:{f.Column}: a quoted field is never closed.");
                    }
                    byte c = buffer[p];
                    if (c == '"')
                    {
                        if (p + 1 >= buffer.Length && !final) return -1;
                        if (p + 1 < buffer.Length && buffer[p + 1] == '"') { f.Escaped = true; p += 2; continue; }
                        f.Length = p - f.Start;
                        p++;
                        break;
                    }
                    if (c == '\n' || (c == '\r' && (p + 1 >= buffer.Length || buffer[p + 1] != '\n')))
                    {
                        line++;
                        lineStart = bufferBase + p + 1;
                    }
                    p++;
                }
                if (p < buffer.Length && buffer[p] != delimiter && buffer[p] != '\n' && buffer[p] != '\r')
                    throw new DataException($"{path}:{line}:{bufferBase + p - lineStart + 1}: unexpected character '{(char)buffer[p]}' after a closing quote (expected the delimiter or a line end).");
            }
            else
            {
                f.Quoted = false;
                f.Start = p;
                int stop = buffer[p..].IndexOfAny(_stops);
                if (stop < 0)
                {
                    if (!final) return -1;
                    p = buffer.Length;
                }
                else p += stop;
                f.Length = p - f.Start;
            }
            n++;
            if (p >= buffer.Length)
            {
                if (!final) return -1;
                break;
            }
            if (buffer[p] == delimiter) { p++; continue; }
            break; // line end
        }
        FieldCount = n;
        return EndLine(buffer, p, bufferBase, final, ref line, ref lineStart);
    }

    private int EndLine(ReadOnlySpan<byte> buffer, int p, long bufferBase, bool final, ref int line, ref long lineStart)
    {
        if (p < buffer.Length)
        {
            if (buffer[p] == '\r')
            {
                if (p + 1 >= buffer.Length && !final) return -1;
                p += p + 1 < buffer.Length && buffer[p + 1] == '\n' ? 2 : 1;
            }
            else p++; // '\n'
            line++;
            lineStart = bufferBase + p;
        }
        Line = line;
        LineStart = lineStart;
        RowEnd = bufferBase + p;
        return p;
    }

    /// <summary>The field's text with quotes undone (allocates; for headers and messages).</summary>
    public string Text(ReadOnlySpan<byte> buffer, int i)
    {
        var f = _fields[i];
        string s = Encoding.UTF8.GetString(buffer.Slice(f.Start, f.Length));
        return f.Escaped ? s.Replace("\"\"", "\"") : s;
    }
}

/// <summary>Feeds a file through a <see cref="CsvScanner"/> in growing chunks, row by row.</summary>
internal sealed class CsvFileReader : IDisposable
{
    private readonly Stream _stream;
    private readonly CsvScanner _scanner;
    private byte[] _buffer = new byte[1 << 16];
    private int _start, _end;
    private long _base;
    private bool _eof;

    public CsvFileReader(string path, CsvScanner scanner)
    {
        _stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        _scanner = scanner;
        Fill();
        if (_end >= 3 && _buffer[0] == 0xEF && _buffer[1] == 0xBB && _buffer[2] == 0xBF)
        {
            _start = 3; // UTF-8 byte order mark
            scanner.Reset(1, 3);
        }
    }

    /// <summary>The buffer the current row's fields index into.</summary>
    public ReadOnlySpan<byte> Buffer => _buffer.AsSpan(0, _end);

    /// <summary>Advances to the next non-blank row; false at the end of the file.</summary>
    public bool NextRow()
    {
        while (true)
        {
            if (_start >= _end && _eof) return false;
            int r = _scanner.ScanRow(_buffer.AsSpan(0, _end), _start, _base, _eof);
            if (r < 0)
            {
                Compact();
                Fill();
                continue;
            }
            _start = r;
            if (_scanner.FieldCount > 0) return true;
        }
    }

    private void Compact()
    {
        if (_start == 0 && _end == _buffer.Length) Array.Resize(ref _buffer, _buffer.Length * 2);
        else if (_start > 0)
        {
            Array.Copy(_buffer, _start, _buffer, 0, _end - _start);
            _base += _start;
            _end -= _start;
            _start = 0;
        }
    }

    private void Fill()
    {
        while (_end < _buffer.Length)
        {
            int n = _stream.Read(_buffer, _end, _buffer.Length - _end);
            if (n == 0) { _eof = true; return; }
            _end += n;
        }
    }

    public void Dispose() => _stream.Dispose();
}
