using System.Buffers.Binary;

namespace OnnxKfac.Toolkit.Data;

/// <summary>
/// Where a <see cref="DataLoader"/> is: the epoch, how many examples of it were already
/// returned, and the generator state at the start of that epoch (from which the epoch's order
/// is regenerated). Save it with a checkpoint and pass it to <see cref="DataLoader.Restore"/>
/// to continue with exactly the same batches. <see cref="DatasetCount"/> guards against
/// restoring onto a different data set.
/// </summary>
/// <param name="Epoch">Zero-based epoch.</param>
/// <param name="Index">Examples already returned in this epoch.</param>
/// <param name="DatasetCount">Number of examples of the data set the position belongs to.</param>
/// <param name="Rng0">Generator state word 0 at the start of the epoch.</param>
/// <param name="Rng1">Generator state word 1.</param>
/// <param name="Rng2">Generator state word 2.</param>
/// <param name="Rng3">Generator state word 3.</param>
public readonly record struct LoaderPosition(int Epoch, int Index, int DatasetCount, ulong Rng0, ulong Rng1, ulong Rng2, ulong Rng3)
{
    private const uint Magic = 0x504C4B4F; // "OKLP" little-endian
    private const int Version = 1;

    /// <summary>Size of <see cref="ToBytes"/>'s output.</summary>
    public const int ByteLength = 56;

    /// <summary>
    /// A fixed 56-byte little-endian encoding for checkpoints: magic "OKLP", version, epoch,
    /// index, data set count, a reserved zero word, then the four generator words.
    /// </summary>
    public byte[] ToBytes()
    {
        var bytes = new byte[ByteLength];
        var s = bytes.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(s, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(s[4..], Version);
        BinaryPrimitives.WriteInt32LittleEndian(s[8..], Epoch);
        BinaryPrimitives.WriteInt32LittleEndian(s[12..], Index);
        BinaryPrimitives.WriteInt32LittleEndian(s[16..], DatasetCount);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], Rng0);
        BinaryPrimitives.WriteUInt64LittleEndian(s[32..], Rng1);
        BinaryPrimitives.WriteUInt64LittleEndian(s[40..], Rng2);
        BinaryPrimitives.WriteUInt64LittleEndian(s[48..], Rng3);
        return bytes;
    }

    /// <summary>Decodes <see cref="ToBytes"/>'s output.</summary>
    /// <exception cref="DataException">The bytes are not a loader position of a known version.</exception>
    public static LoaderPosition FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != ByteLength || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != Magic)
            throw new DataException($"loader position: expected {ByteLength} bytes starting with \"OKLP\", got {bytes.Length} bytes{(bytes.Length >= 4 ? $" starting with 0x{BinaryPrimitives.ReadUInt32LittleEndian(bytes):X8}" : "")}.");
        int version = BinaryPrimitives.ReadInt32LittleEndian(bytes[4..]);
        if (version != Version)
            throw new DataException($"loader position: version {version} is not supported (this build reads version {Version}).");
        return new LoaderPosition(
            BinaryPrimitives.ReadInt32LittleEndian(bytes[8..]),
            BinaryPrimitives.ReadInt32LittleEndian(bytes[12..]),
            BinaryPrimitives.ReadInt32LittleEndian(bytes[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(bytes[24..]),
            BinaryPrimitives.ReadUInt64LittleEndian(bytes[32..]),
            BinaryPrimitives.ReadUInt64LittleEndian(bytes[40..]),
            BinaryPrimitives.ReadUInt64LittleEndian(bytes[48..]));
    }
}
