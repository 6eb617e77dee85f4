using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression;

/// <summary>
/// Asymmetric uniform group-wise quantization (the "D̂" of GEAR, and KIVI's quantizer).
/// </summary>
/// <remarks>
/// For each group of up to g entries: zero = min, scale = (max − min) / (2^b − 1), both rounded to
/// float16 (what is stored); code = clamp(round((x − zero) / scale), 0, 2^b − 1) computed with the
/// stored float16 values (0 when scale is 0); x̂ = code · scale + zero. A tail group shorter than g
/// (length not a multiple of g) is quantized on its own entries.
/// </remarks>
internal static class GroupQuantizer
{
    /// <summary>Quantizes <paramref name="x"/> [..., tokens, features] (float32, float16 or bfloat16; not modified).</summary>
    /// <param name="x">Input, at least 2-D; the last two dimensions are tokens and features.</param>
    /// <param name="bits">Bits per code, 1 to 8.</param>
    /// <param name="groupSize">Group length; per-token groups use min(groupSize, features).</param>
    /// <param name="axis">Per-channel (groups along tokens) or per-token (groups along features).</param>
    /// <param name="fused">False: the tensor ops alone, the reference the CUDA kernel is compared with.</param>
    public static QuantizedTensor Quantize(Tensor x, int bits, int groupSize, QuantAxis axis, bool fused = true)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (bits is < 1 or > 8)
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "bits must be between 1 and 8.");
        if (groupSize < 1)
            throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, "groupSize must be at least 1.");
        if (x.dim() < 2)
            throw new ArgumentException($"Expected a tensor [..., tokens, features], got [{string.Join(", ", x.shape)}].", nameof(x));
        if (!x.is_floating_point())
            throw new ArgumentException($"Expected a floating-point tensor, got {x.dtype}.", nameof(x));

        using var scope = NewDisposeScope();
        var xf = x.to(ScalarType.Float32);                                    // [..., n, D]
        int g = EffectiveGroupSize(groupSize, axis, x.shape[^1]);
        Tensor codes, scale, zero;
        if (fused && Cuda.CudaKernels.Quantize(xf, bits, g, axis) is { } kernel)
        {
            // One launch on CUDA (same codes, scales and zeros: gpu-selftest compares them with the tensor ops below).
            return new QuantizedTensor(
                kernel.Codes.DetachFromDisposeScope(), kernel.Scale.DetachFromDisposeScope(), kernel.Zero.DetachFromDisposeScope(),
                x.shape, bits, g, axis);
        }
        if (axis == QuantAxis.PerChannel)
        {
            (codes, scale, zero) = QuantizeLastDim(xf.transpose(-1, -2), bits, g); // [..., D, n], [..., D, G]
            codes = codes.transpose(-1, -2);                                   // [..., n, D]
            scale = scale.transpose(-1, -2).contiguous();                      // [..., G, D]
            zero = zero.transpose(-1, -2).contiguous();                        // [..., G, D]
        }
        else
        {
            (codes, scale, zero) = QuantizeLastDim(xf, bits, g);               // [..., n, D], [..., n, G]
        }
        var packed = BitPacking.Pack(codes, bits);                             // [..., n, ceil(D/8)·b]
        return new QuantizedTensor(
            packed.DetachFromDisposeScope(), scale.DetachFromDisposeScope(), zero.DetachFromDisposeScope(),
            x.shape, bits, g, axis);
    }

    /// <summary>The group length actually used: per-token groups never exceed the feature count.</summary>
    public static int EffectiveGroupSize(int groupSize, QuantAxis axis, long features) =>
        axis == QuantAxis.PerToken ? (int)Math.Min(groupSize, features) : groupSize;

    /// <summary>
    /// Quantizes along the last dimension in groups of <paramref name="g"/> (tail group allowed).
    /// Returns unpacked uint8 codes [..., m] and float16 scale and zero [..., ceil(m/g)].
    /// </summary>
    internal static (Tensor Codes, Tensor Scale, Tensor Zero) QuantizeLastDim(Tensor x, int bits, int g)
    {
        using var scope = NewDisposeScope();
        long m = x.shape[^1];
        long groups = (m + g - 1) / g;
        var lead = x.shape[..^1];
        var padded = x;
        if (groups * g != m)
        {
            // Repeat the last entry: the tail group's min and max stay its own.
            var last = x.narrow(-1, m - 1, 1).expand([.. lead, groups * g - m]);
            padded = cat([x, last], -1);                                       // [..., G·g]
        }
        var v = padded.reshape([.. lead, groups, g]);                          // [..., G, g]
        int levels = (1 << bits) - 1;
        var mn = v.amin([-1L], keepdim: true);                                 // [..., G, 1]
        var mx = v.amax([-1L], keepdim: true);                                 // [..., G, 1]
        using Scalar levelCount = levels;
        var scale16 = (mx - mn).div_(levelCount).to(ScalarType.Float16);      // stored
        var zero16 = mn.to(ScalarType.Float16);                                // stored
        var s = scale16.to(ScalarType.Float32);
        var z = zero16.to(ScalarType.Float32);
        var q = (v - z).div_(s).round_().clamp_(Scalars.Zero, levelCount);     // [..., G, g], in place: one transient
        q.masked_fill_((s > Scalars.Zero).logical_not(), Scalars.Zero);        // constant groups: code 0
        var codes = q.to(ScalarType.Byte).reshape([.. lead, groups * g]);      // [..., G·g]
        if (groups * g != m)
            codes = codes.narrow(-1, 0, m);
        return (codes.contiguous().MoveToOuterDisposeScope(),
                scale16.squeeze(-1).MoveToOuterDisposeScope(),
                zero16.squeeze(-1).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Dequantizes packed codes [..., n, Dp] with per-group scale/zero, for one block or many stored
    /// back to back (per-channel groups must then not straddle blocks).
    /// </summary>
    internal static Tensor Dequantize(Tensor packed, Tensor scale, Tensor zero, int bits, int g, QuantAxis axis, long features, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var codes = UnpackToFloat(packed, bits, features);                     // [..., n, D] float32
        long n = codes.shape[^2];
        var s = scale.to(ScalarType.Float32);
        var z = zero.to(ScalarType.Float32);
        Tensor result;
        if (axis == QuantAxis.PerToken)
        {
            long groups = s.shape[^1];                                         // s: [..., n, G]
            if (groups * g == features)
            {
                var lead = codes.shape[..^1];
                result = addcmul(z.unsqueeze(-1), codes.view([.. lead, groups, g]), s.unsqueeze(-1), Scalars.One) // x = z + code · s
                         .view(codes.shape);                                   // [..., n, D]
            }
            else
            {
                result = (codes * s.repeat_interleave(g, -1).narrow(-1, 0, features))
                         .add_(z.repeat_interleave(g, -1).narrow(-1, 0, features), Scalars.One);
            }
        }
        else
        {
            long groups = s.shape[^2];                                         // s: [..., G, D]
            if (groups * g == n)
            {
                var lead = codes.shape[..^2];
                result = addcmul(z.unsqueeze(-2), codes.view([.. lead, groups, g, features]), s.unsqueeze(-2), Scalars.One)
                         .view(codes.shape);                                   // [..., n, D]
            }
            else
            {
                result = (codes * s.repeat_interleave(g, -2).narrow(-2, 0, n))
                         .add_(z.repeat_interleave(g, -2).narrow(-2, 0, n), Scalars.One);
            }
        }
        return (result.dtype == dtype ? result : result.to(dtype)).MoveToOuterDisposeScope();
    }

    private static readonly Dictionary<int, Tensor> s_tables = [];                // CPU lookup tables by code width

    /// <summary>
    /// Packed codes straight to float32 [..., n, D]. On the CPU, for 1, 2, 4 and 8 bits, one table lookup per byte
    /// gives its 8/b codes as floats (one pass instead of shift, mask, reshape and convert). On CUDA the shifts are
    /// elementwise kernels at memory speed, where index_select over millions of bytes is not (2.9 ms against ~0.1 ms
    /// for a 64-token block at batch 71 on an H100).
    /// </summary>
    private static Tensor UnpackToFloat(Tensor packed, int bits, long features)
    {
        if (packed.device_type != DeviceType.CPU || 8 % bits != 0 || features % (8 / bits) != 0)
            return BitPacking.Unpack(packed, bits, features).to(ScalarType.Float32);
        int perByte = 8 / bits;
        Tensor table;
        lock (s_tables)
        {
            if (!s_tables.TryGetValue(bits, out table!))
            {
                var values = new float[256 * perByte];
                for (int b = 0; b < 256; b++)
                    for (int i = 0; i < perByte; i++)
                        values[b * perByte + i] = (b >> (i * bits)) & ((1 << bits) - 1);
                table = tensor(values, [256, perByte]).DetachFromDisposeScope();
                s_tables[bits] = table;
            }
        }
        var lead = packed.shape[..^1];
        long bytes = features / perByte;
        var index = packed.narrow(-1, 0, bytes).reshape(-1).to(ScalarType.Int32); // [N·bytes]
        return table.index_select(0, index).view([.. lead, features]);            // [..., n, D]
    }
}
