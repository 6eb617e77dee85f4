using Gear.AI.Compression.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// The fused CUDA decode path: the kernels of <c>gear_decode.cu</c> launched on this store's tensors.
/// Same terms as the tensor path (<see cref="Dequantize"/>, <see cref="LowRankScores"/>,
/// <see cref="LowRankOutput"/>), which stays the reference they are tested against on the GPU machine.
/// </summary>
internal sealed partial class CompressedStore
{
    /// <summary>Whether the CUDA kernels can read this store: byte-aligned code widths, rank ≤ 8, groups of at most 256 features.</summary>
    public bool SupportsCudaKernel =>
        _bits is 1 or 2 or 4 or 8 && _headDim % 8 == 0 && _headDim <= 1024 && _groupSize <= 1024
        && (_axis == QuantAxis.PerToken || _groupSize % 32 == 0)                          // key groups: whole warps of tokens
        && (_axis == QuantAxis.PerChannel || _groupSize <= 256)
        && (_a is null || _a.shape[^1] <= CudaKernels.MaxRank);

    /// <summary>Writes q·K̂ᵀ (dequantized keys, outliers, low rank) into columns [offset, offset + T) of <paramref name="scores"/>.</summary>
    /// <param name="module">The loaded kernels.</param>
    /// <param name="q">Queries [B, H, M, D], float32, contiguous, M ≤ 8.</param>
    /// <param name="scores">[B, H, M, ld] float32, contiguous.</param>
    /// <param name="offset">First column of this store's tokens.</param>
    public unsafe void CudaKeyScores(CudaKernels.Module module, Tensor q, Tensor scores, long offset)
    {
        int bh = checked((int)(q.shape[0] * q.shape[1])), m = (int)q.shape[2], d = (int)_headDim, length = checked((int)Length), g = _groupSize, bits = _bits;
        int r = _a is null ? 0 : (int)_a.shape[^1], blocks = BlockCount;
        long ld = scores.shape[^1];
        IntPtr qp = Address(q), codes = Address(_codes!), scale = Address(_scale!), zero = Address(_zero!), sp = Address(scores);
        IntPtr a = r > 0 ? Address(_a!) : 0, b = r > 0 ? Address(_b!) : 0, groupBlock = r > 0 ? Address(_groupBlock!) : 0;
        void** args = stackalloc void*[16];
        args[0] = &qp; args[1] = &codes; args[2] = &scale; args[3] = &zero; args[4] = &a; args[5] = &b; args[6] = &groupBlock;
        args[7] = &r; args[8] = &blocks; args[9] = &sp; args[10] = &length; args[11] = &d; args[12] = &bits; args[13] = &g;
        args[14] = &ld; args[15] = &offset;
        uint shared = (uint)(sizeof(float) * (m * d + m + m * r));
        CudaDriver.Launch(module.KeyScores[m - 1], ((uint)(length / g), (uint)bh), (uint)g, shared, args);

        if (_outlierValues is null)
            return;
        int slots = (int)_outlierValues.shape[^1], indexBytes = (int)_outlierIndex!.ElementSize;
        IntPtr values = Address(_outlierValues), index = Address(_outlierIndex), slotOffset = Address(_outlierOffset!);
        void** outlierArgs = stackalloc void*[16];
        outlierArgs[0] = &qp; outlierArgs[1] = &codes; outlierArgs[2] = &scale; outlierArgs[3] = &zero; outlierArgs[4] = &values;
        outlierArgs[5] = &index; outlierArgs[6] = &indexBytes; outlierArgs[7] = &slotOffset; outlierArgs[8] = &sp; outlierArgs[9] = &length;
        outlierArgs[10] = &d; outlierArgs[11] = &bits; outlierArgs[12] = &g; outlierArgs[13] = &slots; outlierArgs[14] = &ld; outlierArgs[15] = &offset;
        uint tiles = (uint)((length + CudaKernels.OutlierTile - 1) / CudaKernels.OutlierTile);
        CudaDriver.Launch(module.KeyOutliers[m - 1], (tiles, (uint)bh), 256, (uint)(sizeof(float) * m * CudaKernels.OutlierTile), outlierArgs);
    }

    /// <summary>Value chunks this store contributes to the partial sums of <see cref="CudaValueChunks"/> (one per value group of tokens).</summary>
    public int CudaChunks => checked((int)(Length / _groupSize));

    /// <summary>
    /// p·V̂ (dequantized values, outliers, low rank) for the probabilities in columns [offset, offset + T) of
    /// <paramref name="p"/>, one row of sums per chunk written to slots [slotBase, slotBase + <see cref="CudaChunks"/>)
    /// of <paramref name="partial"/> (the caller sums over slots).
    /// </summary>
    /// <param name="module">The loaded kernels.</param>
    /// <param name="p">[B, H, M, ld] float32, contiguous, M ≤ 8.</param>
    /// <param name="offset">First column of this store's tokens.</param>
    /// <param name="partial">[B·H, slots, M, D] float32, contiguous.</param>
    /// <param name="slotBase">First slot of this store.</param>
    public unsafe void CudaValueChunks(CudaKernels.Module module, Tensor p, long offset, Tensor partial, int slotBase)
    {
        int bh = checked((int)(p.shape[0] * p.shape[1])), m = (int)p.shape[2], d = (int)_headDim, length = checked((int)Length), bits = _bits;
        int gv = _groupSize, chunk = _groupSize, chunks = CudaChunks, slots = (int)partial.shape[1];   // blocks are whole value groups
        int r = _a is null ? 0 : (int)_a.shape[^1], blocks = BlockCount;
        int outliers = _outlierValues is null ? 0 : (int)_outlierValues.shape[^1];
        long ld = p.shape[^1];
        IntPtr pp = Address(p), codes = Address(_codes!), scale = Address(_scale!), zero = Address(_zero!), out_ = Address(partial);
        IntPtr values = outliers > 0 ? Address(_outlierValues!) : 0, index = outliers > 0 ? Address(_outlierIndex!) : 0;
        IntPtr a = r > 0 ? Address(_a!) : 0, b = r > 0 ? Address(_b!) : 0, groupBlock = r > 0 ? Address(_groupBlock!) : 0;
        void** args = stackalloc void*[22];
        args[0] = &pp; args[1] = &codes; args[2] = &scale; args[3] = &zero; args[4] = &values; args[5] = &index; args[6] = &outliers;
        args[7] = &a; args[8] = &b; args[9] = &groupBlock; args[10] = &r; args[11] = &blocks; args[12] = &out_; args[13] = &slots;
        args[14] = &slotBase; args[15] = &length; args[16] = &d; args[17] = &bits; args[18] = &gv; args[19] = &chunk; args[20] = &ld; args[21] = &offset;
        uint threads = (uint)Math.Max(64, (d + 31) / 32 * 32);
        uint shared = (uint)(sizeof(float) * (m * chunk * (d / gv) + m * (d / gv) + m * r + m * d));
        CudaDriver.Launch(module.ValueChunk[m - 1], ((uint)chunks, (uint)bh), threads, shared, args);
    }

    private static IntPtr Address(Tensor t) => TensorMemory.DeviceAddress(t);
}
