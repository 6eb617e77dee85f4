using System.Buffers;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// Decode-sized attention on the CPU straight from the pages: for each sequence and key/value head, scores from the packed
/// keys of every page of its block table (outliers replace their dequantized entry as a correction q_c·(value − x̂);
/// the low-rank term stays factored as A·(q·B) per block), then its recent tokens as stored, one softmax, then the packed
/// values likewise — no dequantized copy of the history. Query rows (the query heads of a key/value head times the new
/// tokens, at most <see cref="MaxRows"/>) go four at a time in registers. Longer appends (prefill) are matmul-bound and take
/// the tensor reference.
/// </summary>
internal sealed unsafe class CpuPagedAttention(PagePool pool) : PagedAttention(pool)
{
    /// <summary>Query rows (query heads per key/value head × new tokens) up to which a sequence takes the fused path.</summary>
    public const int MaxRows = 16;

    private const float SoftmaxFloor = -64f;

    /// <summary>Query rows × tokens × head_dim of a step's fused attention from which its jobs are spread over the cores.</summary>
    private const long ParallelWork = 1 << 18;

    public override string Description => "fused CPU kernel (tensor ops for prefill-sized attention)";

    /// <summary>Whether the kernel reads this pool's pages; why not otherwise.</summary>
    public static bool Supports(PagePool pool, out string? why)
    {
        var s = pool.Shape;
        var o = pool.Options;
        int gv = GroupQuantizer.EffectiveGroupSize(o.GroupSize, QuantAxis.PerToken, s.HeadDim);
        why = s.ComputeType != ScalarType.Float32 ? $"compute dtype {s.ComputeType}; the fused CPU kernel computes in Float32"
            : s.HeadDim % 8 != 0 ? $"head_dim {s.HeadDim} is not a multiple of 8"
            : pool.BufferType is not (ScalarType.Float16 or ScalarType.Float32) ? $"stored dtype {pool.BufferType}"
            : !o.IsCompressed ? null
            : o.GroupSize > 256 ? $"key groups of {o.GroupSize} tokens (the kernel reads 8-bit outlier indices)"
            : gv % 8 != 0 || s.HeadDim % gv != 0 || gv > 256 ? $"value groups of {gv} features"
            : o.UsesLowRank && Math.Max(o.PromptRank, o.DecodeRank) > CpuTiles.RankStride ? $"low-rank rank above {CpuTiles.RankStride}"
            : null;
        return why is null;
    }

    public override Tensor Attend(int layer, KvBatch batch, Tensor queries, IReadOnlyList<RecentTokens> recent)
    {
        using var scope = NewDisposeScope();
        var shape = Pool.Shape;
        int hq = (int)queries.size(1), hkv = shape.KeyValueHeads, groups = hq / hkv, d = shape.HeadDim;
        if (queries.dtype != ScalarType.Float32 || queries.device_type != DeviceType.CPU)
            return new TensorPagedAttention(Pool).Attend(layer, batch, queries, recent).MoveToOuterDisposeScope();
        var q = queries.contiguous();
        var output = empty(queries.shape, ScalarType.Float32);                                   // [N, Hq, D]
        float* qAll = TensorMemory.Pointer<float>(q), oAll = TensorMemory.Pointer<float>(output);
        var views = Views(layer);
        var heads = new List<(int Offset, int N, HeadJob Job, nint Keys, nint Values, long HeadStride)>(batch.Count);
        int elementSize = Pool.BufferType == ScalarType.Float16 ? 2 : 4;
        long work = 0;
        for (int i = 0; i < batch.Count; i++)
        {
            var item = batch.Items[i];
            int n = item.NewTokens, rows = groups * n;
            if (rows > MaxRows)
            {
                using var o = TensorPagedAttention.AttendOne(Pool, layer, item, queries, recent[i]);
                output.narrow(0, item.Offset, n).copy_(o);
                continue;
            }
            // The recent tokens' rows: in the buffer page, or a transient copy [Hkv, R, D].
            var r = recent[i];
            byte* keys, values;
            long headStride;
            if (r.Page is { } page)
            {
                ref readonly var view = ref views[page.Arena];
                headStride = (long)Pool.PageTokens * d;
                keys = view.At(PagePart.DenseKeys, page.Slot, 0, headStride, elementSize);
                values = view.At(PagePart.DenseValues, page.Slot, 0, headStride, elementSize);
            }
            else
            {
                headStride = r.TransientKeys!.stride(0);
                keys = (byte*)TensorMemory.RowsAddress(r.TransientKeys);
                values = (byte*)TensorMemory.RowsAddress(r.TransientValues!);
            }
            heads.Add((item.Offset, n, new HeadJob(views, item.Sequence.Pages, r.Count, n, rows, d, Pool.PageTokens), (nint)keys, (nint)values, headStride));
            work += rows * (item.Sequence.Length + n);
        }
        // Every (sequence, key/value head) is a job of its own; with enough of them they share the cores (the managed CPU
        // decode step calls this with no libtorch work beside it).
        nint qp = (nint)qAll, op = (nint)oAll;
        void Run(int job)
        {
            var (offset, n, head, keys, values, headStride) = heads[job / hkv];
            int h = job % hkv;
            float* qa = (float*)qp, oa = (float*)op;
            float* qs = stackalloc float[MaxRows * d];                                           // one head's query rows
            float* os = stackalloc float[MaxRows * d];                                           // and their outputs
            // Row g·n + t: query head h·G + g at new token t.
            for (int g = 0; g < groups; g++)
                for (int t = 0; t < n; t++)
                    Buffer.MemoryCopy(qa + ((long)(offset + t) * hq + h * groups + g) * d, qs + (g * n + t) * d, d * 4, d * 4);
            head.Run(h, qs, os, (byte*)keys + h * headStride * elementSize, (byte*)values + h * headStride * elementSize, elementSize);
            for (int g = 0; g < groups; g++)
                for (int t = 0; t < n; t++)
                    Buffer.MemoryCopy(os + (g * n + t) * d, oa + ((long)(offset + t) * hq + h * groups + g) * d, d * 4, d * 4);
        }
        int jobs = heads.Count * hkv;
        if (jobs > 1 && work * d >= ParallelWork && Environment.ProcessorCount > 1)
            Parallel.For(0, jobs, Run);
        else
            for (int job = 0; job < jobs; job++)
                Run(job);
        return output.to(queries.dtype).MoveToOuterDisposeScope();
    }

    private static readonly PagePart[] AllPageParts = Enum.GetValues<PagePart>();
    private static readonly BlockPart[] AllBlockParts = Enum.GetValues<BlockPart>();
    private ArenaView[] _views = [];

    /// <summary>The arenas' addresses for <paramref name="layer"/>, read again only after an arena was added or reallocated.</summary>
    private ArenaView[] Views(int layer)
    {
        var arenas = Pool.Arenas;
        bool stale = _views.Length != arenas.Count;
        for (int a = 0; a < arenas.Count && !stale; a++)
            stale = _views[a].Version != arenas[a].Version;
        if (stale)
            _views = [.. arenas.Select(a => new ArenaView(a))];
        var views = new ArenaView[_views.Length];
        for (int a = 0; a < views.Length; a++)
            views[a] = _views[a].ForLayer(layer);
        return views;
    }

    /// <summary>Host addresses of an arena's parts (CPU tensors are contiguous [L, capacity, Hkv, ...]) and the layer read.</summary>
    private readonly struct ArenaView
    {
        public readonly PageArena Arena;
        public readonly PageFormat Format;
        public readonly long Capacity, BlockCapacity;
        public readonly int Layer, Version;
        private readonly void*[] _parts;
        private readonly void*[] _blocks;

        public ArenaView(PageArena arena)
        {
            Arena = arena;
            Format = arena.Format;
            Capacity = arena.Capacity;
            BlockCapacity = arena.BlockCapacity;
            Version = arena.Version;
            _parts = new void*[AllPageParts.Length];
            _blocks = new void*[AllBlockParts.Length];
            if (arena.Capacity == 0)
                return;
            foreach (var part in AllPageParts)
                if (arena.Holds(part))
                    _parts[(int)part] = TensorMemory.Address(arena.Page(part));
            if (arena.HasLowRank && arena.BlockCapacity > 0)
                foreach (var part in AllBlockParts)
                    _blocks[(int)part] = TensorMemory.Address(arena.Block(part));
        }

        private ArenaView(ArenaView view, int layer)
        {
            this = view;
            Layer = layer;
        }

        public ArenaView ForLayer(int layer) => new(this, layer);

        /// <summary>The start of (page <paramref name="slot"/>, head <paramref name="h"/>) of a part with <paramref name="perHead"/> elements of <paramref name="size"/> bytes per head.</summary>
        public byte* At(PagePart part, long slot, int h, long perHead, int size) =>
            (byte*)_parts[(int)part] + (((Layer * Capacity + slot) * Format.Shape.KeyValueHeads + h) * perHead) * size;

        public Half* BlockAt(BlockPart part, long block, int h) =>
            (Half*)_blocks[(int)part] + ((Layer * BlockCapacity + block) * Format.Shape.KeyValueHeads + h) * Format.Shape.HeadDim * Format.Rank;
    }

    /// <summary>Attention of one sequence's query rows for one key/value head at a time.</summary>
    /// <remarks>
    /// Locals are not zeroed on entry (<c>SkipLocalsInit</c>): the per-page methods inline the tile loops' many
    /// vector locals, and zeroing that frame on every page was a sixth of a decode step. Every buffer is written before it is read.
    /// </remarks>
    [SkipLocalsInit]
    private readonly struct HeadJob(ArenaView[] views, IReadOnlyList<PageId> pages, int recent, int newTokens, int rows, int d, int nb)
    {
        private long History => (long)pages.Count * nb;

        private long Total => History + recent;

        private int Tiles => (rows + 3) / 4;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int h, float* q, float* o, byte* recentKeys, byte* recentValues, int elementSize)
        {
            long total = Total, history = History;
            float scale = 1f / MathF.Sqrt(d);
            int floatRows = Math.Max(nb, recent);
            // scores [rows, T]; a float32 copy of up to max(n_b, recent) rows [·, D] (a dense page, the recent tokens);
            // the values' outlier corrections [rows, 4, D], four partial sums by token (see CompressedValues).
            float[] scratch = ArrayPool<float>.Shared.Rent((int)(rows * total) + floatRows * d + rows * 4 * d);
            try
            {
                fixed (float* scores = scratch)
                {
                    float* floats = scores + rows * total, corrections = floats + floatRows * d;
                    float* qb = stackalloc float[MaxRows * CpuTiles.RankStride];                   // q·B of the current block
                    float* pa = stackalloc float[MaxRows * CpuTiles.RankStride];                   // Σ_t p·A over the current block
                    for (int j = 0; j < pages.Count; j++)
                    {
                        var page = pages[j];
                        ref readonly var view = ref views[page.Arena];
                        float* pageScores = scores + (long)j * nb;
                        if (view.Format.IsDense)
                        {
                            ToFloats(view.At(PagePart.DenseKeys, page.Slot, h, (long)nb * d, ElementSize(view)), nb, ElementSize(view), floats);
                            for (int tile = 0; tile < Tiles; tile++)
                                CpuTiles.FloatKeyTile(Math.Min(4, rows - tile * 4), floats, d, 0, nb, q + tile * 4 * d, pageScores + tile * 4 * total, total);
                            continue;
                        }
                        if (view.Format.Rank > 0 && (j == 0 || !SameBlock(pages[j - 1], page)))
                            QueryTimesB(view.BlockAt(BlockPart.KeyB, view.Arena.BlockOf(page.Slot), h), view.Format.Rank, q, qb);
                        CompressedKeys(view, page.Slot, h, q, qb, pageScores, total);
                    }
                    // Recent tokens, as stored; query row i (new token i % n) sees those up to recent − n + i % n.
                    ToFloats(recentKeys, recent, elementSize, floats);
                    for (int tile = 0; tile < Tiles; tile++)
                        CpuTiles.FloatKeyTile(Math.Min(4, rows - tile * 4), floats, d, 0, recent, q + tile * 4 * d, scores + history + tile * 4 * total, total);
                    for (int i = 0; i < rows; i++)
                        for (int t = recent - newTokens + i % newTokens + 1; t < recent; t++)
                            scores[i * total + history + t] = float.NegativeInfinity;
                    for (int i = 0; i < rows; i++)
                    {
                        var p = new Span<float>(scores + i * total, (int)total);
                        TensorPrimitives.Multiply(p, scale, p);
                        TensorPrimitives.Subtract(p, TensorPrimitives.Max(p), p);
                        // Weights below e^-64 (relative to the largest) become e^-64, not subnormal: subnormal floats cost a
                        // microcode assist per operation on x86 and the change is far below float precision.
                        TensorPrimitives.Max(p, SoftmaxFloor, p);
                        TensorPrimitives.Exp(p, p);
                        TensorPrimitives.Multiply(p, 1f / TensorPrimitives.Sum(p), p);
                    }
                    new Span<float>(o, rows * d).Clear();
                    new Span<float>(corrections, rows * 4 * d).Clear();
                    new Span<float>(pa, MaxRows * CpuTiles.RankStride).Clear();
                    for (int j = 0; j < pages.Count; j++)
                    {
                        var page = pages[j];
                        ref readonly var view = ref views[page.Arena];
                        float* pageProbabilities = scores + (long)j * nb;
                        if (view.Format.IsDense)
                        {
                            ToFloats(view.At(PagePart.DenseValues, page.Slot, h, (long)nb * d, ElementSize(view)), nb, ElementSize(view), floats);
                            for (int tile = 0; tile < Tiles; tile++)
                                CpuTiles.FloatValueTile(Math.Min(4, rows - tile * 4), floats, d, nb, pageProbabilities + tile * 4 * total, total, o + tile * 4 * d);
                            continue;
                        }
                        CompressedValues(view, page.Slot, h, pageProbabilities, total, o, pa, corrections);
                        if (view.Format.Rank > 0 && (j + 1 == pages.Count || !SameBlock(page, pages[j + 1])))
                            ValueLowRank(view, page.Slot, h, pa, o);                               // the block's run ends: o += (p·A)·Bᵀ
                    }
                    for (int i = 0; i < rows; i++)
                        for (int k = 0; k < 4; k++)
                            TensorPrimitives.Add(new ReadOnlySpan<float>(o + i * d, d), new ReadOnlySpan<float>(corrections + (i * 4 + k) * d, d), new Span<float>(o + i * d, d));
                    ToFloats(recentValues, recent, elementSize, floats);
                    for (int tile = 0; tile < Tiles; tile++)
                        CpuTiles.FloatValueTile(Math.Min(4, rows - tile * 4), floats, d, recent, scores + history + tile * 4 * total, total, o + tile * 4 * d);
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(scratch);
            }
        }

        private static int ElementSize(in ArenaView view) => view.Format.DenseType == ScalarType.Float16 ? 2 : 4;

        private bool SameBlock(PageId a, PageId b) =>
            a.Arena == b.Arena && views[a.Arena].Arena.BlockOf(a.Slot) == views[b.Arena].Arena.BlockOf(b.Slot);

        /// <summary><paramref name="count"/> rows [·, D] of float16 or float32 at <paramref name="rowsStart"/> as float32.</summary>
        private void ToFloats(byte* rowsStart, int count, int elementSize, float* floats)
        {
            if (elementSize == 2)
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((Half*)rowsStart, count * d), new Span<float>(floats, count * d));
            else
                new ReadOnlySpan<float>((float*)rowsStart, count * d).CopyTo(new Span<float>(floats, count * d));
        }

        /// <summary>Scores of one compressed page's tokens into scores[i·stride + t]; <paramref name="qb"/> is q·B of its block.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void CompressedKeys(in ArenaView view, int slot, int h, float* q, float* qb, float* scores, long stride)
        {
            var f = view.Format;
            int g = f.KeyGroup, kg = nb / g, bits = f.Options.Bits, r = f.Rank, tiles = Tiles;
            var packed = new PackedCodes(bits);
            long rowBytes = f.RowBytes;
            byte* codes = view.At(PagePart.KeyCodes, slot, h, nb * rowBytes, 1);
            Half* scale = (Half*)view.At(PagePart.KeyScale, slot, h, (long)kg * d, 2);
            Half* zero = (Half*)view.At(PagePart.KeyZero, slot, h, (long)kg * d, 2);
            // scaleF/zeroF [kg, D]; qs [tiles·4, D] scale-folded queries of one group; zq [tiles·4] (the tiles read only real rows);
            // a [n_b, r] this page's A (then 8 zeros).
            int size = 2 * kg * d + tiles * 4 * d + tiles * 4 + (r > 0 ? nb * r + 8 : 0);
            float[] scratch = ArrayPool<float>.Shared.Rent(size);
            try
            {
                fixed (float* s = scratch)
                {
                    float* scaleF = s, zeroF = s + kg * d, qs = zeroF + kg * d, zq = qs + tiles * 4 * d, a = zq + tiles * 4;
                    TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(scale, kg * d), new Span<float>(scaleF, kg * d));
                    TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(zero, kg * d), new Span<float>(zeroF, kg * d));
                    if (r > 0)
                        LowRankRows(view.At(PagePart.KeyA, slot, h, (long)nb * r, 2), r, a);
                    for (int gi = 0; gi < kg; gi++)
                    {
                        var groupScale = new ReadOnlySpan<float>(scaleF + gi * d, d);
                        var groupZero = new ReadOnlySpan<float>(zeroF + gi * d, d);
                        for (int i = 0; i < rows; i++)
                        {
                            var qi = new ReadOnlySpan<float>(q + i * d, d);
                            TensorPrimitives.Multiply(qi, groupScale, new Span<float>(qs + i * d, d));
                            zq[i] = TensorPrimitives.Dot(qi, groupZero);
                        }
                        for (int tile = 0; tile < tiles; tile++)
                            CpuTiles.KeyTile(bits, Math.Min(4, rows - tile * 4), packed, codes, rowBytes, d, gi * g, (gi + 1) * g, qs + tile * 4 * d, zq + tile * 4,
                                             r > 0 ? a : null, r, qb + tile * 32, scores + tile * 4 * stride, stride);
                    }
                    if (f.KeyOutlierSlots > 0)
                    {
                        // scores[i, t] += q[i, c]·(value − x̂[t, c]) for each outlier (token t of its group, channel c).
                        int slots = f.KeyOutlierSlots;
                        long perHead = (long)kg * d * slots;
                        Half* values = (Half*)view.At(PagePart.KeyOutlierValues, slot, h, perHead, 2);
                        byte* index = view.At(PagePart.KeyOutlierIndex, slot, h, perHead, 1);
                        for (int gi = 0, e = 0; gi < kg; gi++)
                            for (int c = 0; c < d; c++)
                            {
                                float sc = scaleF[gi * d + c], ze = zeroF[gi * d + c];
                                for (int k = 0; k < slots; k++, e++)
                                {
                                    int t = gi * g + index[e];
                                    float delta = (float)values[e] - (packed.At(codes + t * rowBytes, c) * sc + ze);
                                    for (int i = 0; i < rows; i++)
                                        scores[i * stride + t] += q[i * d + c] * delta;
                                }
                            }
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(scratch);
            }
        }

        /// <summary>
        /// Adds p·V̂ of one compressed page's codes to o, its outliers' corrections to <paramref name="corrections"/> [rows, 4, D],
        /// and Σ_t p·A to the block's running <paramref name="pa"/>.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void CompressedValues(in ArenaView view, int slot, int h, float* p, long stride, float* o, float* pa, float* corrections)
        {
            var f = view.Format;
            int gv = f.ValueGroup, groups = d / gv, bits = f.Options.Bits, r = f.Rank, tiles = Tiles;
            var packed = new PackedCodes(bits);
            long rowBytes = f.RowBytes;
            byte* codes = view.At(PagePart.ValueCodes, slot, h, nb * rowBytes, 1);
            Half* scale = (Half*)view.At(PagePart.ValueScale, slot, h, (long)nb * groups, 2);
            Half* zero = (Half*)view.At(PagePart.ValueZero, slot, h, (long)nb * groups, 2);
            // scaleF/zeroF [n_b, G]; ps [tiles·4, n_b] = p·scale of one group (the tiles read only real rows); a [n_b, r] (then 8 zeros).
            float[] scratch = ArrayPool<float>.Shared.Rent(2 * nb * groups + tiles * 4 * nb + (r > 0 ? nb * r + 8 : 0));
            try
            {
                fixed (float* s = scratch)
                {
                    float* scaleF = s, zeroF = s + nb * groups, ps = zeroF + nb * groups, a = ps + tiles * 4 * nb;
                    TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(scale, nb * groups), new Span<float>(scaleF, nb * groups));
                    TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(zero, nb * groups), new Span<float>(zeroF, nb * groups));
                    for (int k = 0; k < groups; k++)
                    {
                        for (int i = 0; i < rows; i++)
                        {
                            float zs = 0;
                            if (groups == 1)
                            {
                                var pi = new ReadOnlySpan<float>(p + i * stride, nb);
                                TensorPrimitives.Multiply(pi, new ReadOnlySpan<float>(scaleF, nb), new Span<float>(ps + i * nb, nb));
                                zs = TensorPrimitives.Dot(pi, new ReadOnlySpan<float>(zeroF, nb));
                            }
                            else
                            {
                                for (int t = 0; t < nb; t++)
                                {
                                    float pit = p[i * stride + t];
                                    ps[i * nb + t] = pit * scaleF[t * groups + k];
                                    zs += pit * zeroF[t * groups + k];
                                }
                            }
                            var oi = new Span<float>(o + i * d + k * gv, gv);
                            TensorPrimitives.Add(oi, zs, oi);
                        }
                        for (int tile = 0; tile < tiles; tile++)
                            for (int j = k * gv / 8; j < (k + 1) * gv / 8; j++)
                                CpuTiles.ValueTile(bits, Math.Min(4, rows - tile * 4), packed, codes, rowBytes, nb, j, ps + tile * 4 * nb, o + tile * 4 * d, d);
                    }
                    if (f.ValueOutlierSlots > 0)
                    {
                        // corrections[i, t mod 4, c] += p[i, t]·(value − x̂[t, c]) for each outlier (channel c of token t's group k).
                        // Outliers gather in a few channels, so consecutive tokens hit the same entry: four partial sums (by
                        // token) keep those additions from waiting on each other. Pass 1, shared by all rows: each outlier's
                        // channel and correction.
                        int slots = f.ValueOutlierSlots, perToken = groups * slots;
                        long perHead = (long)nb * perToken;
                        Half* values = (Half*)view.At(PagePart.ValueOutlierValues, slot, h, perHead, 2);
                        byte* index = view.At(PagePart.ValueOutlierIndex, slot, h, perHead, 1);
                        int* channel = stackalloc int[(int)perHead];
                        float* delta = stackalloc float[(int)perHead];
                        for (int t = 0, e = 0; t < nb; t++)
                            for (int k = 0; k < groups; k++)
                            {
                                float sc = scaleF[t * groups + k], ze = zeroF[t * groups + k];
                                for (int j = 0; j < slots; j++, e++)
                                {
                                    int c = k * gv + index[e];
                                    channel[e] = c;
                                    delta[e] = (float)values[e] - (packed.At(codes + t * rowBytes, c) * sc + ze);
                                }
                            }
                        for (int i = 0; i < rows; i++)
                        {
                            float* pi = p + i * stride, part = corrections + i * 4 * d;
                            for (int t = 0, e = 0; t < nb; t++)
                            {
                                float pt = pi[t];
                                float* partial = part + (t & 3) * d;
                                for (int end = e + perToken; e < end; e++)
                                    partial[channel[e]] += pt * delta[e];
                            }
                        }
                    }
                    if (r > 0)
                    {
                        LowRankRows(view.At(PagePart.ValueA, slot, h, (long)nb * r, 2), r, a);
                        for (int i = 0; i < rows; i++)
                        {
                            // Lanes ≥ r run into the next row of A and are never read (ValueLowRank reads ranks < r).
                            var acc = Vector256.Load(pa + i * CpuTiles.RankStride);
                            for (int t = 0; t < nb; t++)
                                acc = Vector256.FusedMultiplyAdd(Vector256.Load(a + t * r), Vector256.Create(p[i * stride + t]), acc);
                            acc.Store(pa + i * CpuTiles.RankStride);
                        }
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(scratch);
            }
        }

        /// <summary>o[i] += Σ_ρ pa[i, ρ]·B[:, ρ] for the block of <paramref name="slot"/>; clears <paramref name="pa"/>.</summary>
        private void ValueLowRank(in ArenaView view, int slot, int h, float* pa, float* o)
        {
            int r = view.Format.Rank;
            Half* b = view.BlockAt(BlockPart.ValueB, view.Arena.BlockOf(slot), h);               // [D, r]
            for (int i = 0; i < rows; i++)
            {
                float* pi = pa + i * CpuTiles.RankStride;
                for (int c = 0; c < d; c++)
                {
                    float sum = 0;
                    for (int rho = 0; rho < r; rho++)
                        sum += pi[rho] * (float)b[c * r + rho];
                    o[i * d + c] += sum;
                }
                new Span<float>(pi, CpuTiles.RankStride).Clear();
            }
        }

        /// <summary>A page's A [n_b, r] (float16) as float32, then 8 zeros (the 8-wide loads of the last row stay inside).</summary>
        private void LowRankRows(byte* a16, int r, float* a)
        {
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((Half*)a16, nb * r), new Span<float>(a, nb * r));
            new Span<float>(a + nb * r, 8).Clear();
        }

        /// <summary>qb [tiles·4, 8] = q·B for B [D, r] (float16), zero beyond the rows and the rank.</summary>
        private void QueryTimesB(Half* b, int r, float* q, float* qb)
        {
            new Span<float>(qb, Tiles * 32).Clear();
            for (int i = 0; i < rows; i++)
                for (int c = 0; c < d; c++)
                {
                    float qc = q[i * d + c];
                    for (int rho = 0; rho < r; rho++)
                        qb[i * 8 + rho] += qc * (float)b[c * r + rho];
                }
        }
    }
}
