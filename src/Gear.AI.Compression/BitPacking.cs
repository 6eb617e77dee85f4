using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression;

/// <summary>
/// Packs b-bit codes (b in 1..8) along the last dimension into bytes and back.
/// </summary>
/// <remarks>
/// Every 8 consecutive codes occupy exactly b bytes (8·b bits), so a row of m codes takes
/// ceil(m / 8)·b bytes: 2-bit codes sit 4 to a byte, 4-bit codes 2 to a byte, and 3-, 5-, 6-, 7-bit
/// codes run across byte boundaries. Code i of a group of 8 occupies bits [i·b, i·b + b) of the
/// little-endian 8·b-bit word the b bytes form. Rows whose length is not a multiple of 8 are padded
/// with zero codes; those bytes are real storage and are counted.
/// </remarks>
internal static class BitPacking
{
    /// <summary>
    /// Whether codes of <paramref name="bits"/> bits tile a byte (1, 2, 4 or 8): the widths the one-pass kernels read and
    /// write (3, 5, 6 and 7 bits are packed too, across byte boundaries, and run as tensor operations).
    /// </summary>
    public static bool TilesAByte(int bits) => bits is 1 or 2 or 4 or 8;

    /// <summary>Bytes that <paramref name="count"/> codes of <paramref name="bits"/> bits take in one row.</summary>
    public static long PackedLength(long count, int bits) => (count + 7) / 8 * bits;

    /// <summary>Packs integer codes in [0, 2^bits) along the last dimension.</summary>
    /// <param name="codes">Codes of any integer dtype, shape [..., m].</param>
    /// <param name="bits">Bits per code, 1 to 8.</param>
    /// <returns>uint8 tensor [..., ceil(m/8)·bits].</returns>
    public static Tensor Pack(Tensor codes, int bits)
    {
        ArgumentNullException.ThrowIfNull(codes);
        CheckBits(bits);
        using var scope = NewDisposeScope();
        long m = codes.shape[^1];
        long groups = (m + 7) / 8;
        var lead = codes.shape[..^1];
        if (8 % bits == 0)
        {
            // 1, 2, 4, 8 bits: OR the 8/bits codes of each byte together, staying in uint8 (no wide temporaries).
            int perByte = 8 / bits;
            var c8 = codes.to(ScalarType.Byte);                                             // [..., m]
            if (groups * 8 != m)
                c8 = nn.functional.pad(c8, [0, groups * 8 - m]);                           // [..., 8·groups]
            var parts = c8.reshape([.. lead, groups * bits, perByte]);                     // [..., bytes, perByte]
            var packedBytes = parts.select(-1, 0).clone();
            for (int i = 1; i < perByte; i++)
                packedBytes.bitwise_or_(parts.select(-1, i).bitwise_left_shift(i * bits));
            return packedBytes.MoveToOuterDisposeScope();                                  // [..., groups·bits]
        }
        // 3, 5, 6, 7 bits: each group of 8 codes becomes one 8·bits-bit word, written as `bits` bytes.
        var c = codes.to(ScalarType.Int64);                                    // [..., m]
        if (groups * 8 != m)
            c = nn.functional.pad(c, [0, groups * 8 - m]);                     // [..., 8·groups]
        c = c.reshape([.. lead, groups, 8]);                                   // [..., G, 8]
        var shifts = Scalars.Arange(0, 8 * bits, bits, ScalarType.Int64, codes.device); // [8]
        var word = c.bitwise_left_shift(shifts).sum(-1, keepdim: true);       // [..., G, 1] (disjoint bits: sum == or)
        var byteShifts = Scalars.Arange(0, 8 * bits, 8, ScalarType.Int64, codes.device); // [bits]
        var bytes = word.bitwise_right_shift(byteShifts).bitwise_and(0xFF);   // [..., G, bits]
        return bytes.to(ScalarType.Byte).reshape([.. lead, groups * bits]).MoveToOuterDisposeScope();
    }

    /// <summary>Unpacks codes produced by <see cref="Pack"/>.</summary>
    /// <param name="packed">uint8 tensor [..., ceil(m/8)·bits].</param>
    /// <param name="bits">Bits per code, 1 to 8.</param>
    /// <param name="count">m, the number of codes per row.</param>
    /// <returns>uint8 codes [..., m].</returns>
    public static Tensor Unpack(Tensor packed, int bits, long count)
    {
        ArgumentNullException.ThrowIfNull(packed);
        CheckBits(bits);
        long groups = (count + 7) / 8;
        if (packed.dtype != ScalarType.Byte || packed.shape[^1] != groups * bits)
            throw new ArgumentException($"Expected uint8 [..., {groups * bits}] for {count} codes of {bits} bits, got {packed.dtype} [{string.Join(", ", packed.shape)}].", nameof(packed));
        using var scope = NewDisposeScope();
        var lead = packed.shape[..^1];
        Tensor codes;
        if (bits == 8)
        {
            codes = packed.alias();
        }
        else if (8 % bits == 0)
        {
            // Fast path for 1, 2, 4 bits: 8/bits codes in each byte, lowest bits first.
            int perByte = 8 / bits;
            var shifts = Scalars.Arange(0, 8, bits, ScalarType.Byte, packed.device); // [perByte]
            codes = packed.unsqueeze(-1).bitwise_right_shift(shifts)                        // [..., bytes, perByte]
                          .bitwise_and((1 << bits) - 1)
                          .reshape([.. lead, packed.shape[^1] * perByte]);                  // [..., 8·G]
        }
        else
        {
            // 3, 5, 6, 7 bits: rebuild each group's 8·bits-bit word, then cut 8 codes out of it.
            var b = packed.reshape([.. lead, groups, bits]).to(ScalarType.Int64);           // [..., G, bits]
            var byteShifts = Scalars.Arange(0, 8 * bits, 8, ScalarType.Int64, packed.device);
            var word = b.bitwise_left_shift(byteShifts).sum(-1, keepdim: true);              // [..., G, 1]
            var shifts = Scalars.Arange(0, 8 * bits, bits, ScalarType.Int64, packed.device); // [8]
            codes = word.bitwise_right_shift(shifts).bitwise_and((1 << bits) - 1)           // [..., G, 8]
                        .to(ScalarType.Byte).reshape([.. lead, groups * 8]);
        }
        if (codes.shape[^1] != count)
            codes = codes.narrow(-1, 0, count);
        return codes.contiguous().MoveToOuterDisposeScope();
    }

    private static void CheckBits(int bits)
    {
        if (bits is < 1 or > 8)
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "bits must be between 1 and 8.");
    }
}
