using System.Globalization;
using Microsoft.Win32.SafeHandles;

namespace OnnxKfac.Toolkit.Data;

/// <summary>Layout of a CSV file. Immutable; defaults documented per property.</summary>
public sealed record CsvOptions
{
    /// <summary>Field delimiter (an ASCII character). Default ','.</summary>
    public char Delimiter { get; init; } = ',';

    /// <summary>
    /// Whether the first row names the columns. Null (default) detects it: the first row is a
    /// header when any of its fields is not a number.
    /// </summary>
    public bool? HasHeader { get; init; }

    /// <summary>The label column by header name. Requires a header. Set this or <see cref="LabelColumnIndex"/>, not both.</summary>
    public string? LabelColumn { get; init; }

    /// <summary>The label column by zero-based index. Default (both null): the last column.</summary>
    public int? LabelColumnIndex { get; init; }
}

/// <summary>
/// Reads numeric CSV files: every column but one is a feature, one is the label (a class index
/// or a regression target). Fields may be quoted (RFC 4180). A cell that is not a number, a row
/// with the wrong number of fields, or a bad label fails with the file, line and column.
/// </summary>
public static class Csv
{
    /// <summary>
    /// Opens <paramref name="path"/> as a data set with feature shape [columns - 1] and one
    /// label per row. The whole file is parsed and checked once. In memory, the values are then
    /// kept; streamed (<see cref="DataOptions.Streaming"/>), only the byte offset of each row and
    /// the labels are kept, and rows are re-read and parsed by offset as batches are filled.
    /// </summary>
    /// <exception cref="DataException">No rows, a non-numeric cell, a wrong field count, a label out of range or not an integer class index, or a feature count that does not match <see cref="DataOptions.ExpectedFeatureShape"/>.</exception>
    public static Dataset OpenDataset(string path, CsvOptions? csv = null, DataOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        csv ??= new CsvOptions();
        options ??= DataOptions.Default;
        if (csv.Delimiter is '"' or '\r' or '\n' || csv.Delimiter > 127)
            throw new ArgumentException($"CsvOptions.Delimiter '{csv.Delimiter}' must be an ASCII character other than a quote or line break.");
        if (csv.LabelColumn is not null && csv.LabelColumnIndex is not null)
            throw new ArgumentException("Set CsvOptions.LabelColumn or CsvOptions.LabelColumnIndex, not both.");
        bool stream = options.ShouldStream(new FileInfo(path).Length);
        var kind = options.LabelKind ?? LabelKind.ClassIndex;
        var pass = new CsvPass(path, csv, options, kind, keepValues: !stream);
        pass.Run();
        var labels = kind == LabelKind.ClassIndex
            ? LabelStore.ForClasses(pass.Classes.ToArray(), options.ClassCount)
            : LabelStore.ForTargets(pass.Targets.ToArray(), 1);
        var shape = Dataset.ResolveShape([pass.Columns - 1], options, path);
        if (!stream)
        {
            var values = pass.Values;
            Array.Resize(ref values, pass.Rows * (pass.Columns - 1));
            var tensor = DataTensor.Create(values, [pass.Rows, pass.Columns - 1], path);
            return new Dataset(new TensorSource(path, tensor, shape, labels));
        }
        return new Dataset(new CsvSource(path, (byte)csv.Delimiter, pass, shape, labels));
    }
}

/// <summary>The one validating pass over a CSV file, shared by in-memory and streamed loading.</summary>
internal sealed class CsvPass(string path, CsvOptions csv, DataOptions options, LabelKind kind, bool keepValues)
{
    public int Columns { get; private set; }
    public int LabelColumn { get; private set; }
    public int Rows { get; private set; }
    public List<long> Classes { get; } = [];
    public List<float> Targets { get; } = [];
    public float[] Values = [];
    public List<long> RowOffsets { get; } = []; // start of each row, then the end of the last
    public int MaxRowBytes { get; private set; }
    public string[]? Header { get; private set; }

    public void Run()
    {
        var scanner = new CsvScanner(path, (byte)csv.Delimiter);
        using var reader = new CsvFileReader(path, scanner);
        if (!reader.NextRow())
            throw new DataException($"{path}: the data set is empty (no rows).");
        Columns = scanner.FieldCount;
        bool header = csv.HasHeader ?? !AllNumeric(scanner, reader.Buffer);
        if (header)
        {
            Header = new string[Columns];
            for (int i = 0; i < Columns; i++) Header[i] = scanner.Text(reader.Buffer, i).Trim();
        }
        LabelColumn = ResolveLabelColumn();
        if (Columns < 2)
            throw new DataException($"{path}:{scanner.RowLine}: {Columns} column; a data file needs at least one feature column and the label column.");
        int features = Columns - 1;
        var row = new float[features];
        bool haveRow = !header || reader.NextRow();
        long lastEnd = 0;
        while (haveRow)
        {
            ParseRow(scanner, reader.Buffer, row);
            if (keepValues)
            {
                if (Values.Length < (Rows + 1) * features)
                    Array.Resize(ref Values, Math.Max(1024, checked(Math.Max(Values.Length * 2, (Rows + 1) * features))));
                row.CopyTo(Values.AsSpan(Rows * features));
            }
            else
            {
                RowOffsets.Add(scanner.RowStart);
                MaxRowBytes = Math.Max(MaxRowBytes, checked((int)(scanner.RowEnd - scanner.RowStart)));
            }
            lastEnd = scanner.RowEnd;
            Rows++;
            haveRow = reader.NextRow();
        }
        if (Rows == 0)
            throw new DataException($"{path}: the data set is empty (a header row and no data rows).");
        if (!keepValues) RowOffsets.Add(lastEnd);
    }

    private int ResolveLabelColumn()
    {
        if (csv.LabelColumn is { } name)
        {
            if (Header is null)
                throw new DataException($"{path}: label column '{name}' was asked for by name but the file has no header row{(csv.HasHeader is null ? " (its first row is all numbers)" : "")}.");
            int index = Array.IndexOf(Header, name);
            if (index < 0)
                throw new DataException($"{path}:1: no column named '{name}'; the header has {string.Join(", ", Header.Select(h => $"'{h}'"))}.");
            return index;
        }
        int i = csv.LabelColumnIndex ?? Columns - 1;
        if (i < 0 || i >= Columns)
            throw new DataException($"{path}: label column index {i} is out of range; the file has {Columns} columns.");
        return i;
    }

    private void ParseRow(CsvScanner scanner, ReadOnlySpan<byte> buffer, Span<float> row)
    {
        int n = scanner.FieldCount;
        if (n != Columns)
        {
            ref var at = ref scanner[Math.Min(n, Columns) - 1];
            long column = n > Columns ? scanner[Columns].Column : at.Column + at.Length + (at.Quoted ? 2 : 0);
            throw new DataException($"{path}:{scanner.RowLine}:{column}: expected {Columns} fields, found {n}.");
        }
        int k = 0;
        for (int j = 0; j < n; j++)
        {
            ref var f = ref scanner[j];
            var text = buffer.Slice(f.Start, f.Length);
            if (!float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float v))
                throw new DataException($"{path}:{f.Line}:{f.Column}: {Describe(j)} is not a number: {(text.Trim(" \t"u8).IsEmpty ? "the cell is empty" : $"'{scanner.Text(buffer, j)}'")}.");
            // "nan" parses and "inf" does not: both are refused alike, naming the cell.
            if (!float.IsFinite(v))
                throw new DataException($"{path}:{f.Line}:{f.Column}: {Describe(j)} is not a finite number: '{scanner.Text(buffer, j)}'.");
            if (j != LabelColumn) { row[k++] = v; continue; }
            if (kind == LabelKind.Regression) { Targets.Add(v); continue; }
            if (!float.IsFinite(v) || v != MathF.Round(v))
                throw new DataException($"{path}:{f.Line}:{f.Column}: label {v} in {Describe(j)} is not an integer class index (set DataOptions.LabelKind = Regression for float targets).");
            if (v < 0 || options.ClassCount is int c && v >= c)
                throw new DataException($"{path}:{f.Line}:{f.Column}: label {v} in {Describe(j)} is out of range [0, {(options.ClassCount is int cc ? cc.ToString(CultureInfo.InvariantCulture) : "∞")}).");
            Classes.Add((long)v);
        }
    }

    private string Describe(int column) =>
        Header is null ? $"field {column + 1}" : $"field {column + 1} ('{Header[column]}')";

    private static bool AllNumeric(CsvScanner scanner, ReadOnlySpan<byte> buffer)
    {
        for (int j = 0; j < scanner.FieldCount; j++)
        {
            ref var f = ref scanner[j];
            if (!float.TryParse(buffer.Slice(f.Start, f.Length), NumberStyles.Float, CultureInfo.InvariantCulture, out _)) return false;
        }
        return true;
    }
}

/// <summary>A CSV file read row by row through an index of row offsets built by the validating pass.</summary>
internal sealed class CsvSource : ExampleSource
{
    [ThreadStatic] private static byte[]? t_scratch;
    [ThreadStatic] private static CsvScanner? t_scanner;
    private readonly SafeFileHandle _handle;
    private readonly long[] _offsets;
    private readonly int _labelColumn, _columns, _maxRowBytes;
    private readonly byte _delimiter;

    public CsvSource(string path, byte delimiter, CsvPass pass, long[] shape, LabelStore labels)
        : base(path, pass.Rows, shape, labels)
    {
        _offsets = pass.RowOffsets.ToArray();
        _labelColumn = pass.LabelColumn;
        _columns = pass.Columns;
        _maxRowBytes = pass.MaxRowBytes;
        _delimiter = delimiter;
        _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
    }

    public override bool IsRandomAccess => true;

    public override void ReadFeatures(int index, Span<float> destination)
    {
        ThrowIfClosed();
        long start = _offsets[index];
        int length = (int)(_offsets[index + 1] - start);
        var scratch = t_scratch is { } s && s.Length >= length ? s : (t_scratch = new byte[Math.Max(length, Math.Max(_maxRowBytes, 4096))]);
        var span = scratch.AsSpan(0, length);
        int done = 0;
        while (done < length)
        {
            int n = RandomAccess.Read(_handle, span[done..], start + done);
            if (n == 0) throw new DataException($"{Name}: the file is shorter than when it was indexed (row {index} at offset {start}).");
            done += n;
        }
        var scanner = t_scanner;
        if (scanner is null || scanner.Delimiter != _delimiter || !ReferenceEquals(scanner.Path, Name))
            t_scanner = scanner = new CsvScanner(Name, _delimiter);
        scanner.Reset(0, start);
        scanner.ScanRow(span, 0, start, final: true);
        if (scanner.FieldCount != _columns)
            throw new DataException($"{Name}: row {index} at offset {start} changed since the file was indexed ({scanner.FieldCount} fields, expected {_columns}).");
        int k = 0;
        for (int j = 0; j < _columns; j++)
        {
            if (j == _labelColumn) continue;
            ref var f = ref scanner[j];
            if (!float.TryParse(span.Slice(f.Start, f.Length), NumberStyles.Float, CultureInfo.InvariantCulture, out float v) || !float.IsFinite(v))
                throw new DataException($"{Name}: row {index} at offset {start} changed since the file was indexed (field {j + 1} is not a finite number).");
            destination[k++] = v;
        }
    }

    protected override void Close() => _handle.Dispose();
}
