using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// Decode-time attention terms computed straight from packed 2- or 4-bit codes on the CPU, without
/// materializing the dequantized history: per row, the codes are expanded once into a small float
/// buffer and consumed by <see cref="TensorPrimitives"/> dot products and multiply-adds. Outliers are
/// applied as exact corrections. The TorchSharp dequantize-then-matmul path stays the reference (and
/// the path for CUDA, other bit widths and long query blocks); tests compare the two.
/// </summary>
/// <remarks>
/// Keys (per-channel groups of g tokens): s[m,t] = Σ_d (q[m,d]·σ[g,d])·c[t,d] + Σ_d q[m,d]·z[g,d].
/// Values (per-token groups of g features): o[m,·] = Σ_t (p[m,t]·σ[t,γ])·c[t,·] + Σ_t p[m,t]·z[t,γ].
/// </remarks>
internal static unsafe class FusedCpuAttention
{
    /// <summary>Most query rows (G·Tq) the fused path takes; decode steps have G.</summary>
    public const long MaxRows = 16;

    /// <summary>Turns the fused path off (tests compare it with the reference path).</summary>
    internal static bool Enabled { get; set; } = true;

    /// <summary>Whether the fused path applies to queries or probabilities <paramref name="x"/> [B, H, M, ·].</summary>
    public static bool Applies(Tensor x, int bits, long headDim) =>
        Enabled && x.device.type == DeviceType.CPU && x.dtype == ScalarType.Float32 && bits is 2 or 4 &&
        x.shape[2] <= MaxRows && headDim % (8 / bits) == 0;

    /// <summary>Address of the first element of a CPU tensor of element type <typeparamref name="T"/>.</summary>
    private static T* Ptr<T>(Tensor t) where T : unmanaged => (T*)((byte*)t.storage<T>().data_ptr() + t.storage_offset() * t.ElementSize);

    /// <summary>Expands one row of packed codes into floats.</summary>
    private static void Unpack(byte* row, int bits, Span<float> dest)
    {
        int perByte = 8 / bits, mask = (1 << bits) - 1;
        for (int j = 0, d = 0; d < dest.Length; j++)
        {
            int b = row[j];
            for (int i = 0; i < perByte; i++, d++)
                dest[d] = (b >> (i * bits)) & mask;
        }
    }

    private static float CodeAt(byte* row, int bits, int d)
    {
        int perByte = 8 / bits;
        return (row[d / perByte] >> (d % perByte * bits)) & ((1 << bits) - 1);
    }

    /// <summary>
    /// q [B, H, M, D] (float32, contiguous) against per-channel keys: scores [B, H, M, T] of D̂ + S.
    /// </summary>
    public static Tensor KeyScores(Tensor q, Tensor codes, Tensor scale, Tensor zero, Tensor? outlierValues, Tensor? outlierIndex, Tensor? outlierOffset, int bits, int g)
    {
        long b = q.shape[0], h = q.shape[1], m = q.shape[2], d = q.shape[3], t = codes.shape[2], rowBytes = codes.shape[3];
        long groups = scale.shape[2];
        using var scope = NewDisposeScope();
        var qc = q.contiguous();
        var s = scale.to(ScalarType.Float32).contiguous();                                   // [B, H, G, D]
        var z = zero.to(ScalarType.Float32).contiguous();
        var c = codes.contiguous();
        var result = empty([b, h, m, t], ScalarType.Float32);                                // [B, H, M, T]
        Tensor? ov = outlierValues?.to(ScalarType.Float32).contiguous();                     // [B, H, D, K]
        Tensor? oi = outlierIndex?.to(ScalarType.Int64).contiguous();
        Tensor? oo = outlierOffset?.contiguous();
        float* qp = Ptr<float>(qc), sp = Ptr<float>(s), zp = Ptr<float>(z), rp = Ptr<float>(result);
        byte* cp = Ptr<byte>(c);
        float* ovp = ov is null ? null : Ptr<float>(ov);
        long* oip = oi is null ? null : Ptr<long>(oi);
        long* oop = oo is null ? null : Ptr<long>(oo);
        long slots = ov?.shape[3] ?? 0;
        Parallel.For(0, (int)(b * h), bh =>
        {
            float* qh = qp + bh * m * d;
            float* rh = rp + bh * m * t;
            byte* ch = cp + bh * t * rowBytes;
            var qs = new float[m * d];
            var qz = new float[m];
            var row = new float[d];
            for (long grp = 0; grp < groups; grp++)
            {
                var sg = new ReadOnlySpan<float>(sp + (bh * groups + grp) * d, (int)d);
                var zg = new ReadOnlySpan<float>(zp + (bh * groups + grp) * d, (int)d);
                for (long r = 0; r < m; r++)
                {
                    var qr = new ReadOnlySpan<float>(qh + r * d, (int)d);
                    TensorPrimitives.Multiply(qr, sg, qs.AsSpan((int)(r * d), (int)d));
                    qz[r] = TensorPrimitives.Dot(qr, zg);
                }
                long end = Math.Min(t, (grp + 1) * g);
                for (long tok = grp * g; tok < end; tok++)
                {
                    Unpack(ch + tok * rowBytes, bits, row);
                    for (long r = 0; r < m; r++)
                        rh[r * t + tok] = TensorPrimitives.Dot(qs.AsSpan((int)(r * d), (int)d), row) + qz[r];
                }
            }
            // Outliers replace D̂ at their positions: add q·(value − D̂).
            for (long ch2 = 0; ch2 < (ovp is null ? 0 : d); ch2++)
            {
                for (long j = 0; j < slots; j++)
                {
                    long at = (bh * d + ch2) * slots + j;
                    long tok = oip[at] + oop[j];
                    long grp = tok / g;
                    float dq = CodeAt(ch + tok * rowBytes, bits, (int)ch2) * sp[(bh * groups + grp) * d + ch2] + zp[(bh * groups + grp) * d + ch2];
                    float delta = ovp[at] - dq;
                    for (long r = 0; r < m; r++)
                        rh[r * t + tok] += qh[r * d + ch2] * delta;
                }
            }
        });
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// p [B, H, M, T] (float32) against per-token values: output [B, H, M, D] of p·(D̂ + S).
    /// </summary>
    public static Tensor ValueOutput(Tensor p, Tensor codes, Tensor scale, Tensor zero, Tensor? outlierValues, Tensor? outlierIndex, int bits, int g)
    {
        long b = p.shape[0], h = p.shape[1], m = p.shape[2], t = p.shape[3], rowBytes = codes.shape[3];
        long groups = scale.shape[3], d = groups * g;
        using var scope = NewDisposeScope();
        var pc = p.contiguous();
        var s = scale.to(ScalarType.Float32).contiguous();                                   // [B, H, T, Gv]
        var z = zero.to(ScalarType.Float32).contiguous();
        var c = codes.contiguous();
        var result = zeros([b, h, m, d], ScalarType.Float32);                                // [B, H, M, D]
        Tensor? ov = outlierValues?.to(ScalarType.Float32).contiguous();                     // [B, H, T, Gv, 2k]
        Tensor? oi = outlierIndex?.to(ScalarType.Int64).contiguous();
        float* pp = Ptr<float>(pc), sp = Ptr<float>(s), zp = Ptr<float>(z), rp = Ptr<float>(result);
        byte* cp = Ptr<byte>(c);
        float* ovp = ov is null ? null : Ptr<float>(ov);
        long* oip = oi is null ? null : Ptr<long>(oi);
        long k2 = ov?.shape[4] ?? 0;
        Parallel.For(0, (int)(b * h), bh =>
        {
            float* ph = pp + bh * m * t;
            float* oh = rp + bh * m * d;
            byte* ch = cp + bh * t * rowBytes;
            var row = new float[d];
            var zsum = new float[m * groups];
            for (long tok = 0; tok < t; tok++)
            {
                Unpack(ch + tok * rowBytes, bits, row);
                for (long r = 0; r < m; r++)
                {
                    float pr = ph[r * t + tok];
                    for (long grp = 0; grp < groups; grp++)
                    {
                        float w = pr * sp[(bh * t + tok) * groups + grp];
                        var dest = new Span<float>(oh + r * d + grp * g, g);
                        TensorPrimitives.MultiplyAdd(row.AsSpan((int)(grp * g), g), w, dest, dest);
                        zsum[r * groups + grp] += pr * zp[(bh * t + tok) * groups + grp];
                    }
                }
                if (ovp is null)
                    continue;
                for (long grp = 0; grp < groups; grp++)
                {
                    float sc = sp[(bh * t + tok) * groups + grp], zz = zp[(bh * t + tok) * groups + grp];
                    for (long j = 0; j < k2; j++)
                    {
                        long at = ((bh * t + tok) * groups + grp) * k2 + j;
                        long feature = grp * g + oip[at];
                        float delta = ovp[at] - (row[feature] * sc + zz);
                        for (long r = 0; r < m; r++)
                            oh[r * d + feature] += ph[r * t + tok] * delta;
                    }
                }
            }
            for (long r = 0; r < m; r++)
                for (long grp = 0; grp < groups; grp++)
                    TensorPrimitives.Add(new ReadOnlySpan<float>(oh + r * d + grp * g, g), zsum[r * groups + grp], new Span<float>(oh + r * d + grp * g, g));
        });
        return result.MoveToOuterDisposeScope();
    }
}
