using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Text;

namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// Reads NumPy <c>.npy</c> files (format versions 1, 2 and 3; C order). Supported dtypes:
/// float16/32/64 (stored as <see cref="DataElementType.Float32"/>), int8/16/32/64, uint16/32
/// (stored as <see cref="DataElementType.Int64"/>), uint8 and bool (stored as
/// <see cref="DataElementType.UInt8"/>), in either byte order.
/// </summary>
public static class Npy
{
    /// <summary>Reads a whole <c>.npy</c> file.</summary>
    /// <exception cref="DataException">Not an NPY file, an unsupported dtype, Fortran order, or truncated data.</exception>
    public static DataTensor ReadTensor(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        return ReadTensor(stream, path);
    }

    /// <summary>
    /// Writes <paramref name="tensor"/> (float32, int64 or uint8) as a version 1.0 <c>.npy</c>
    /// image: little-endian, C order, the header padded to 64 bytes, as numpy.save writes it.
    /// </summary>
    public static void Write(Stream stream, DataTensor tensor)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(tensor);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("NPY writing assumes a little-endian machine.");
        string descr = tensor.ElementType switch
        {
            DataElementType.Float32 => "<f4",
            DataElementType.Int64 => "<i8",
            DataElementType.UInt8 => "|u1",
            _ => throw new ArgumentException($"NPY writing supports float32, int64 and uint8 tensors, not {tensor.ElementType}.", nameof(tensor)),
        };
        ReadOnlySpan<byte> body = tensor.ElementType switch
        {
            DataElementType.Float32 => System.Runtime.InteropServices.MemoryMarshal.AsBytes(tensor.AsFloats()),
            DataElementType.Int64 => System.Runtime.InteropServices.MemoryMarshal.AsBytes(tensor.AsInt64s()),
            _ => tensor.AsBytes(),
        };
        var shape = tensor.Shape;
        string dims = shape.Count == 1 ? $"({shape[0]},)" : "(" + string.Join(", ", shape) + ")";
        string header = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}";
        int unpadded = 10 + header.Length + 1;   // magic, version, length, header, newline
        header = header.PadRight(header.Length + (64 - unpadded % 64) % 64) + "\n";
        Span<byte> preamble = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, (byte)(header.Length & 0xFF), (byte)(header.Length >> 8)];
        stream.Write(preamble);
        stream.Write(System.Text.Encoding.ASCII.GetBytes(header));
        stream.Write(body);
    }

    /// <summary>Reads one <c>.npy</c> image from <paramref name="stream"/> (need not be seekable); <paramref name="source"/> names it in messages.</summary>
    /// <exception cref="DataException">Not an NPY image, an unsupported dtype, Fortran order, or truncated data.</exception>
    public static DataTensor ReadTensor(Stream stream, string source)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentException.ThrowIfNullOrEmpty(source);
        var (kind, bigEndian, shape, dataOffset) = ReadHeader(stream, source);
        long count = 1;
        foreach (long d in shape) count = checked(count * d);
        Array data;
        try
        {
            data = ElementConvert.ReadArray(stream, kind, bigEndian, count);
        }
        catch (EndOfStreamException e)
        {
            throw new DataException($"{source}: truncated: the header declares shape ({string.Join(", ", shape)}) of {count * ElementConvert.SizeOf(kind)} data bytes from offset {dataOffset}, but the data ends early.", e);
        }
        catch (InvalidDataException e)
        {
            throw new DataException($"{source}: the compressed archive entry is corrupt: {e.Message}", e);
        }
        if (stream.ReadByte() != -1)
            throw new DataException($"{source}: unexpected bytes after the {count * ElementConvert.SizeOf(kind)} data bytes the header declares (offset {dataOffset + count * ElementConvert.SizeOf(kind)}).");
        return DataTensor.Create(data, shape, source);
    }

    private static (RawKind Kind, bool BigEndian, long[] Shape, long DataOffset) ReadHeader(Stream stream, string source)
    {
        Span<byte> pre = stackalloc byte[12];
        int got = stream.ReadAtLeast(pre[..10], 10, throwOnEndOfStream: false);
        if (got < 10 || pre[0] != 0x93 || !pre[1..6].SequenceEqual("NUMPY"u8))
            throw new DataException($"{source}: not an NPY file: it does not start with the magic \\x93NUMPY at offset 0.");
        int major = pre[6], minor = pre[7];
        long headerLength;
        int prefix;
        if (major == 1)
        {
            headerLength = BinaryPrimitives.ReadUInt16LittleEndian(pre[8..]);
            prefix = 10;
        }
        else if (major is 2 or 3)
        {
            if (stream.ReadAtLeast(pre[10..12], 2, throwOnEndOfStream: false) < 2)
                throw new DataException($"{source}: truncated NPY header (offset 10).");
            headerLength = BinaryPrimitives.ReadUInt32LittleEndian(pre[8..]);
            prefix = 12;
        }
        else throw new DataException($"{source}: NPY format version {major}.{minor} at offset 6 is not supported (1.0, 2.0 and 3.0 are).");
        if (headerLength > 1 << 24) throw new DataException($"{source}: NPY header length {headerLength} at offset 8 is implausible.");
        var headerBytes = new byte[headerLength];
        if (stream.ReadAtLeast(headerBytes, headerBytes.Length, throwOnEndOfStream: false) < headerBytes.Length)
            throw new DataException($"{source}: truncated NPY header: {headerLength} bytes declared at offset 8.");
        string text = (major == 3 ? Encoding.UTF8 : Encoding.Latin1).GetString(headerBytes);
        var dict = new HeaderParser(text, source, prefix).ParseDict();

        if (!dict.TryGetValue("descr", out var descrValue) || descrValue is not string descr)
            throw new DataException($"{source}: NPY header has no 'descr' string (structured dtypes are not supported): {text.Trim()}");
        if (!dict.TryGetValue("fortran_order", out var fo) || fo is not bool fortran)
            throw new DataException($"{source}: NPY header has no 'fortran_order' flag: {text.Trim()}");
        if (fortran)
            throw new DataException($"{source}: the array is stored in Fortran (column-major) order, which is not supported; save a C-ordered array (numpy.ascontiguousarray) instead.");
        if (!dict.TryGetValue("shape", out var sh) || sh is not long[] shape)
            throw new DataException($"{source}: NPY header has no 'shape' tuple: {text.Trim()}");
        var (kind, bigEndian) = ParseDescr(descr, source);
        return (kind, bigEndian, shape, prefix + headerLength);
    }

    private static (RawKind, bool) ParseDescr(string descr, string source)
    {
        if (descr.Length < 2) throw Unsupported(descr, source);
        char order = descr[0];
        string type = descr[1..];
        bool bigEndian = order switch
        {
            '<' or '|' => false,
            '>' => true,
            '=' => !BitConverter.IsLittleEndian,
            _ => throw Unsupported(descr, source),
        };
        RawKind kind = type switch
        {
            "f2" => RawKind.Float16,
            "f4" => RawKind.Float32,
            "f8" => RawKind.Float64,
            "i1" => RawKind.Int8,
            "i2" => RawKind.Int16,
            "i4" => RawKind.Int32,
            "i8" => RawKind.Int64,
            "u1" => RawKind.UInt8,
            "u2" => RawKind.UInt16,
            "u4" => RawKind.UInt32,
            "b1" or "?" => RawKind.Bool,
            _ => throw Unsupported(descr, source),
        };
        return (kind, bigEndian);
    }

    private static DataException Unsupported(string descr, string source) =>
        new($"{source}: NPY dtype '{descr}' is not supported (float16/32/64, int8/16/32/64, uint8/16/32 and bool are).");

    /// <summary>Parses the Python dict literal of an NPY header: string keys; string, bool and int-tuple values.</summary>
    private sealed class HeaderParser(string text, string source, int baseOffset)
    {
        private int _p;

        public Dictionary<string, object> ParseDict()
        {
            var result = new Dictionary<string, object>(StringComparer.Ordinal);
            Expect('{');
            while (true)
            {
                SkipSpace();
                if (Peek() == '}') { _p++; break; }
                string key = ParseString();
                Expect(':');
                result[key] = ParseValue();
                SkipSpace();
                if (Peek() == ',') { _p++; continue; }
                Expect('}');
                break;
            }
            return result;
        }

        private object ParseValue()
        {
            SkipSpace();
            char c = Peek();
            if (c is '\'' or '"') return ParseString();
            if (c == '(') return ParseTuple();
            if (Match("True")) return true;
            if (Match("False")) return false;
            if (c == '[') throw new DataException($"{source}: structured NPY dtypes (a list 'descr') are not supported.");
            throw Error($"unexpected '{c}'");
        }

        private long[] ParseTuple()
        {
            Expect('(');
            var dims = new List<long>();
            while (true)
            {
                SkipSpace();
                if (Peek() == ')') { _p++; break; }
                int start = _p;
                while (_p < text.Length && char.IsAsciiDigit(text[_p])) _p++;
                if (start == _p) throw Error("expected a dimension");
                dims.Add(long.Parse(text.AsSpan(start, _p - start), CultureInfo.InvariantCulture));
                if (Peek() == 'L') _p++; // Python 2 long literals
                SkipSpace();
                if (Peek() == ',') { _p++; continue; }
                Expect(')');
                break;
            }
            return dims.ToArray();
        }

        private string ParseString()
        {
            SkipSpace();
            char q = Peek();
            if (q is not ('\'' or '"')) throw Error("expected a quoted string");
            int end = text.IndexOf(q, _p + 1);
            if (end < 0) throw Error("unterminated string");
            string s = text.Substring(_p + 1, end - _p - 1);
            _p = end + 1;
            return s;
        }

        private bool Match(string word)
        {
            if (string.CompareOrdinal(text, _p, word, 0, word.Length) != 0) return false;
            _p += word.Length;
            return true;
        }

        private void Expect(char c)
        {
            SkipSpace();
            if (Peek() != c) throw Error($"expected '{c}'");
            _p++;
        }

        private char Peek() => _p < text.Length ? text[_p] : '\0';

        private void SkipSpace()
        {
            while (_p < text.Length && char.IsWhiteSpace(text[_p])) _p++;
        }

        private DataException Error(string what) =>
            new($"{source}: malformed NPY header at offset {baseOffset + _p}: {what} in {text.Trim()}");
    }
}

/// <summary>Reads NumPy <c>.npz</c> archives (zip files of <c>.npy</c> entries, stored or deflated), as written by <c>numpy.savez</c> and <c>numpy.savez_compressed</c>.</summary>
public static class Npz
{
    /// <summary>Reads every <c>.npy</c> entry, keyed by its name without the <c>.npy</c> suffix (the keyword given to <c>numpy.savez</c>).</summary>
    /// <exception cref="DataException">Not a zip archive, or an entry that is not a valid NPY image.</exception>
    public static IReadOnlyDictionary<string, DataTensor> ReadTensors(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ZipArchive archive;
        try
        {
            archive = ZipFile.OpenRead(path);
        }
        catch (InvalidDataException e)
        {
            throw new DataException($"{path}: not a valid NPZ (zip) archive: {e.Message}", e);
        }
        using (archive)
        {
            var result = new Dictionary<string, DataTensor>(StringComparer.Ordinal);
            foreach (var entry in archive.Entries)
            {
                if (!entry.FullName.EndsWith(".npy", StringComparison.Ordinal)) continue;
                string key = entry.FullName[..^4];
                try
                {
                    using var stream = entry.Open();
                    result[key] = Npy.ReadTensor(stream, $"{path}:{entry.FullName}");
                }
                catch (InvalidDataException e)
                {
                    throw new DataException($"{path}:{entry.FullName}: the archive entry cannot be read: {e.Message}", e);
                }
            }
            if (result.Count == 0)
                throw new DataException($"{path}: the NPZ archive holds no .npy entries.");
            return result;
        }
    }
}
