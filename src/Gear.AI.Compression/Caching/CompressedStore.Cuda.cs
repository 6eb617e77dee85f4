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
    /// <summary>
    /// Whether the CUDA kernels can read this store: 1-, 2-, 4- or 8-bit codes, head size a multiple of 8 up to 1,024,
    /// key groups of whole warps of tokens, value groups of at most 256 features, rank ≤ 8.
    /// </summary>
    public bool SupportsCudaKernel =>
        _bits is 1 or 2 or 4 or 8 && _headDim % 8 == 0 && _headDim <= 1024 && _groupSize <= 1024
        && (_axis == QuantAxis.PerToken || _groupSize % 32 == 0)                          // key groups: whole warps of tokens
        && (_axis == QuantAxis.PerChannel || _groupSize <= 256)
        && View.Rank <= CudaKernels.MaxRank;

    /// <summary>Writes q·K̂ᵀ (dequantized keys, outliers, low rank) into columns [offset, offset + T) of the scores.</summary>
    /// <param name="module">The loaded kernels.</param>
    /// <param name="q">The queries [B·H, M, D], M ≤ 8.</param>
    /// <param name="sp">Scores [B·H, M, ld] float32, contiguous (device address).</param>
    /// <param name="bh">B·H.</param>
    /// <param name="ld">Row length of the scores.</param>
    /// <param name="offset">First column of this store's tokens.</param>
    public unsafe void CudaKeyScores(CudaKernels.Module module, in CudaKernels.Queries q, IntPtr sp, int bh, long ld, long offset)
    {
        var view = View;
        int d = (int)_headDim, length = checked((int)Length), g = _groupSize, bits = _bits, r = view.Rank, blocks = BlockCount;
        int rows = q.Rows, bucket = CudaKernels.Module.Bucket(rows), qType = q.Type;
        float qScale = q.Scale;
        IntPtr qp = q.Address, codes = view.Codes, scale = view.Scale, zero = view.Zero, a = view.A, b = view.B, groupBlock = view.GroupBlock;
        void** args = stackalloc void*[18];
        args[0] = &qp; args[1] = &qType; args[2] = &qScale; args[3] = &rows; args[4] = &codes; args[5] = &scale; args[6] = &zero;
        args[7] = &a; args[8] = &b; args[9] = &groupBlock; args[10] = &r; args[11] = &blocks; args[12] = &sp; args[13] = &length;
        args[14] = &d; args[15] = &g; args[16] = &ld; args[17] = &offset;
        uint shared = (uint)(sizeof(float) * (bucket * d + bucket + bucket * r));
        CudaDriver.Launch(module.Pick(module.KeyScores, rows, bits), ((uint)(length / g), (uint)bh), (uint)g, shared, args);
        CudaKernels.PhaseMarker?.Invoke("key_codes");

        if (view.Slots == 0)
            return;
        int slots = view.Slots, indexBytes = view.IndexBytes;
        IntPtr values = view.OutlierValues, index = view.OutlierIndex, slotOffset = view.OutlierOffset;
        void** outlierArgs = stackalloc void*[19];
        outlierArgs[0] = &qp; outlierArgs[1] = &qType; outlierArgs[2] = &qScale; outlierArgs[3] = &rows; outlierArgs[4] = &codes;
        outlierArgs[5] = &scale; outlierArgs[6] = &zero; outlierArgs[7] = &values; outlierArgs[8] = &index; outlierArgs[9] = &indexBytes;
        outlierArgs[10] = &slotOffset; outlierArgs[11] = &sp; outlierArgs[12] = &length; outlierArgs[13] = &d; outlierArgs[14] = &bits;
        outlierArgs[15] = &g; outlierArgs[16] = &slots; outlierArgs[17] = &ld; outlierArgs[18] = &offset;
        uint tiles = (uint)((length + CudaKernels.OutlierTile - 1) / CudaKernels.OutlierTile);
        CudaDriver.Launch(module.Outliers(rows), (tiles, (uint)bh), 256, (uint)(sizeof(float) * bucket * CudaKernels.OutlierTile), outlierArgs);
    }

    /// <summary>Slots this store contributes to the partial sums of <see cref="CudaValueChunks"/>: one per chunk (value group of tokens).</summary>
    public int CudaSlots => checked((int)(Length / _groupSize));                           // blocks are whole value groups

    /// <summary>
    /// p·V̂ (dequantized values, outliers, low rank) for the probabilities in columns [offset, offset + T) of
    /// <paramref name="pp"/>, one row of sums per chunk written to slots [slotBase, slotBase + <see cref="CudaSlots"/>)
    /// of <paramref name="out_"/> (the caller sums over slots).
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
    public unsafe void CudaValueChunks(CudaKernels.Module module, IntPtr pp, IntPtr out_, int bh, int rows, long ld, int slots, long offset, int slotBase)
    {
        var view = View;
        int d = (int)_headDim, length = checked((int)Length), bits = _bits, bucket = CudaKernels.Module.Bucket(rows);
        int gv = _groupSize, chunk = _groupSize, spans = CudaSlots;
        int r = view.Rank, blocks = BlockCount, outliers = view.Slots;
        IntPtr codes = view.Codes, scale = view.Scale, zero = view.Zero, values = view.OutlierValues, index = view.OutlierIndex;
        IntPtr a = view.A, b = view.B, groupBlock = view.GroupBlock;
        void** args = stackalloc void*[22];
        args[0] = &pp; args[1] = &rows; args[2] = &codes; args[3] = &scale; args[4] = &zero; args[5] = &values; args[6] = &index;
        args[7] = &outliers; args[8] = &a; args[9] = &b; args[10] = &groupBlock; args[11] = &r; args[12] = &blocks; args[13] = &out_;
        args[14] = &slots; args[15] = &slotBase; args[16] = &length; args[17] = &d; args[18] = &gv; args[19] = &chunk; args[20] = &ld;
        args[21] = &offset;
        uint threads = (uint)Math.Max(64, (d + 31) / 32 * 32);                                // one channel each
        uint shared = (uint)(sizeof(float) * (bucket * chunk * (d / gv) + bucket * (d / gv) + bucket * r + bucket * d));
        CudaDriver.Launch(module.Pick(module.ValueChunks, rows, bits), ((uint)spans, (uint)bh), threads, shared, args);
    }
}
