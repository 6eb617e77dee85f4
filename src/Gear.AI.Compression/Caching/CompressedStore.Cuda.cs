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
        && View.Rank <= CudaKernels.MaxRank;

    /// <summary>Writes q·K̂ᵀ (dequantized keys, outliers, low rank) into columns [offset, offset + T) of the scores.</summary>
    /// <param name="module">The loaded kernels.</param>
    /// <param name="qp">Queries [B·H, M, D], float32, contiguous, M ≤ 8 (device address).</param>
    /// <param name="sp">Scores [B·H, M, ld] float32, contiguous (device address).</param>
    /// <param name="bh">B·H.</param>
    /// <param name="m">Query rows M.</param>
    /// <param name="ld">Row length of the scores.</param>
    /// <param name="offset">First column of this store's tokens.</param>
    public unsafe void CudaKeyScores(CudaKernels.Module module, IntPtr qp, IntPtr sp, int bh, int m, long ld, long offset)
    {
        var view = View;
        int d = (int)_headDim, length = checked((int)Length), g = _groupSize, bits = _bits, r = view.Rank, blocks = BlockCount;
        IntPtr codes = view.Codes, scale = view.Scale, zero = view.Zero, a = view.A, b = view.B, groupBlock = view.GroupBlock;
        void** args = stackalloc void*[16];
        args[0] = &qp; args[1] = &codes; args[2] = &scale; args[3] = &zero; args[4] = &a; args[5] = &b; args[6] = &groupBlock;
        args[7] = &r; args[8] = &blocks; args[9] = &sp; args[10] = &length; args[11] = &d; args[12] = &bits; args[13] = &g;
        args[14] = &ld; args[15] = &offset;
        uint shared = (uint)(sizeof(float) * (m * d + m + m * r));
        CudaDriver.Launch(module.KeyScores[m - 1], ((uint)(length / g), (uint)bh), (uint)g, shared, args);

        if (view.Slots == 0)
            return;
        int slots = view.Slots, indexBytes = view.IndexBytes;
        IntPtr values = view.OutlierValues, index = view.OutlierIndex, slotOffset = view.OutlierOffset;
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
    /// <paramref name="pp"/>, one row of sums per chunk written to slots [slotBase, slotBase + <see cref="CudaChunks"/>)
    /// of <paramref name="out_"/> (the caller sums over slots).
    /// </summary>
    /// <param name="module">The loaded kernels.</param>
    /// <param name="pp">Probabilities [B·H, M, ld] float32, contiguous, M ≤ 8 (device address).</param>
    /// <param name="out_">Partial sums [B·H, slots, M, D] float32, contiguous (device address).</param>
    /// <param name="bh">B·H.</param>
    /// <param name="m">Query rows M.</param>
    /// <param name="ld">Row length of the probabilities.</param>
    /// <param name="slots">Slots of the partial sums.</param>
    /// <param name="offset">First column of this store's tokens.</param>
    /// <param name="slotBase">First slot of this store.</param>
    public unsafe void CudaValueChunks(CudaKernels.Module module, IntPtr pp, IntPtr out_, int bh, int m, long ld, int slots, long offset, int slotBase)
    {
        var view = View;
        int d = (int)_headDim, length = checked((int)Length), bits = _bits;
        int gv = _groupSize, chunk = _groupSize, chunks = CudaChunks;                      // blocks are whole value groups
        int r = view.Rank, blocks = BlockCount, outliers = view.Slots;
        IntPtr codes = view.Codes, scale = view.Scale, zero = view.Zero, values = view.OutlierValues, index = view.OutlierIndex;
        IntPtr a = view.A, b = view.B, groupBlock = view.GroupBlock;
        void** args = stackalloc void*[22];
        args[0] = &pp; args[1] = &codes; args[2] = &scale; args[3] = &zero; args[4] = &values; args[5] = &index; args[6] = &outliers;
        args[7] = &a; args[8] = &b; args[9] = &groupBlock; args[10] = &r; args[11] = &blocks; args[12] = &out_; args[13] = &slots;
        args[14] = &slotBase; args[15] = &length; args[16] = &d; args[17] = &bits; args[18] = &gv; args[19] = &chunk; args[20] = &ld; args[21] = &offset;
        uint threads = (uint)Math.Max(64, (d + 31) / 32 * 32);
        uint shared = (uint)(sizeof(float) * (m * chunk * (d / gv) + m * (d / gv) + m * r + m * d));
        CudaDriver.Launch(module.ValueChunk[m - 1], ((uint)chunks, (uint)bh), threads, shared, args);
    }

}
