using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Gear.AI.Compression.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// Decode-sized attention on CUDA straight from the pages (<c>gear_attention.cuh</c>): for every sequence of the step at
/// once, scores from the packed keys of each page of its block table (or the dense pages of the FP16 cache) and from its
/// buffer page, one softmax per row over that sequence's tokens, then the packed values (or dense values) in partial sums
/// over spans of pages, and a last kernel that adds the values' low rank, the buffer's values and the partial sums. The block
/// tables and lengths are read from device memory, uploaded once per step. Sequences appending more tokens than the kernels'
/// rows (a prefill chunk) take the tensor reference.
/// </summary>
internal sealed unsafe class CudaPagedAttention : PagedAttention
{
    /// <summary>Arenas a launch can address (page ids hold the arena in their top bits).</summary>
    public const int MaxArenas = 4;

    /// <summary>Pages a thread block of the key kernel covers at most.</summary>
    private const int MaxSpanPages = 8;

    /// <summary>Dense pages a thread block of the dense value kernel sums (one slot of the partial sums).</summary>
    private const int DenseSpanPages = 8;

    private readonly CudaKernels.Module _module;
    private KvBatch? _tableBatch;                       // the step whose block tables are on the device
    private Tensor? _table;                             // [4·S + 2·E] int32: SeqInfo per fused sequence, then its pages
    private Tensor? _scratch;                           // float32: scores [S·Hkv, M, ld], then partial sums [S·Hkv, slots, M, D]
    private StepShape _step;
    private int[] _fused = [];                          // the step's items that run fused (their index in the step)
    private readonly Dictionary<int, Bases> _bases = [];

    /// <summary>An arena's device addresses and bytes per page of each part, as of one allocation (<see cref="PageArena.Version"/>).</summary>
    private sealed record Bases(int Version, IntPtr[] Parts, long[] PageBytes, IntPtr[] Blocks);

    private CudaPagedAttention(PagePool pool, CudaKernels.Module module) : base(pool) => _module = module;

    public override string Description => "fused CUDA kernels (tensor ops for prefill-sized attention)";

    /// <summary>The back-end for <paramref name="pool"/>, or null with the reason its pages or device do not fit the kernels.</summary>
    public static CudaPagedAttention? TryCreate(PagePool pool, out string? why)
    {
        var s = pool.Shape;
        var o = pool.Options;
        int gv = GroupQuantizer.EffectiveGroupSize(o.GroupSize, QuantAxis.PerToken, s.HeadDim);
        why = CudaKernels.TypeCode(s.ComputeType) < 0 ? $"compute dtype {s.ComputeType}"
            : s.HeadDim is < 8 or > 256 || !int.IsPow2(s.HeadDim) ? $"head_dim {s.HeadDim} (the kernels read powers of two from 8 to 256)"
            : !int.IsPow2(o.BufferLength) || o.BufferLength > 1024 ? $"pages of {o.BufferLength} tokens (a power of two up to 1,024)"
            : CudaKernels.TypeCode(pool.BufferType) < 0 ? $"stored dtype {pool.BufferType}"
            : !o.IsCompressed ? null
            : !BitPacking.TilesAByte(o.Bits) ? $"{o.Bits}-bit codes (the kernels read 1, 2, 4 and 8 bits)"
            : !int.IsPow2(o.GroupSize) || o.GroupSize > 256 ? $"key groups of {o.GroupSize} tokens"
            : gv > 256 || s.HeadDim % gv != 0 || CudaKernels.PieceWidth(CudaKernels.MaxRows, o.Bits, s.HeadDim, gv) == 0 ? $"value groups of {gv} features"
            : o.UsesLowRank && Math.Max(o.PromptRank, o.DecodeRank) > CudaKernels.MaxRank ? $"low-rank rank above {CudaKernels.MaxRank}"
            : null;
        if (why is not null)
            return null;
        if (!pool.FusedKernels)
        {
            why = "fused kernels are off (FusedKernels = false)";
            return null;
        }
        var module = CudaKernels.For(s.Device);
        if (module is null)
        {
            why = CudaKernels.UnavailableReason ?? "the CUDA kernels could not be loaded";
            return null;
        }
        return new CudaPagedAttention(pool, module);
    }

    public override Tensor Attend(int layer, KvBatch batch, Tensor queries, IReadOnlyList<RecentTokens> recent)
    {
        using var scope = NewDisposeScope();
        int groups = (int)queries.size(1) / Pool.Shape.KeyValueHeads, d = Pool.Shape.HeadDim;
        if (!ReferenceEquals(batch, _tableBatch))
            Upload(batch, recent, groups);
        var output = _fused.Length == batch.Count ? null : empty(queries.shape, queries.dtype, queries.device);   // [N, Hq, D]
        var fusedRows = output is null ? null : FusedRows(batch, queries.device);
        for (int i = 0, f = 0; i < batch.Count; i++)
        {
            if (f < _fused.Length && _fused[f] == i)
            {
                f++;
                continue;
            }
            var item = batch.Items[i];
            using var o = TensorPagedAttention.AttendOne(Pool, layer, item, queries, recent[i]);
            output!.narrow(0, item.Offset, item.NewTokens).copy_(o);
        }
        if (_fused.Length == 0)
            return output!.MoveToOuterDisposeScope();
        var fused = AttendFused(layer, queries, fusedRows, groups, d);                         // [S_f·tq, Hq, D]
        if (output is null)
            return fused.MoveToOuterDisposeScope();
        output.index_copy_(0, fusedRows!, fused);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Whether <see cref="AttendDecode"/> can run <paramref name="batch"/>: every sequence appends one token into its
    /// buffer page, and <paramref name="groups"/> query heads per key/value head fit the kernels' rows.
    /// </summary>
    public static bool FitsDecode(KvBatch batch, int groups) =>
        groups <= CudaKernels.MaxRows && batch.Items.All(i => i.NewTokens == 1 && i.InPlace);

    /// <summary>
    /// The launch-light form of <see cref="Attend"/> for a step that <see cref="FitsDecode"/>: the new keys and values go
    /// into the buffer pages and attention runs, all as kernel launches on device buffers the caller owns (no tensor
    /// operations, so no host work beyond the launches).
    /// </summary>
    /// <param name="layer">The layer.</param>
    /// <param name="batch">The step.</param>
    /// <param name="recent">Each sequence's buffer page and its tokens after the step.</param>
    /// <param name="rows">Queries [S, Hq, D], keys and values [S, Hkv, D] and the output [S, Hq, D], contiguous, one dtype.</param>
    public void AttendDecode(int layer, KvBatch batch, IReadOnlyList<RecentTokens> recent, in DeviceRows rows)
    {
        var shape = Pool.Shape;
        int groups = rows.QueryHeads / shape.KeyValueHeads, type = CudaKernels.TypeCode(rows.Type);
        if (!ReferenceEquals(batch, _tableBatch))
            Upload(batch, recent, groups);
        if (_fused.Length != batch.Count || type < 0)
            throw new InvalidOperationException("The step does not fit the launch-light attention (FitsDecode is false).");
        var args = Arguments(layer, rows.Queries, type, groups, tq: 1, shape.HeadDim);
        IntPtr k = rows.Keys, v = rows.Values;
        void** argv = stackalloc void*[4];
        argv[0] = &args; argv[1] = &k; argv[2] = &v; argv[3] = &type;
        CudaDriver.Launch(_module.PagedAppend, ((uint)batch.Count, (uint)shape.KeyValueHeads), (uint)Math.Min(shape.HeadDim, 1024), 0, argv);
        Run(ref args, rows.Output, type);
    }

    /// <summary>The packed rows of the fused sequences' new tokens, on the device.</summary>
    private Tensor FusedRows(KvBatch batch, Device device) =>
        TensorMemory.ToDevice(tensor(_fused.SelectMany(i => Enumerable.Range(batch.Items[i].Offset, batch.Items[i].NewTokens)).Select(r => (long)r).ToArray()), device);

    /// <summary>
    /// Picks the step's sequences that run fused — the new tokens in their buffer page, as many as the first such sequence
    /// appends, within the kernels' rows — uploads their block tables and lengths, and sizes the scratch every layer's
    /// scores and partial sums use (once per step: every layer reads the same tables).
    /// </summary>
    private void Upload(KvBatch batch, IReadOnlyList<RecentTokens> recent, int groups)
    {
        _tableBatch = batch;
        _table?.Dispose();
        _table = null;
        _scratch?.Dispose();
        _scratch = null;
        int tq = 0;
        var fused = new List<int>();
        for (int i = 0; i < batch.Count; i++)
        {
            var item = batch.Items[i];
            if (recent[i].Page is null || groups * item.NewTokens > CudaKernels.MaxRows || (tq != 0 && item.NewTokens != tq))
                continue;
            tq = item.NewTokens;
            fused.Add(i);
        }
        _fused = [.. fused];
        if (fused.Count == 0)
            return;
        var words = new List<int>();
        int entries = 0, maxPages = 0;
        long ld = 0;
        foreach (int i in fused)
        {
            var item = batch.Items[i];
            words.AddRange([item.Sequence.Pages.Count, recent[i].Page!.Value.Slot, recent[i].Count, entries]);
            entries += item.Sequence.Pages.Count;
            maxPages = Math.Max(maxPages, item.Sequence.Pages.Count);
            ld = Math.Max(ld, (long)item.Sequence.Pages.Count * Pool.PageTokens + item.Buffered + item.NewTokens);
        }
        foreach (int i in fused)
            foreach (var page in batch.Items[i].Sequence.Pages)
                words.AddRange([page.Value, Pool.Arenas[page.Arena].BlockOf(page.Slot)]);
        var device = Pool.Shape.Device;
        _table = TensorMemory.ToDevice(tensor(words.ToArray(), dtype: ScalarType.Int32), device).DetachFromDisposeScope();

        // Value spans: compressed pages in the value kernel's layout, dense pages DenseSpanPages at a time.
        int rows = groups * tq, bh = fused.Count * Pool.Shape.KeyValueHeads, d = Pool.Shape.HeadDim;
        bool compressed = Pool.Options.IsCompressed;
        var layout = CudaKernels.ValueLayout(Math.Max(1, maxPages), bh, Pool.Options.UsesOutliers ? 4 : 8);
        int spanPages = compressed ? layout.Warps * layout.ChunksPerWarp : DenseSpanPages;
        int slots = maxPages == 0 ? 1 : (maxPages + spanPages - 1) / spanPages;
        _step = new StepShape(tq, rows, bh, maxPages, ld, layout, spanPages, slots);
        _scratch = empty(bh * rows * (ld + (long)slots * d), ScalarType.Float32, device).DetachFromDisposeScope(); // scores [S·Hkv, M, ld], then partial [S·Hkv, slots, M, D]
    }

    /// <summary>The fused sequences' attention: [S_f·tq, Hq, D] in the queries' dtype, rows in the step's order.</summary>
    private Tensor AttendFused(int layer, Tensor queries, Tensor? fusedRows, int groups, int d)
    {
        var shape = Pool.Shape;
        int sequences = _fused.Length, hkv = shape.KeyValueHeads, hq = hkv * groups, tq = _step.Tq;
        // Query rows [S·Hkv, M, D]: row g·tq + t of key/value head h is query head h·G + g at new token t.
        Tensor q = fusedRows is null ? queries : queries.index_select(0, fusedRows);
        q = tq == 1 ? q.contiguous() : q.view(sequences, tq, hkv, groups, d).permute(0, 2, 3, 1, 4).contiguous();
        int type = CudaKernels.TypeCode(q.dtype);
        var args = Arguments(layer, TensorMemory.DeviceAddress(q, contiguous: true), type, groups, tq, d);
        var output = empty([_step.Bh, _step.Rows, d], q.dtype, shape.Device);                 // [S·Hkv, M, D]
        Run(ref args, TensorMemory.DeviceAddress(output, contiguous: true), type);
        return tq == 1
            ? output.view(sequences, hq, d)
            : output.view(sequences, hkv, groups, tq, d).permute(0, 3, 1, 2, 4).reshape(sequences * tq, hq, d);
    }

    /// <summary>Scores, softmax, values and the finish for the uploaded step: output [S·Hkv, M, D] of dtype code <paramref name="outType"/>.</summary>
    private void Run(ref Batch args, IntPtr output, int outType)
    {
        var st = _step;
        IntPtr scores = TensorMemory.DeviceAddress(_scratch!, contiguous: true), partial = scores + sizeof(float) * (nint)(st.Bh * st.Rows * st.Ld);
        bool compressed = Pool.Options.IsCompressed;
        bool mark = Phases.Enabled;
        if (mark) Phases.End("queries");
        if (compressed && st.MaxPages > 0)
            KeyScores(ref args, scores, st.Ld, st.MaxPages, st.Rows, st.Bh);
        DenseScores(ref args, scores, st.Ld, compressed ? 1 : st.MaxPages + 1, bufferOnly: compressed, st.Bh);
        if (mark) Phases.End("scores");
        Softmax(scores, st.Ld, st.Bh * st.Rows, st.Rows);
        if (mark) Phases.End("softmax");
        if (st.MaxPages > 0)
        {
            if (compressed)
                Values(ref args, scores, st.Ld, partial, st.Slots, st.Layout, st.Rows, st.Bh);
            else
                DenseValues(ref args, scores, st.Ld, partial, st.Slots, st.Slots, st.Rows, st.Bh);
            if (mark) Phases.End("values");
        }
        Finish(ref args, partial, st.Slots, st.SpanPages, scores, st.Ld, output, outType, st.Rows, st.Bh);
        if (mark) Phases.End("finish");
    }

    /// <summary>The uploaded step's launch geometry: new tokens and query rows per sequence, (sequence, head) slices, longest block table and row of scores, value spans.</summary>
    private readonly record struct StepShape(int Tq, int Rows, int Bh, int MaxPages, long Ld, CudaKernels.ValueSplit Layout, int SpanPages, int Slots);

    /// <summary>The launch's view of the step and of layer <paramref name="layer"/>'s storage (the CUDA struct PagedBatch).</summary>
    private Batch Arguments(int layer, IntPtr q, int type, int groups, int tq, int d)
    {
        var shape = Pool.Shape;
        var o = Pool.Options;
        var args = new Batch
        {
            Seqs = TensorMemory.DeviceAddress(_table!, contiguous: true),
            Q = q,
            QType = type,
            QScale = 1f / MathF.Sqrt(d),
            Hkv = shape.KeyValueHeads, D = d, Nb = Pool.PageTokens, G = o.GroupSize, GShift = System.Numerics.BitOperations.Log2((uint)o.GroupSize),
            Gv = GroupQuantizer.EffectiveGroupSize(o.GroupSize, QuantAxis.PerToken, d), Bits = o.Bits, M = groups * tq, Tq = tq,
            DenseType = CudaKernels.TypeCode(Pool.BufferType), BufferArena = -1,
        };
        args.Entries = args.Seqs + sizeof(int) * 4 * _fused.Length;
        if (Pool.Arenas.Count > MaxArenas)
            throw new InvalidOperationException($"The pool has {Pool.Arenas.Count} arenas; the kernels address {MaxArenas}.");
        for (int a = 0; a < Pool.Arenas.Count; a++)
        {
            var arena = Pool.Arenas[a];
            var f = arena.Format;
            var bases = BasesOf(a, arena);
            // Part p of layer l starts after l·capacity pages (blocks) of that part.
            IntPtr Part(PagePart part) => bases.Parts[(int)part] == IntPtr.Zero ? IntPtr.Zero
                : bases.Parts[(int)part] + (nint)((long)layer * arena.Capacity * bases.PageBytes[(int)part]);
            IntPtr Block(BlockPart part) => bases.Blocks[(int)part] == IntPtr.Zero ? IntPtr.Zero
                : bases.Blocks[(int)part] + (nint)((long)layer * arena.BlockCapacity * shape.KeyValueHeads * d * f.Rank * sizeof(ushort));
            args.Arenas[a] = new Arena
            {
                KeyCodes = Part(PagePart.KeyCodes), KeyScale = Part(PagePart.KeyScale), KeyZero = Part(PagePart.KeyZero),
                KeyOutValues = Part(PagePart.KeyOutlierValues), KeyOutIndex = Part(PagePart.KeyOutlierIndex), KeyA = Part(PagePart.KeyA), KeyB = Block(BlockPart.KeyB),
                ValueCodes = Part(PagePart.ValueCodes), ValueScale = Part(PagePart.ValueScale), ValueZero = Part(PagePart.ValueZero),
                ValueOutValues = Part(PagePart.ValueOutlierValues), ValueOutIndex = Part(PagePart.ValueOutlierIndex), ValueA = Part(PagePart.ValueA),
                ValueB = Block(BlockPart.ValueB), DenseKeys = Part(PagePart.DenseKeys), DenseValues = Part(PagePart.DenseValues),
                Rank = f.IsDense ? 0 : f.Rank, Dense = f.IsDense ? 1 : 0,
            };
            if (f.IsDense)
                args.BufferArena = a;
            else
            {
                args.KeySlots = f.KeyOutlierSlots;
                args.ValueSlots = f.ValueOutlierSlots;
            }
        }
        return args;
    }

    /// <summary>The device addresses of an arena's parts and blocks and its parts' bytes per page, read again after each reallocation.</summary>
    private Bases BasesOf(int index, PageArena arena)
    {
        if (_bases.TryGetValue(index, out var cached) && cached.Version == arena.Version)
            return cached;
        var parts = new IntPtr[Enum.GetValues<PagePart>().Length];
        var pageBytes = new long[parts.Length];
        var blocks = new IntPtr[Enum.GetValues<BlockPart>().Length];
        if (arena.Capacity > 0)
            foreach (var part in Enum.GetValues<PagePart>())
                if (arena.Holds(part))
                {
                    var storage = arena.Page(part);                                                // [L, capacity, Hkv, ...]
                    parts[(int)part] = TensorMemory.DeviceAddress(storage, contiguous: true);
                    pageBytes[(int)part] = storage.numel() / (storage.shape[0] * storage.shape[1]) * storage.ElementSize;
                }
        if (arena.HasLowRank && arena.BlockCapacity > 0)
            foreach (var part in Enum.GetValues<BlockPart>())
                blocks[(int)part] = TensorMemory.DeviceAddress(arena.Block(part), contiguous: true);
        return _bases[index] = new Bases(arena.Version, parts, pageBytes, blocks);
    }

    private void KeyScores(ref Batch args, IntPtr scores, long ld, int maxPages, int rows, int bh)
    {
        int nb = Pool.PageTokens, d = args.D, kg = nb / args.G, m = CudaKernels.Module.Bucket(rows);
        int per = Math.Max(1, Math.Min(Math.Min(MaxSpanPages, 256 / nb), maxPages));              // 256 threads a block where pages allow
        long Shared(int p) => sizeof(float) * ((long)m * d + (long)p * kg * m * d + (long)p * kg * m + (long)p * m * CudaKernels.MaxRank
                                              + (long)p * kg * d + (long)m * p * nb);
        while (per > 1 && Shared(per) > CudaKernels.SharedLimit)
            per /= 2;
        if (Shared(per) > CudaKernels.SharedLimit)
            throw new InvalidOperationException($"The key kernel needs {Shared(per):N0} bytes of shared memory for pages of {nb} tokens of head size {d}.");
        long ldArg = ld;
        Batch copy = args;
        void** argv = stackalloc void*[4];
        argv[0] = &copy; argv[1] = &scores; argv[2] = &ldArg; argv[3] = &per;
        CudaDriver.Launch(_module.Pick(_module.KeyScores, rows, args.Bits), ((uint)((maxPages + per - 1) / per), (uint)bh), (uint)(per * nb), (uint)Shared(per), argv);
    }

    private void DenseScores(ref Batch args, IntPtr scores, long ld, int pagesGrid, bool bufferOnly, int bh)
    {
        Batch copy = args;
        long ldArg = ld;
        int only = bufferOnly ? 1 : 0;
        void** argv = stackalloc void*[4];
        argv[0] = &copy; argv[1] = &scores; argv[2] = &ldArg; argv[3] = &only;
        CudaDriver.Launch(_module.DenseScores, ((uint)pagesGrid, (uint)bh), 256, 0, argv);
    }

    private void Softmax(IntPtr scores, long ld, int rowCount, int rows)
    {
        IntPtr seqs = TensorMemory.DeviceAddress(_table!, contiguous: true);
        int hkv = Pool.Shape.KeyValueHeads, nb = Pool.PageTokens;
        long ldArg = ld;
        void** argv = stackalloc void*[6];
        argv[0] = &scores; argv[1] = &ldArg; argv[2] = &seqs; argv[3] = &hkv; argv[4] = &rows; argv[5] = &nb;
        // Rows up to 8,192 (32 per thread) or 32,768 entries are held in registers between the kernel's passes.
        CudaDriver.Launch(_module.Softmax, ((uint)rowCount, 1), ld <= 8192 ? 256u : 1024u, 0, argv);
    }

    private void Values(ref Batch args, IntPtr scores, long ld, IntPtr partial, int slots, CudaKernels.ValueSplit layout, int rows, int bh)
    {
        int d = args.D, bucket = CudaKernels.Module.Bucket(rows);
        int channels = CudaKernels.PieceWidth(rows, args.Bits, d, args.Gv);
        Batch copy = args;
        long ldArg = ld;
        int perWarp = layout.ChunksPerWarp;
        void** argv = stackalloc void*[6];
        argv[0] = &copy; argv[1] = &scores; argv[2] = &ldArg; argv[3] = &partial; argv[4] = &slots; argv[5] = &perWarp;
        uint shared = (uint)(sizeof(float) * bucket * d);
        // Outliers: each lane's private correction slots, [warps, M, CPT, 32] floats after the block's sums.
        uint fix = args.ValueSlots == 0 ? 0u : (uint)(sizeof(float) * layout.Warps * bucket * channels * 32);
        CudaDriver.Launch(_module.Value(rows, args.Bits, channels), ((uint)layout.Spans, (uint)bh), (uint)(32 * layout.Warps), shared + fix, argv);
    }

    private void DenseValues(ref Batch args, IntPtr scores, long ld, IntPtr partial, int slots, int spans, int rows, int bh)
    {
        Batch copy = args;
        long ldArg = ld;
        int spanPages = DenseSpanPages;
        void** argv = stackalloc void*[6];
        argv[0] = &copy; argv[1] = &scores; argv[2] = &ldArg; argv[3] = &partial; argv[4] = &slots; argv[5] = &spanPages;
        CudaDriver.Launch(_module.DenseValue(rows), ((uint)spans, (uint)bh), 256, (uint)(sizeof(float) * CudaKernels.Module.Bucket(rows) * args.D), argv);
    }

    private void Finish(ref Batch args, IntPtr partial, int slots, int spanPages, IntPtr scores, long ld, IntPtr output, int outType, int rows, int bh)
    {
        Batch copy = args;
        long ldArg = ld;
        void** argv = stackalloc void*[8];
        argv[0] = &copy; argv[1] = &partial; argv[2] = &slots; argv[3] = &spanPages; argv[4] = &scores; argv[5] = &ldArg; argv[6] = &output; argv[7] = &outType;
        int rank = 0;
        for (int a = 0; a < Pool.Arenas.Count; a++)
            rank = Math.Max(rank, Pool.Arenas[a].Format.IsDense ? 0 : Pool.Arenas[a].Format.Rank);
        // Few slices (batch 1) get big blocks, so the low-rank sums over long histories spread over more warps (up to 2 rows).
        uint threads = bh < 256 && rows <= 2 ? 1024u : 256u;
        CudaDriver.Launch(_module.FinishFor(rows, Math.Max(1, rank)), ((uint)bh, 1), threads, (uint)(sizeof(float) * CudaKernels.Module.Bucket(rows) * args.D), argv);
    }

    public override void Dispose()
    {
        _table?.Dispose();
        _table = null;
        _scratch?.Dispose();
        _scratch = null;
        _tableBatch = null;
    }

    /// <summary>One arena's parts for one layer, as the CUDA struct PagedArena lays them out.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Arena
    {
        public IntPtr KeyCodes, KeyScale, KeyZero, KeyOutValues, KeyOutIndex, KeyA, KeyB;
        public IntPtr ValueCodes, ValueScale, ValueZero, ValueOutValues, ValueOutIndex, ValueA, ValueB;
        public IntPtr DenseKeys, DenseValues;
        public int Rank, Dense;
    }

    [InlineArray(MaxArenas)]
    internal struct Arenas
    {
        private Arena _first;
    }

    /// <summary>Everything a launch reads of a step, as the CUDA struct PagedBatch lays it out (passed by value).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Batch
    {
        public Arenas Arenas;
        public IntPtr Seqs, Entries, Q;
        public int QType;
        public float QScale;
        public int Hkv, D, Nb, G, GShift, Gv, Bits, KeySlots, ValueSlots, M, Tq, DenseType, BufferArena;
    }
}
