using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression;

/// <summary>
/// A block's compression but the low rank, in one managed pass on the CPU — GEAR's outliers (k = 0 or 1 per side), the
/// group quantization of what is left and the residual R = x − (D̂ + S) — with the arithmetic of the tensor ops
/// (<see cref="OutlierSet.Extract"/>, <see cref="GroupQuantizer"/>) and the layout of
/// <see cref="Cuda.CudaKernels.CompressBlock"/>. The tensor ops are ~40 calls of a few microseconds each; a decode step that
/// fills a page runs them for keys and values of every layer.
/// </summary>
internal static unsafe class CpuBlockCompression
{
    /// <summary>
    /// <paramref name="x"/> [..., n, D] on the CPU, compressed as <see cref="Cuda.CudaKernels.CompressBlock"/> describes;
    /// null where that layout does not apply (the caller runs the tensor ops).
    /// </summary>
    public static Cuda.CudaKernels.BlockParts? CompressBlock(Tensor x, int bits, int g, QuantAxis axis, int perSide, bool residual)
    {
        long n = x.shape[^2], d = x.shape[^1];
        bool channels = axis == QuantAxis.PerChannel;
        long vector = channels ? n : g;
        if (x.device_type != DeviceType.CPU || !x.is_floating_point() || !BitPacking.TilesAByte(bits) || perSide is not (0 or 1)
            || d % 8 != 0 || n > int.MaxValue || (perSide == 1 && (vector < 3 || vector > 256))
            || (channels ? n % g != 0 : d % g != 0))
            return null;
        var lead = x.shape[..^2];
        long l = x.numel() / Math.Max(1, n * d);
        using var input = x.to(ScalarType.Float32).contiguous();
        var codes = zeros([.. lead, n, d / 8 * bits], ScalarType.Byte);
        long[] groupShape = channels ? [.. lead, n / g, d] : [.. lead, n, d / g];
        var scale = empty(groupShape, ScalarType.Float16);
        var zero = empty(groupShape, ScalarType.Float16);
        long[] outlierShape = channels ? [.. lead, d, 2] : [.. lead, n, d / g, 2];
        var values = perSide == 1 ? empty(outlierShape, ScalarType.Float16) : null;
        var index = perSide == 1 ? empty(outlierShape, ScalarType.Byte) : null;
        var rest = residual ? empty([.. lead, n, d], ScalarType.Float32) : null;
        var parts = new Block(Caching.TensorMemory.Pointer<float>(input), (int)n, (int)d, g, bits, perSide, Caching.TensorMemory.Pointer<byte>(codes), Caching.TensorMemory.Pointer<Half>(scale),
            Caching.TensorMemory.Pointer<Half>(zero), values is null ? null : Caching.TensorMemory.Pointer<Half>(values), index is null ? null : Caching.TensorMemory.Pointer<byte>(index),
            rest is null ? null : Caching.TensorMemory.Pointer<float>(rest));
        for (long slice = 0; slice < l; slice++)
        {
            if (channels)
                parts.Channels(slice);
            else
                parts.Tokens(slice);
        }
        return new Cuda.CudaKernels.BlockParts(codes, scale, zero, values, index, rest);
    }

    private readonly struct Block(float* x, int n, int d, int g, int bits, int k, byte* codes, Half* scale, Half* zero, Half* outlierValues,
        byte* outlierIndex, float* residual)
    {
        private int Levels => (1 << bits) - 1;

        private int RowBytes => d / 8 * bits;

        /// <summary>Keys: each channel's n tokens are one outlier vector, quantized in groups of g tokens.</summary>
        public void Channels(long slice)
        {
            float* src = x + slice * n * d;
            int groups = n / g;
            for (int c = 0; c < d; c++)
            {
                int top = -1, bottom = -1;
                float mean = 0f;
                if (k == 1)
                {
                    (top, bottom, mean) = Extremes(src + c, n, d);
                    int first = Math.Min(top, bottom), second = Math.Max(top, bottom);
                    long o = (slice * d + c) * 2;
                    outlierValues[o] = (Half)src[(long)first * d + c];
                    outlierValues[o + 1] = (Half)src[(long)second * d + c];
                    outlierIndex[o] = (byte)first;
                    outlierIndex[o + 1] = (byte)second;
                }
                for (int group = 0; group < groups; group++)
                {
                    int start = group * g;
                    float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
                    for (int j = start; j < start + g; j++)
                    {
                        float f = j == top || j == bottom ? mean : src[(long)j * d + c];
                        lo = MathF.Min(lo, f);
                        hi = MathF.Max(hi, f);
                    }
                    long at = (slice * groups + group) * d + c;
                    var (s, z) = ScaleZero(lo, hi, at);
                    for (int j = start; j < start + g; j++)
                    {
                        long row = slice * n + j;
                        float v = src[(long)j * d + c];
                        bool outlier = j == top || j == bottom;
                        int code = Code(outlier ? mean : v, s, z);
                        Pack(code, c, row);
                        if (residual is not null)
                            residual[row * d + c] = v - (outlier ? (float)(Half)v : z + code * s);
                    }
                }
            }
        }

        /// <summary>Values: each token's groups of g features are the outlier vectors and the quantization groups.</summary>
        public void Tokens(long slice)
        {
            int groups = d / g;
            for (int t = 0; t < n; t++)
            {
                long row = slice * n + t;
                float* src = x + row * d;
                for (int group = 0; group < groups; group++)
                {
                    float* v = src + group * g;
                    int top = -1, bottom = -1;
                    float mean = 0f;
                    if (k == 1)
                    {
                        (top, bottom, mean) = Extremes(v, g, 1);
                        long o = (row * groups + group) * 2;
                        outlierValues[o] = (Half)v[top];
                        outlierValues[o + 1] = (Half)v[bottom];
                        outlierIndex[o] = (byte)top;
                        outlierIndex[o + 1] = (byte)bottom;
                    }
                    float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
                    for (int e = 0; e < g; e++)
                    {
                        float f = e == top || e == bottom ? mean : v[e];
                        lo = MathF.Min(lo, f);
                        hi = MathF.Max(hi, f);
                    }
                    var (s, z) = ScaleZero(lo, hi, row * groups + group);
                    for (int e = 0; e < g; e++)
                    {
                        bool outlier = e == top || e == bottom;
                        int c = group * g + e, code = Code(outlier ? mean : v[e], s, z);
                        Pack(code, c, row);
                        if (residual is not null)
                            residual[row * d + c] = v[e] - (outlier ? (float)(Half)v[e] : z + code * s);
                    }
                }
            }
        }

        /// <summary>
        /// The first largest and first smallest of <paramref name="count"/> entries <paramref name="step"/> apart (argmax and
        /// argmin), and the mean of the others.
        /// </summary>
        private static (int Top, int Bottom, float Mean) Extremes(float* v, int count, long step)
        {
            int top = 0, bottom = 0;
            float hi = v[0], lo = v[0], sum = 0f;
            for (int i = 0; i < count; i++)
            {
                float f = v[i * step];
                sum += f;
                if (f > hi)
                {
                    hi = f;
                    top = i;
                }
                if (f < lo)
                {
                    lo = f;
                    bottom = i;
                }
            }
            return (top, bottom, (sum - (hi + lo)) / (count - 2));
        }

        /// <summary>The group's float16 scale and zero (stored at <paramref name="at"/>), as floats.</summary>
        private (float Scale, float Zero) ScaleZero(float lo, float hi, long at)
        {
            var s16 = (Half)((hi - lo) / Levels);
            var z16 = (Half)lo;
            scale[at] = s16;
            zero[at] = z16;
            return ((float)s16, (float)z16);
        }

        private int Code(float v, float s, float z) =>
            s > 0f ? (int)Math.Clamp(MathF.Round((v - z) / s, MidpointRounding.ToEven), 0f, Levels) : 0;

        /// <summary>ORs the code of channel <paramref name="c"/> into its byte of the packed row (lowest bits first).</summary>
        private void Pack(int code, int c, long row)
        {
            int perByte = 8 / bits;
            codes[row * RowBytes + c / perByte] |= (byte)(code << (c % perByte * bits));
        }
    }
}
