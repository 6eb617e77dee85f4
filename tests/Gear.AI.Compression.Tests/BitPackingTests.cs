using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

public class BitPackingTests
{
    public static TheoryData<int, int> BitsAndLengths() =>
        Combinations.Of(Enumerable.Range(1, 8), [1, 7, 8, 9, 64, 100]);

    [Theory]
    [MemberData(nameof(BitsAndLengths))]
    public void PackUnpack_AnyBitsAndLength_RoundTrips(int bits, int length)
    {
        using var g = new Generator(42);
        using var codes = randint(0, 1 << bits, [3, 2, length], dtype: ScalarType.Byte, generator: g);
        using var packed = BitPacking.Pack(codes, bits);
        Assert.Equal(ScalarType.Byte, packed.dtype);
        Assert.Equal(new long[] { 3, 2, BitPacking.PackedLength(length, bits) }, packed.shape);
        using var unpacked = BitPacking.Unpack(packed, bits, length);
        TensorAssert.Equal(codes, unpacked);
    }

    [Fact]
    public void Pack_TwoBits_FourCodesPerByteLowBitsFirst()
    {
        using var codes = tensor(new byte[] { 1, 2, 3, 0, 3, 3, 3, 3 }).reshape(1, 8);
        using var packed = BitPacking.Pack(codes, 2);
        // 1 | 2<<2 | 3<<4 | 0<<6 = 0b00_11_10_01 = 57; then 255.
        Assert.Equal(new byte[] { 57, 255 }, packed.data<byte>().ToArray());
    }

    [Fact]
    public void Pack_ThreeBits_RunsAcrossByteBoundaries()
    {
        using var codes = tensor(new byte[] { 7, 0, 0, 0, 0, 0, 0, 7 }).reshape(1, 8);
        using var packed = BitPacking.Pack(codes, 3);
        // word = 7 | 7 << 21 → bytes 0x07, 0x00, 0xE0.
        Assert.Equal(new byte[] { 0x07, 0x00, 0xE0 }, packed.data<byte>().ToArray());
    }

    [Fact]
    public void Unpack_WrongLength_ThrowsNamingShapes()
    {
        using var packed = zeros(2, 5, dtype: ScalarType.Byte);
        var ex = Assert.Throws<ArgumentException>(() => BitPacking.Unpack(packed, 2, 16));
        Assert.Contains("[..., 4]", ex.Message);
    }

    [Fact]
    public void PackUnpack_LeaveNoTensorsAlive()
    {
        using var codes = randint(0, 8, [4, 64], dtype: ScalarType.Byte);
        TensorAssert.NoLeaks(() =>
        {
            using var p = BitPacking.Pack(codes, 3);
            using var u = BitPacking.Unpack(p, 3, 64);
        });
    }
}
