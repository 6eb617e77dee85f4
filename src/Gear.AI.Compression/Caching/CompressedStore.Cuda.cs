using System.Numerics;
using Gear.AI.Compression.Cuda;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// The fused CUDA decode path: the kernels of <c>gear_decode.cu</c> launched on this store's tensors.
/// Same terms as the tensor path (<see cref="Dequantize"/>, <see cref="LowRankScores"/>,
/// <see cref="LowRankOutput"/>), which stays the reference they are tested against on the GPU machine.
/// </summary>
internal sealed partial class CompressedStore
{
    /// <summary>
    /// Whether the CUDA kernels can read this store: 1-, 2-, 4- or 8-bit codes, head size a power of two from 8 to 256,
    /// key groups of 32, 64, 128 or 256 tokens (whole warps, a power of two), value groups the value kernel can split for every row count,
    /// rank ≤ 8.
    /// </summary>
    public bool SupportsCudaKernel =>
        _bits is 1 or 2 or 4 or 8 && _headDim is >= 8 and <= 256 && long.IsPow2(_headDim)
        && (_axis == QuantAxis.PerToken
            ? CudaKernels.PieceWidth(CudaKernels.MaxRows, _bits, (int)_headDim, _groupSize) > 0
            : _groupSize is 32 or 64 or 128 or 256)
        && View.Rank <= CudaKernels.MaxRank;

    /// <summary>
    /// Writes q·K̂ᵀ (dequantized keys, outliers, low rank) into columns [offset, offset + T) of the scores: one launch,
    /// a span of up to 256 tokens (whole key groups) per thread block.
    /// </summary>
    /// <param name="module">The loaded kernels.</param>
    /// <param name="q">The queries [B·H, M, D], M ≤ 8.</param>
    /// <param name="sp">Scores [B·H, M, ld] float32, contiguous (device address).</param>
    /// <param name="bh">B·H.</param>
    /// <param name="ld">Row length of the scores.</param>
    /// <param name="offset">First column of this store's tokens.</param>
    /// <param name="stream">The stream to launch on (default: the legacy default stream).</param>
    public unsafe void CudaKeyScores(CudaKernels.Module module, in CudaKernels.Queries q, IntPtr sp, int bh, long ld, long offset, IntPtr stream = default)
    {
        var view = View;
        int d = (int)_headDim, length = checked((int)Length), g = _groupSize, gShift = BitOperations.Log2((uint)g), bits = _bits;
        int r = view.Rank, blocks = BlockCount;
        int rows = q.Rows, bucket = CudaKernels.Module.Bucket(rows), qType = q.Type, slots = view.Slots, indexBytes = view.IndexBytes;
        float qScale = q.Scale;
        int groups = length / g;
        int per = KeyGroupsPerBlock(groups, bucket, r);
        uint shared = (uint)KeySharedBytes(per, bucket, r);
        IntPtr qp = q.Address, codes = view.Codes, scale = view.Scale, zero = view.Zero, a = view.A, b = view.B, groupBlock = view.GroupBlock;
        IntPtr values = view.OutlierValues, index = view.OutlierIndex, outlierGroups = view.OutlierGroups;
        void** args = stackalloc void*[23];
        args[0] = &qp; args[1] = &qType; args[2] = &qScale; args[3] = &rows; args[4] = &codes; args[5] = &scale; args[6] = &zero;
        args[7] = &a; args[8] = &b; args[9] = &groupBlock; args[10] = &r; args[11] = &blocks; args[12] = &values; args[13] = &index;
        args[14] = &indexBytes; args[15] = &outlierGroups; args[16] = &slots; args[17] = &sp; args[18] = &length; args[19] = &d;
        args[20] = &gShift; args[21] = &ld; args[22] = &offset;
        CudaDriver.Launch(module.Pick(module.KeyScores, rows, bits), ((uint)((groups + per - 1) / per), (uint)bh), (uint)(per * g), shared, args, stream);
        CudaKernels.PhaseMarker?.Invoke("key_scores");
    }

    /// <summary>
    /// Key groups per thread block: up to <see cref="CudaKernels.KeySpan"/> tokens, no more groups than the store has
    /// (a short store of a few decode blocks gets a block of its own size), fewer where the shared memory would pass 48 KiB.
    /// </summary>
    private int KeyGroupsPerBlock(int groups, int rows, int rank)
    {
        // At most 15 groups: a span meets at most groups + 1 blocks, and the kernel lists up to 16 (MAX_SPAN_BLOCKS).
        int per = Math.Clamp(Math.Min(1024, CudaKernels.KeySpan) / _groupSize, 1, Math.Clamp(groups, 1, 15));
        while (per > 1 && KeySharedBytes(per, rows, rank) > CudaKernels.SharedLimit)
            per /= 2;
        return per;
    }

    /// <summary>Dynamic shared memory of the key kernel: queries, and per group q·scale, q·zero, q·B, zeros, outlier corrections.</summary>
    private int KeySharedBytes(int per, int rows, int rank) =>
        sizeof(float) * (int)(rows * _headDim + per * rows * _headDim + per * rows * (1 + rank) + per * _headDim + rows * per * _groupSize);

    /// <summary>This value store's low-rank factors for <see cref="CudaKernels.Finish"/>, its tokens at column <paramref name="offset"/>; null without low rank.</summary>
    public CudaKernels.LowRankStore? CudaLowRank(long offset)
    {
        var view = View;
        if (view.Rank == 0)
            return null;
        return new CudaKernels.LowRankStore
        {
            A = view.A, B = view.B, GroupBlock = view.GroupBlock, Rank = view.Rank, Blocks = BlockCount,
            Length = checked((int)Length), GroupSize = _groupSize, Offset = offset,
        };
    }

    /// <summary>How <see cref="CudaValues"/> splits this store over <paramref name="bh"/> (batch, head) slices (see <see cref="CudaKernels.ValueLayout"/>).</summary>
    /// <remarks>With outliers a block has at most 4 warps: each lane keeps private correction slots in shared memory (up to 8 KiB a warp).</remarks>
    public CudaKernels.ValueSplit CudaValueLayout(int bh) =>
        CudaKernels.ValueLayout(checked((int)(Length / _groupSize)), bh, _outlierValues is null ? 8 : 4);

    /// <summary>
    /// p·V̂ (dequantized values and outliers; the low rank is added by <see cref="CudaKernels.Finish"/>) for the probabilities in columns [offset, offset + T) of
    /// <paramref name="pp"/>, one row of sums per span written to slots [slotBase, slotBase + spans) of
    /// <paramref name="out_"/> (see <see cref="CudaValueLayout"/>; the caller sums over slots).
    /// </summary>
    /// <param name="module">The loaded kernels.</param>
    /// <param name="pp">Probabilities [B·H, M, ld] float32, contiguous (device address).</param>
    /// <param name="out_">Partial sums [B·H, slots, M, D] float32, contiguous (device address).</param>
    /// <param name="bh">B·H.</param>
    /// <param name="rows">Query rows M (≤ 8).</param>
    /// <param name="ld">Row length of the probabilities.</param>
    /// <param name="slots">Slots of the partial sums.</param>
    /// <param name="offset">First column of this store's tokens.</param>
    /// <param name="slotBase">First slot of this store.</param>
    /// <param name="stream">The stream to launch on (default: the legacy default stream).</param>
    /// <returns>The slots written (the spans of <see cref="CudaValueLayout"/>).</returns>
    public unsafe int CudaValues(CudaKernels.Module module, IntPtr pp, IntPtr out_, int bh, int rows, long ld, int slots, long offset, int slotBase,
        IntPtr stream = default)
    {
        var view = View;
        int d = (int)_headDim, length = checked((int)Length), bits = _bits, bucket = CudaKernels.Module.Bucket(rows);
        int gv = _groupSize, outliers = view.Slots;
        int channels = CudaKernels.PieceWidth(rows, bits, d, gv);
        var (spans, perWarp, warps) = CudaValueLayout(bh);
        IntPtr codes = view.Codes, scale = view.Scale, zero = view.Zero, values = view.OutlierValues, index = view.OutlierIndex;
        void** args = stackalloc void*[17];
        args[0] = &pp; args[1] = &rows; args[2] = &codes; args[3] = &scale; args[4] = &zero; args[5] = &values; args[6] = &index;
        args[7] = &outliers; args[8] = &out_; args[9] = &slots; args[10] = &slotBase; args[11] = &length; args[12] = &d; args[13] = &gv;
        args[14] = &perWarp; args[15] = &ld; args[16] = &offset;
        uint shared = (uint)(sizeof(float) * bucket * d);
        // Outliers: each lane's private correction slots, [warps, M, CPT, 32] floats after the block's sums.
        uint fix = outliers == 0 ? 0u : (uint)(sizeof(float) * warps * bucket * channels * 32);
        CudaDriver.Launch(module.Value(rows, bits, channels), ((uint)spans, (uint)bh), (uint)(32 * warps), shared + fix, args, stream);
        CudaKernels.PhaseMarker?.Invoke("values");
        return spans;
    }
}
