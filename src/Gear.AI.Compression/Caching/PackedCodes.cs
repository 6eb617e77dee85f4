using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// Reads rows of codes packed by <see cref="BitPacking"/> (8 codes in every <c>bits</c> bytes, code i
/// of a group at bits [i·b, i·b + b) of the little-endian word) straight into floats, 8 at a time.
/// </summary>
internal readonly unsafe struct PackedCodes
{
    private readonly int _bits;
    private readonly uint _mask;
    private readonly Vector256<uint> _shifts;

    public PackedCodes(int bits)
    {
        _bits = bits;
        _mask = (1u << bits) - 1;
        _shifts = Vector256.Create(0u, (uint)bits, 2u * (uint)bits, 3u * (uint)bits, 4u * (uint)bits, 5u * (uint)bits, 6u * (uint)bits, 7u * (uint)bits);
    }

    /// <summary>Bytes per row of <paramref name="features"/> codes.</summary>
    public long RowBytes(long features) => BitPacking.PackedLength(features, _bits);

    /// <summary>Codes 8j … 8j + 7 of <paramref name="row"/> as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector256<float> Eight(byte* row, int j)
    {
        byte* p = row + j * _bits;
        if (Avx2.IsSupported)
        {
            if (_bits == 8)
                return Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(p));
            if (_bits <= 4)
            {
                uint word = _bits switch
                {
                    1 => *p,
                    2 => *(ushort*)p,
                    4 => *(uint*)p,
                    _ => (uint)(*(ushort*)p | p[2] << 16),
                };
                var codes = Avx2.ShiftRightLogicalVariable(Vector256.Create(word), _shifts) & Vector256.Create(_mask);
                return Avx.ConvertToVector256Single(codes.AsInt32());
            }
        }
        ulong w = Word(p);
        int b = _bits;
        ulong m = _mask;
        return Vector256.Create(
            (float)(w & m), (float)((w >> b) & m), (float)((w >> 2 * b) & m), (float)((w >> 3 * b) & m),
            (float)((w >> 4 * b) & m), (float)((w >> 5 * b) & m), (float)((w >> 6 * b) & m), (float)((w >> 7 * b) & m));
    }

    /// <summary><see cref="Eight"/> compiled for one code width: constant shifts and no width branches in hot loops.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector256<float> Eight<TWidth>(byte* row, int j) where TWidth : ICodeWidth
    {
        if (Avx2.IsSupported && TWidth.Bits == 2)
        {
            var codes = Avx2.ShiftRightLogicalVariable(Vector256.Create((uint)*(ushort*)(row + 2 * j)), Vector256.Create(0u, 2, 4, 6, 8, 10, 12, 14)) & Vector256.Create(3u);
            return Avx.ConvertToVector256Single(codes.AsInt32());
        }
        if (Avx2.IsSupported && TWidth.Bits == 4)
        {
            var codes = Avx2.ShiftRightLogicalVariable(Vector256.Create(*(uint*)(row + 4 * j)), Vector256.Create(0u, 4, 8, 12, 16, 20, 24, 28)) & Vector256.Create(15u);
            return Avx.ConvertToVector256Single(codes.AsInt32());
        }
        return Eight(row, j);
    }

    /// <summary>Code <paramref name="d"/> of <paramref name="row"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int At(byte* row, long d)
    {
        if ((_bits & (_bits - 1)) == 0)                                                  // 1, 2, 4, 8 bits: codes never straddle bytes
        {
            long bit = d * _bits;
            return (int)((uint)(row[bit >> 3] >> (int)(bit & 7)) & _mask);
        }
        return (int)((Word(row + (d >> 3) * _bits) >> (int)((d & 7) * _bits)) & _mask);
    }

    private ulong Word(byte* p)
    {
        ulong w = 0;
        for (int i = 0; i < _bits; i++)
            w |= (ulong)p[i] << (8 * i);
        return w;
    }
}

/// <summary>A code width known when the kernel is compiled (0: read from <see cref="PackedCodes"/> at run time).</summary>
internal interface ICodeWidth
{
    static abstract int Bits { get; }
}

internal readonly struct TwoBitCodes : ICodeWidth
{
    public static int Bits => 2;
}

internal readonly struct FourBitCodes : ICodeWidth
{
    public static int Bits => 4;
}

internal readonly struct AnyWidthCodes : ICodeWidth
{
    public static int Bits => 0;
}

/// <summary>How many of a tile's four query rows are real, known when the kernel is compiled.</summary>
internal interface IRowCount
{
    static abstract int Count { get; }
}

internal readonly struct OneRow : IRowCount
{
    public static int Count => 1;
}

internal readonly struct TwoRows : IRowCount
{
    public static int Count => 2;
}

internal readonly struct ThreeRows : IRowCount
{
    public static int Count => 3;
}

internal readonly struct FourRows : IRowCount
{
    public static int Count => 4;
}
