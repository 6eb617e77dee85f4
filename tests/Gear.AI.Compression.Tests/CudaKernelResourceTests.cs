using System.Security.Cryptography;
using System.Text;
using Gear.AI.Compression.Cuda;
using TorchSharp;

namespace Gear.AI.Compression.Tests;

/// <summary>
/// The CUDA kernels run only on the GPU machine (gpu-selftest checks them against the tensor path there);
/// here CI checks that the shipped PTX is the build of the shipped source and declares every kernel C# launches,
/// and the host-side launch logic and tables the kernels read.
/// </summary>
public class CudaKernelResourceTests
{
    private static string Ptx() => Encoding.ASCII.GetString(CudaKernels.Ptx()).TrimEnd('\0');

    [Fact]
    public void EmbeddedPtx_DeclaresEveryEntryPoint()
    {
        string ptx = Ptx();
        Assert.Contains(".target", ptx);
        foreach (string name in CudaKernels.EntryPoints)
            Assert.Contains($".entry {name}(", ptx);
    }

    [Fact]
    public void EmbeddedPtx_IsBuiltFromTheShippedSources()
    {
        // Cuda/gear_decode.ptx.sha256 records the hash of every source the PTX was compiled from; rebuild them together.
        string folder = Path.Combine(RepoRoot(), "src", "Gear.AI.Compression", "Cuda");
        var recorded = File.ReadAllLines(Path.Combine(folder, "gear_decode.ptx.sha256"))
            .Select(line => line.Split(' ', 2, StringSplitOptions.TrimEntries)).ToDictionary(p => p[1], p => p[0]);
        var sources = Directory.GetFiles(folder, "*.cu").Concat(Directory.GetFiles(folder, "*.cuh")).Select(Path.GetFileName).Order().ToArray();
        Assert.Equal(sources, recorded.Keys.Order().ToArray());
        foreach (var (name, hash) in recorded)
            Assert.Equal(hash, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(folder, name)))));
    }

    [Fact]
    public void PagedBatch_MatchesTheKernelsStructLayout()
    {
        // struct PagedArena: 16 pointers, then rank and dense (136 bytes); struct PagedBatch: four arenas, seqs, entries and
        // q pointers at 544, 552, 560, then qType, qScale and 13 ints from 568 to 628 (632 bytes with padding).
        Assert.Equal(136, System.Runtime.InteropServices.Marshal.SizeOf<Caching.CudaPagedAttention.Arena>());
        Assert.Equal(632, System.Runtime.CompilerServices.Unsafe.SizeOf<Caching.CudaPagedAttention.Batch>());
        Assert.Equal(544, (int)System.Runtime.InteropServices.Marshal.OffsetOf<Caching.CudaPagedAttention.Batch>(nameof(Caching.CudaPagedAttention.Batch.Seqs)));
        Assert.Equal(576, (int)System.Runtime.InteropServices.Marshal.OffsetOf<Caching.CudaPagedAttention.Batch>(nameof(Caching.CudaPagedAttention.Batch.Hkv)));
        Assert.Equal(624, (int)System.Runtime.InteropServices.Marshal.OffsetOf<Caching.CudaPagedAttention.Batch>(nameof(Caching.CudaPagedAttention.Batch.BufferArena)));
    }

    [Fact]
    public void CompressBlock_ReadsANarrowOfTheBufferInPlace_AndLeavesOtherLayoutsToACopy()
    {
        using var buffer = torch.zeros(2, 3, 100, 64);                           // [B, Hkv, capacity, D]
        using var block = buffer.narrow(2, 0, 64);                               // the first n_b tokens
        Assert.True(CudaKernels.RowsInPlace(block, out long stride));
        Assert.Equal(100 * 64, stride);                                          // one (batch, head) slice to the next
        using var plain = torch.zeros(64, 64);
        Assert.True(CudaKernels.RowsInPlace(plain, out stride));
        Assert.Equal(64 * 64, stride);
        using var swapped = buffer.transpose(0, 1).narrow(2, 0, 64);             // heads before batch: no single stride
        Assert.False(CudaKernels.RowsInPlace(swapped, out _));
        using var columns = buffer.narrow(3, 0, 32);                             // rows of D not dense
        Assert.False(CudaKernels.RowsInPlace(columns, out _));
        // Not CUDA: the tensor ops compress it.
        Assert.Null(CudaKernels.CompressBlock(block, 2, 64, QuantAxis.PerChannel, 1, residual: true));
    }

    [Theory]
    [InlineData(1, 2, 128, 64, 64)]    // Llama decode, 2-bit: a 16-byte piece of 64 channels, 2 lanes per token
    [InlineData(1, 4, 128, 64, 32)]    // 4-bit: 16 bytes hold 32 channels
    [InlineData(1, 8, 128, 64, 16)]
    [InlineData(3, 2, 128, 64, 16)]    // 3 rows run the 4-row kernel: 4·CPT ≤ 64 accumulators
    [InlineData(8, 2, 128, 64, 8)]
    [InlineData(1, 2, 128, 32, 32)]    // a piece stays inside one value group
    [InlineData(1, 2, 64, 64, 64)]     // one lane per token
    [InlineData(8, 2, 256, 64, 8)]     // 32 lanes per token
    [InlineData(8, 2, 512, 64, 0)]     // would need 64 lanes per token: no kernel (tensor path)
    [InlineData(1, 2, 96, 32, 0)]      // 96/32 = 3 lanes per token, not a power of two
    public void PieceWidth_PicksTheWidestInstantiatedPieceThatFits(int rows, int bits, int headDim, int valueGroup, int expected)
    {
        int width = CudaKernels.PieceWidth(rows, bits, headDim, valueGroup);
        Assert.Equal(expected, width);
        if (width > 0)
            Assert.Contains($"gear_paged_values_m{CudaKernels.Module.Bucket(rows)}_b{bits}_c{width}", CudaKernels.EntryPoints);
    }

    [Theory]
    [InlineData(64, 2272, 1, 8, 8)]      // a 4,096-token prompt store at batch 71 × 32 heads: 8 chunks per warp, one full block per slice
    [InlineData(512, 32, 16, 4, 8)]      // 32K tokens at batch 1: 16 blocks per slice keep the GPU busy
    [InlineData(1, 2272, 1, 1, 1)]       // one decode block: a single warp per slice, not eight with seven idle
    [InlineData(4, 2272, 1, 2, 2)]
    [InlineData(3, 32, 1, 1, 3)]
    public void ValueLayout_CoversEveryChunkWithoutIdleWarps(int chunks, int bh, int spans, int perWarp, int warps)
    {
        var split = CudaKernels.ValueLayout(chunks, bh);
        Assert.Equal(new CudaKernels.ValueSplit(spans, perWarp, warps), split);
        Assert.True(split.Spans * split.Warps * split.ChunksPerWarp >= chunks);                  // every chunk has a warp
        Assert.True((split.Spans * split.Warps - 1) * split.ChunksPerWarp < chunks);             // and every warp a chunk
    }

    [Fact]
    public void ValueLayout_WithOutliers_CapsTheWarpsPerBlock()
    {
        // Stores with outliers keep per-lane correction slots in shared memory (8 KiB a warp): at most 4 warps a block.
        var split = CudaKernels.ValueLayout(64, 2272, maxWarps: 4);
        Assert.Equal(new CudaKernels.ValueSplit(2, 8, 4), split);
    }

    [Fact]
    public void QuantizeKernel_LeavesNonCudaTensorsToTheTensorOps()
    {
        // The one-launch quantizer only takes CUDA tensors; elsewhere GroupQuantizer runs its tensor ops.
        using var x = torch.randn(2, 64, 128);
        Assert.Null(CudaKernels.Quantize(x, 2, 64, QuantAxis.PerToken));
        Assert.Null(CudaKernels.Quantize(x, 2, 64, QuantAxis.PerChannel));
        using var q = GroupQuantizer.Quantize(x, 2, 64, QuantAxis.PerToken);
        Assert.Equal([2L, 64L, 32L], q.Codes.shape);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Gear.AI.sln")))
                return dir.FullName;
        throw new DirectoryNotFoundException("Gear.AI.sln not found above the test output.");
    }
}
