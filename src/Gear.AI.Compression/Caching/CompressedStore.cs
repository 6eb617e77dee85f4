using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// The compressed history of K (per-channel) or V (per-token) of one layer: blocks from
/// <see cref="GearCompressor"/> of one low-rank rank, stored back to back so attention reads them
/// with a fixed number of operations whatever the block count. Storage grows by exactly one block
/// per append (what is allocated is what is counted); history is never decompressed and recompressed.
/// </summary>
internal sealed partial class CompressedStore : IDisposable
{
    private readonly QuantAxis _axis;
    private readonly int _bits;
    private readonly int _groupSize;
    private readonly long _headDim;
    private readonly List<long> _blockLengths = [];

    private Tensor? _codes;          // [B, H, T, ceil(D/8)·bits] uint8
    private Tensor? _scale;          // keys [B, H, T/g, D], values [B, H, T, Gv] float16
    private Tensor? _zero;           // like _scale
    private Tensor? _outlierValues;  // keys [B, H, D, ΣK] float16, values [B, H, T, Gv, 2k] float16
    private Tensor? _outlierIndex;   // like _outlierValues; index within the block (keys) or group (values)
    private Tensor? _outlierOffset;  // keys only: [ΣK] int64, first token of each slot's block
    private Tensor? _outlierGroups;  // keys only: [T/g, 4] int32, per group its block's first slot, slot count, first token, length
    private Tensor? _a;              // [B, H, T, r] float16
    private Tensor? _b;              // [B, H, nblocks, D, r] float16
    private Tensor? _groupBlock;      // [T/g] int64: block of each g-token group (low-rank lookup)

    public CompressedStore(QuantAxis axis, int bits, int groupSize, long headDim)
    {
        _axis = axis;
        _bits = bits;
        _groupSize = GroupQuantizer.EffectiveGroupSize(groupSize, axis, headDim);
        _headDim = headDim;
    }

    /// <summary>
    /// Addresses (on the tensors' device) and sizes of this store's tensors for the fused kernels: read once after
    /// each change, since every read is a native call.
    /// </summary>
    private sealed record TensorAddresses(IntPtr Codes, IntPtr Scale, IntPtr Zero, IntPtr OutlierValues, IntPtr OutlierIndex,
                                     IntPtr OutlierOffset, IntPtr OutlierGroups, IntPtr A, IntPtr B, IntPtr GroupBlock, int Rank, int Slots, int IndexBytes);

    private TensorAddresses? _view;

    private TensorAddresses View => _view ??= new TensorAddresses(
        Address(_codes), Address(_scale), Address(_zero), Address(_outlierValues), Address(_outlierIndex), Address(_outlierOffset), Address(_outlierGroups),
        Address(_a), Address(_b), Address(_groupBlock), _a is null ? 0 : (int)_a.shape[^1],
        _outlierValues is null ? 0 : (int)_outlierValues.shape[^1], _outlierIndex is null ? 0 : (int)_outlierIndex.ElementSize);

    private static IntPtr Address(Tensor? t) => t is null ? IntPtr.Zero : TensorMemory.DeviceAddress(t);

    /// <summary>Tokens held.</summary>
    public long Length { get; private set; }

    /// <summary>Blocks held.</summary>
    public int BlockCount => _blockLengths.Count;

    /// <summary>Keys with outliers: the per-group table the CUDA kernel reads, [T/g, 4] int32 (block's first slot, slot count, first token, length).</summary>
    internal Tensor? OutlierGroups => _outlierGroups;

    public long CodeBytes => Bytes.Of(_codes);
    public long ScaleZeroBytes => Bytes.Of(_scale) + Bytes.Of(_zero);
    public long OutlierBytes => Bytes.Of(_outlierValues) + Bytes.Of(_outlierIndex) + Bytes.Of(_outlierOffset) + Bytes.Of(_outlierGroups);
    public long LowRankBytes => Bytes.Of(_a) + Bytes.Of(_b) + Bytes.Of(_groupBlock);
    public long ResidentBytes => CodeBytes + ScaleZeroBytes + OutlierBytes + LowRankBytes;

    /// <summary>Takes the tensors of <paramref name="block"/> into the store (the block is disposed).</summary>
    public void Append(CompressedBlock block)
    {
        using var scope = NewDisposeScope();
        using var _ = block;
        long n = block.Shape[^2];
        if (n % _groupSize != 0 && _axis == QuantAxis.PerChannel)
            throw new InvalidOperationException($"Per-channel blocks must be whole groups of {_groupSize} tokens, got {n}.");
        int blockIndex = _blockLengths.Count;
        Grow(ref _codes, block.Quantized.Codes, 2);
        Grow(ref _scale, block.Quantized.Scale, 2);
        Grow(ref _zero, block.Quantized.Zero, 2);
        if (block.Outliers is { } o)
        {
            if (_axis == QuantAxis.PerChannel)
            {
                // Relative token indices; widen the stored index type if this block is longer than any before.
                var wanted = _outlierIndex is null ? o.Indices.dtype : Wider(_outlierIndex.dtype, o.Indices.dtype);
                if (_outlierIndex is not null && _outlierIndex.dtype != wanted)
                    Replace(ref _outlierIndex, _outlierIndex.to(wanted));
                Grow(ref _outlierValues, o.Values, 3);
                Grow(ref _outlierIndex, o.Indices.to(wanted), 3);
                Grow(ref _outlierOffset, full(o.Values.shape[^1], Length, dtype: ScalarType.Int64, device: o.Values.device), 0);
                // The CUDA kernel finds a span's blocks and their slots in one read of this table instead of searching.
                long slotsBefore = _outlierValues!.shape[^1] - o.Values.shape[^1];
                var group = tensor(new[] { checked((int)slotsBefore), checked((int)o.Values.shape[^1]), checked((int)Length), checked((int)n) });
                Grow(ref _outlierGroups, TensorMemory.ToDevice(group.unsqueeze(0).expand(n / _groupSize, 4).contiguous(), o.Values.device), 0);
            }
            else
            {
                Grow(ref _outlierValues, o.Values, 2);
                Grow(ref _outlierIndex, o.Indices, 2);
            }
        }
        if (block.LowRank is { } l)
        {
            Grow(ref _a, l.A, 2);
            Grow(ref _b, l.B.unsqueeze(2), 2);
            long groups = (n + _groupSize - 1) / _groupSize;
            Grow(ref _groupBlock, full(groups, blockIndex, dtype: ScalarType.Int64, device: l.A.device), 0);
        }
        _blockLengths.Add(n);
        Length += n;
        _view = null;
    }

    private static ScalarType Wider(ScalarType a, ScalarType b) =>
        a == ScalarType.Int32 || b == ScalarType.Int32 ? ScalarType.Int32 :
        a == ScalarType.Int16 || b == ScalarType.Int16 ? ScalarType.Int16 : ScalarType.Byte;

    /// <summary>Appends <paramref name="part"/> along <paramref name="dim"/>: a new tensor of exactly the new size.</summary>
    private static void Grow(ref Tensor? store, Tensor part, long dim)
    {
        var grown = store is null ? ContiguousCopy(part) : cat([store, part], dim);
        Replace(ref store, grown);
    }

    /// <summary>A contiguous tensor of its own (the CPU kernel reads stores as dense row-major memory).</summary>
    private static Tensor ContiguousCopy(Tensor t) => t.is_contiguous() ? t.clone() : t.contiguous();

    private static void Replace(ref Tensor? store, Tensor value)
    {
        value.DetachFromDisposeScope();
        store?.Dispose();
        store = value;
    }

    /// <summary>The dequantized history D̂ + S, [B, H, T, D] in <paramref name="dtype"/> (transient).</summary>
    public Tensor Dequantize(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var x = GroupQuantizer.Dequantize(_codes!, _scale!, _zero!, _bits, _groupSize, _axis, _headDim, dtype); // [B, H, T, D]
        if (_outlierValues is not null)
        {
            var values = _outlierValues.to(dtype);
            if (_axis == QuantAxis.PerChannel)
            {
                // Flat position token·D + channel in each (batch, head) slice: a contiguous scatter.
                long b = x.shape[0], h = x.shape[1], slots = _outlierValues.shape[^1];
                var channel = arange(_headDim, dtype: ScalarType.Int64, device: x.device).unsqueeze(-1); // [D, 1]
                var flat = (_outlierIndex!.to(ScalarType.Int64) + _outlierOffset!) * _headDim + channel;  // [B, H, D, ΣK]
                x.view(b * h, -1).scatter_(1, flat.view(b * h, -1), values.view(b * h, -1)); // x[.., token, c] = value
            }
            else
            {
                var grouped = x.view(x.shape[0], x.shape[1], x.shape[2], -1, _groupSize);     // [B, H, T, Gv, g]
                grouped.scatter_(-1, _outlierIndex!.to(ScalarType.Int64), values);
            }
        }
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>Above this many query rows the low-rank terms use batched matmuls; below, broadcasts (decode).</summary>
    private const long FewQueries = 16;

    /// <summary>Key side of L: q·(A·Bᵀ)ᵀ = (q·B)·Aᵀ per block, [B, H, M, T]; null without low rank.</summary>
    public Tensor? LowRankScores(Tensor q)
    {
        if (_a is null)
            return null;
        using var scope = NewDisposeScope();
        long b = q.shape[0], h = q.shape[1], m = q.shape[2], r = _a.shape[^1], groups = _groupBlock!.shape[0];
        var qb = q.unsqueeze(2).matmul(_b!.to(q.dtype));                                        // [B, H, nblk, M, r]
        var a = _a.to(q.dtype);                                                                 // [B, H, T, r]
        if (BlockCount == 1)
            return qb.squeeze(2).matmul(a.transpose(-1, -2)).MoveToOuterDisposeScope();         // [B, H, M, T]
        var perGroup = qb.index_select(2, _groupBlock);                                         // [B, H, Ng, M, r]
        Tensor scores;
        if (m <= FewQueries)
            scores = (a.view(b, h, groups, _groupSize, 1, r) * perGroup.unsqueeze(3)).sum(-1);  // [B, H, Ng, g, M]
        else
            scores = a.view(b, h, groups, _groupSize, r).matmul(perGroup.transpose(-1, -2));    // [B, H, Ng, g, M]
        return scores.reshape(b, h, Length, m).transpose(-1, -2).MoveToOuterDisposeScope();     // [B, H, M, T]
    }

    /// <summary>Value side of L: p·(A·Bᵀ) = Σ_blocks (p·A)·Bᵀ, [B, H, M, D]; null without low rank.</summary>
    public Tensor? LowRankOutput(Tensor p)
    {
        if (_a is null)
            return null;
        using var scope = NewDisposeScope();
        long b = p.shape[0], h = p.shape[1], m = p.shape[2], r = _a.shape[^1], groups = _groupBlock!.shape[0];
        int blocks = BlockCount;
        var a = _a.to(p.dtype);                                                                 // [B, H, T, r]
        var right = _b!.to(p.dtype).permute(0, 1, 2, 4, 3).reshape(b, h, blocks * r, _headDim); // [B, H, nblk·r, D]
        if (blocks == 1)
            return p.matmul(a).matmul(right).MoveToOuterDisposeScope();                         // [B, H, M, D]
        Tensor pa;                                                                              // [B, H, Ng, M, r]
        if (m <= FewQueries)
            pa = (p.view(b, h, m, groups, _groupSize, 1) * a.view(b, h, 1, groups, _groupSize, r)).sum(-2).transpose(2, 3);
        else
            pa = p.view(b, h, m, groups, _groupSize).permute(0, 1, 3, 2, 4).matmul(a.view(b, h, groups, _groupSize, r));
        var perBlock = zeros([b, h, blocks, m, r], dtype: p.dtype, device: p.device).index_add_(2, _groupBlock, pa, 1); // [B, H, nblk, M, r]
        var left = perBlock.permute(0, 1, 3, 2, 4).reshape(b, h, m, blocks * r);                // [B, H, M, nblk·r]
        return left.matmul(right).MoveToOuterDisposeScope();                                    // [B, H, M, D]
    }

    /// <summary>Keeps the first <paramref name="blocks"/> blocks.</summary>
    public void TruncateBlocks(int blocks)
    {
        if (blocks >= BlockCount)
            return;
        if (blocks == 0)
        {
            DisposeTensors();
            _blockLengths.Clear();
            Length = 0;
            return;
        }
        long tokens = _blockLengths.Take(blocks).Sum();
        long groups = tokens / _groupSize;
        Narrow(ref _codes, 2, tokens);
        Narrow(ref _scale, 2, _axis == QuantAxis.PerChannel ? groups : tokens);
        Narrow(ref _zero, 2, _axis == QuantAxis.PerChannel ? groups : tokens);
        if (_outlierValues is not null)
        {
            if (_axis == QuantAxis.PerChannel)
            {
                using var keep = _outlierOffset! < tokens;
                long slots = keep.sum().item<long>();
                Narrow(ref _outlierValues, 3, slots);
                Narrow(ref _outlierIndex, 3, slots);
                Narrow(ref _outlierOffset, 0, slots);
                Narrow(ref _outlierGroups, 0, groups);
            }
            else
            {
                Narrow(ref _outlierValues, 2, tokens);
                Narrow(ref _outlierIndex, 2, tokens);
            }
        }
        if (_a is not null)
        {
            Narrow(ref _a, 2, tokens);
            Narrow(ref _b, 2, blocks);
            Narrow(ref _groupBlock, 0, (tokens + _groupSize - 1) / _groupSize);
        }
        _blockLengths.RemoveRange(blocks, _blockLengths.Count - blocks);
        Length = tokens;
        _view = null;
    }

    private static void Narrow(ref Tensor? store, long dim, long length)
    {
        using var view = store!.narrow(dim, 0, length);
        Replace(ref store, ContiguousCopy(view));
    }

    private void DisposeTensors()
    {
        foreach (var t in new[] { _groupBlock, _b, _a, _outlierGroups, _outlierOffset, _outlierIndex, _outlierValues, _zero, _scale, _codes })
            t?.Dispose();
        _groupBlock = _b = _a = _outlierGroups = _outlierOffset = _outlierIndex = _outlierValues = _zero = _scale = _codes = null;
        _view = null;
    }

    public void Dispose() => DisposeTensors();
}
