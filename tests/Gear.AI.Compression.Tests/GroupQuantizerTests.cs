using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

public class GroupQuantizerTests
{
    public static TheoryData<int, QuantAxis, int> BitsAxesGroups() =>
        Combinations.Of(Enumerable.Range(1, 8), [QuantAxis.PerChannel, QuantAxis.PerToken], [16, 24]);

    [Theory]
    [MemberData(nameof(BitsAxesGroups))]
    public void QuantizeDequantize_MatchesScalarReference(int bits, QuantAxis axis, int groupSize)
    {
        // n = 40 and D = 40 leave a tail group for both group sizes.
        const int rows = 3, n = 40, d = 40;
        using var g = new Generator(7);
        using Scalar three = 3;
        using var r = randn([rows, n, d], generator: g);
        using var x = r * three;
        using var q = GroupQuantizer.Quantize(x, bits, groupSize, axis);
        using var back = q.Dequantize();
        var expected = ScalarReference.QuantizeDequantize(TensorAssert.Floats(x), rows, n, d, bits, groupSize, axis);
        var actual = TensorAssert.Floats(back);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5f * (1 + Math.Abs(expected[i])), $"index {i}: expected {expected[i]}, got {actual[i]}");
    }

    [Theory]
    [InlineData(QuantAxis.PerChannel)]
    [InlineData(QuantAxis.PerToken)]
    public void Quantize_StoresPackedCodesAndHalfScalesPerGroup(QuantAxis axis)
    {
        using var x = randn(2, 4, 100, 64);
        using var q = GroupQuantizer.Quantize(x, 2, 64, axis);
        Assert.Equal(new long[] { 2, 4, 100, 16 }, q.Codes.shape);             // 64 codes × 2 bits = 16 bytes
        Assert.Equal(ScalarType.Byte, q.Codes.dtype);
        Assert.Equal(ScalarType.Float16, q.Scale.dtype);
        Assert.Equal(ScalarType.Float16, q.Zero.dtype);
        var expectedGroups = axis == QuantAxis.PerChannel ? new long[] { 2, 4, 2, 64 } : new long[] { 2, 4, 100, 1 };
        Assert.Equal(expectedGroups, q.Scale.shape);                           // 100 tokens = 64 + tail of 36
        Assert.Equal(2 * 4 * 100 * 16 + 2 * 2 * expectedGroups.Aggregate(1L, (a, b) => a * b), q.ResidentBytes);
    }

    [Fact]
    public void Quantize_CodesSpanAllLevels()
    {
        // A ramp over one group of 64 must use codes 0 and 2^b − 1 at its ends.
        using var ramp = Scalars.Arange(0, 64, 1, ScalarType.Float32, CPU).reshape(1, 64);
        using var q = GroupQuantizer.Quantize(ramp, 2, 64, QuantAxis.PerToken);
        using var codes = BitPacking.Unpack(q.Codes, 2, 64);
        var c = codes.data<byte>().ToArray();
        Assert.Equal(0, c[0]);
        Assert.Equal(3, c[^1]);
        Assert.Equal(4, c.Distinct().Count());
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.BFloat16)]
    public void Quantize_AnyFloatDtype_ErrorShrinksWithBits(ScalarType dtype)
    {
        using var x = randn(2, 2, 128, 64).to(dtype);
        using var copy = x.clone();
        double previous = double.MaxValue;
        foreach (int bits in new[] { 2, 3, 4, 8 })
        {
            using var q = GroupQuantizer.Quantize(x, bits, 64, QuantAxis.PerToken);
            using var back = q.Dequantize(dtype);
            Assert.Equal(dtype, back.dtype);
            double err = TensorAssert.RelativeError(back, x);
            Assert.True(err < previous, $"{bits} bits: error {err} not below {previous}");
            previous = err;
        }
        TensorAssert.Equal(copy, x); // input not modified
    }

    [Fact]
    public void Quantize_ConstantGroup_ReconstructsExactly()
    {
        using Scalar half = 0.5f;
        using var x = full(new long[] { 1, 8, 64 }, half);
        using var q = GroupQuantizer.Quantize(x, 2, 64, QuantAxis.PerToken);
        using var back = q.Dequantize();
        TensorAssert.Equal(x, back);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(9)]
    public void Quantize_BitsOutOfRange_Throws(int bits)
    {
        using var x = randn(4, 8);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => GroupQuantizer.Quantize(x, bits, 8, QuantAxis.PerToken));
        Assert.Equal("bits", ex.ParamName);
    }

    [Fact]
    public void QuantizeDequantize_LeaveNoTensorsAlive()
    {
        using var x = randn(2, 2, 64, 64);
        TensorAssert.NoLeaks(() =>
        {
            using var q = GroupQuantizer.Quantize(x, 2, 64, QuantAxis.PerChannel);
            using var back = q.Dequantize();
        });
    }
}
