using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// A KIVI / GEAR-L / GEAR cache layer: compressed history plus a float16 streaming buffer of the
/// newest tokens. Attention runs on the compressed form: the history is dequantized transiently for
/// this layer only, low-rank terms are applied factored, and the buffer is read as is.
/// </summary>
/// <remarks>
/// Streaming: <see cref="Append"/> puts tokens in the buffer, so the queries of the tokens just
/// appended attend them exactly. After <see cref="Attend"/> (or at the next append) every whole
/// n_b-token block of the buffer is compressed as one block — at the prompt rank when the last append
/// was multi-token (a prompt, a new turn), at the decode rank when it was a single decode step — and
/// the rest stays buffered. Blocks are aligned to the cache's own start. Blocks of each rank live in
/// their own <see cref="CompressedStore"/>, so attention costs a fixed number of operations however
/// many blocks there are; attention is order-free over keys, so scores are simply concatenated.
/// </remarks>
public sealed class CompressedKvCacheLayer : IKvCacheLayer
{
    private readonly KvCacheShape _shape;
    private readonly GearOptions _options;
    private readonly long _seed;
    private readonly SortedDictionary<int, (CompressedStore Keys, CompressedStore Values)> _stores = [];
    private readonly List<(int Rank, long Length)> _blocks = []; // every block in time order
    private Tensor? _bufferKeys;   // [B, Hkv, capacity, D] float16
    private Tensor? _bufferValues; // [B, Hkv, capacity, D] float16
    private long _buffered;
    private long _bufferCapacity;                  // tokens the buffers hold room for (their dim 2)
    private (IntPtr Keys, IntPtr Values)? _bufferAddresses;
    private bool _lastAppendWasMulti;

    /// <summary>Creates an empty layer.</summary>
    /// <param name="shape">Batch, heads, head size, compute dtype, device.</param>
    /// <param name="options">Kind (not Fp16) and compression settings.</param>
    /// <param name="layerIndex">Mixed into the low-rank seed so layers draw different projections.</param>
    public CompressedKvCacheLayer(KvCacheShape shape, GearOptions options, int layerIndex = 0)
    {
        _shape = shape.Validate();
        _options = options.Validate();
        if (!options.IsCompressed)
            throw new ArgumentException("Use DenseKvCacheLayer for CacheKind.Fp16.", nameof(options));
        if (options.UsesOutliers && shape.HeadDim % GroupQuantizer.EffectiveGroupSize(options.GroupSize, QuantAxis.PerToken, shape.HeadDim) != 0)
            throw new ArgumentOutOfRangeException(nameof(options.GroupSize), options.GroupSize, $"GroupSize must divide head_dim ({shape.HeadDim}) for GEAR's per-token outliers.");
        _seed = options.Seed + 7919L * layerIndex;
    }

    /// <inheritdoc />
    public long Length => CompressedLength + _buffered;

    /// <summary>Tokens in compressed blocks.</summary>
    public long CompressedLength { get; private set; }

    /// <summary>Tokens in the float16 buffer.</summary>
    public long BufferedLength => _buffered;

    /// <summary>Compressed blocks held.</summary>
    public int BlockCount => _blocks.Count;

    /// <inheritdoc />
    public long ResidentBytes => Statistics.ResidentBytes;

    /// <inheritdoc />
    public long FullPrecisionBytes => 2L * 2 * _shape.Batch * _shape.KeyValueHeads * _shape.HeadDim * Length;

    /// <inheritdoc />
    public KvCacheStatistics Statistics
    {
        get
        {
            long codes = 0, scales = 0, outliers = 0, lowRank = 0;
            foreach (var (k, v) in _stores.Values)
            {
                codes += k.CodeBytes + v.CodeBytes;
                scales += k.ScaleZeroBytes + v.ScaleZeroBytes;
                outliers += k.OutlierBytes + v.OutlierBytes;
                lowRank += k.LowRankBytes + v.LowRankBytes;
            }
            return new KvCacheStatistics(Length, CompressedLength, _buffered, codes, scales, outliers, lowRank,
                Bytes.Of(_bufferKeys) + Bytes.Of(_bufferValues), FullPrecisionBytes);
        }
    }

    /// <inheritdoc />
    public void Append(Tensor keys, Tensor values)
    {
        Attention.CheckKv(keys, values, _shape);
        Flush();
        long n = keys.shape[2];
        EnsureBufferCapacity(_buffered + n);
        Attention.CopyTokens(_bufferKeys!, _bufferValues!, _buffered, keys, values);
        _buffered += n;
        _lastAppendWasMulti = n > 1;
    }

    /// <inheritdoc />
    public Tensor Attend(Tensor queries)
    {
        // Shape, dtype and device read once: each is a native call, and at batch 1 a decode step is bound by them.
        ArgumentNullException.ThrowIfNull(queries);
        long[] size = queries.shape;
        Attention.CheckQueries(size, _shape, Length);
        if (size[2] > _buffered)
            throw new InvalidOperationException($"{size[2]} queries but only {_buffered} buffered tokens: attend right after appending the queries' keys and values.");
        var dtype = queries.dtype;
        var device = queries.device_type;
        Tensor output;
        if (CanUseCpuKernel(device, dtype, size))
        {
            output = AttendCpu(queries);
        }
        else if (CudaModule(device, dtype, size) is { } module)
        {
            output = AttendCuda(queries, size, dtype, module);
        }
        else if (_stores.Count == 0)
        {
            output = AttendBufferOnly(queries);
        }
        else
        {
            using var scope = NewDisposeScope();
            long hq = size[1], tq = size[2], groups = hq / _shape.KeyValueHeads;
            double scale = 1.0 / Math.Sqrt(_shape.HeadDim);
            var q = Attention.GroupQueries(queries, _shape.KeyValueHeads);                     // [B, Hkv, M, D], M = G·Tq

            var scores = new List<Tensor>();
            var dequantizedValues = new List<Tensor>();
            foreach (var (keyStore, valueStore) in _stores.Values)
            {
                var k = keyStore.Dequantize(dtype);                                           // [B, Hkv, Tc, D]
                var s = q.matmul(k.transpose(-1, -2));                                        // [B, Hkv, M, Tc]
                if (keyStore.LowRankScores(q) is { } low)
                    s = s + low;                                                              // + (q·B)·Aᵀ
                scores.Add(s);
            }
            var bufferK = _bufferKeys!.narrow(2, 0, _buffered).to(dtype);                     // [B, Hkv, Tb, D]
            var bufferS = q.matmul(bufferK.transpose(-1, -2));                                // [B, Hkv, M, Tb]
            if (Attention.CausalMask(tq, _buffered, groups, queries.device) is { } mask)
                bufferS = bufferS.masked_fill(mask.logical_not(), double.NegativeInfinity);
            scores.Add(bufferS);

            var probs = (cat(scores, -1) * scale).softmax(-1, ScalarType.Float32).to(dtype);    // [B, Hkv, M, T]
            long offset = 0;
            Tensor? o = null;
            foreach (var (keyStore, valueStore) in _stores.Values)
            {
                var p = probs.narrow(-1, offset, valueStore.Length);                          // [B, Hkv, M, Tc]
                var part = p.matmul(valueStore.Dequantize(dtype));                            // [B, Hkv, M, D]
                if (valueStore.LowRankOutput(p.contiguous()) is { } low)
                    part = part + low;                                                        // + (p·A)·Bᵀ
                o = o is null ? part : o + part;
                offset += valueStore.Length;
            }
            var bufferV = _bufferValues!.narrow(2, 0, _buffered).to(dtype);                   // [B, Hkv, Tb, D]
            var bufferO = probs.narrow(-1, offset, _buffered).matmul(bufferV);                // [B, Hkv, M, D]
            o = o is null ? bufferO : o + bufferO;
            output = Attention.UngroupQueries(o, hq, tq).MoveToOuterDisposeScope();           // [B, Hq, Tq, D]
        }
        Flush();
        return output;
    }

    /// <summary>
    /// Whether decode-sized attention runs the fused kernels over the packed codes (on by default): C# SIMD on
    /// the CPU, <c>gear_decode.cu</c> on CUDA. The tensor path is the reference they are tested against and what
    /// prefill-sized attention uses.
    /// </summary>
    internal bool UseFusedKernels { get; set; } = true;

    /// <summary>Query rows (G·Tq) up to which the fused CPU kernel is used; longer appends are matmul-bound.</summary>
    internal const int CpuKernelMaxRows = 16;

    private bool CanUseCpuKernel(DeviceType device, ScalarType dtype, long[] size) =>
        UseFusedKernels && device == DeviceType.CPU && dtype == ScalarType.Float32
        && size[1] / _shape.KeyValueHeads * size[2] <= CpuKernelMaxRows && _shape.HeadDim % 8 == 0
        && _stores.Values.All(s => s.Keys.SupportsCpuKernel && s.Values.SupportsCpuKernel);

    private Cuda.CudaKernels.Module? CudaModule(DeviceType device, ScalarType dtype, long[] size) =>
        UseFusedKernels && device == DeviceType.CUDA && Cuda.CudaKernels.TypeCode(dtype) >= 0
        && size[1] / _shape.KeyValueHeads * size[2] <= Cuda.CudaKernels.MaxRows && CudaKernelsFit
            ? Cuda.CudaKernels.For(_shape.Device) : null;

    /// <summary>Whether every store's layout is one the CUDA kernels read (else decode attention takes the tensor path).</summary>
    internal bool CudaKernelsFit => _shape.HeadDim <= 256 && _stores.Values.All(s => s.Keys.SupportsCudaKernel && s.Values.SupportsCudaKernel)
                                    && _stores.Keys.Count(rank => rank > 0) <= Cuda.CudaKernels.MaxLowRankStores;

    /// <summary>
    /// Attention for a few query rows on CUDA in a handful of calls (at batch 1 the step is bound by host calls):
    /// scores of each store from its packed keys (one kernel, outliers included) and of the buffer (one kernel; at a
    /// serving batch all but the largest store's kernels on the module's side stream),
    /// reading the queries in their own dtype; a softmax kernel in place; then per-span sums of each store's packed
    /// values (outliers included, one kernel each), and one kernel that adds the values' low rank of every store and
    /// the buffer's values to them and writes the sum in the output's dtype. Two allocations (one float32 scratch for scores
    /// and partial sums, and the output), no other tensor operation.
    /// </summary>
    private Tensor AttendCuda(Tensor queries, long[] size, ScalarType dtype, Cuda.CudaKernels.Module module)
    {
        long b = _shape.Batch, hkv = _shape.KeyValueHeads, hq = size[1], tq = size[2];
        long rows = hq / hkv * tq, total = Length, compressed = CompressedLength;
        int bh = (int)(b * hkv), m = (int)rows, d = (int)_shape.HeadDim, type = Cuda.CudaKernels.TypeCode(dtype);
        var mark = Cuda.CudaKernels.PhaseMarker;
        int slots = 0;
        foreach (var (_, valueStore) in _stores.Values)
            slots += valueStore.CudaValueLayout(bh).Spans;
        // [B, Hq, Tq, D] contiguous is [B·Hkv, G·Tq, D]: query head j·G + i, token t is row i·Tq + t of key/value head j.
        var q = queries.is_contiguous() ? null : queries.contiguous();
        using var scratch = empty(bh * rows * (total + slots * d), ScalarType.Float32, _shape.Device); // scores [B·Hkv, M, T], then partial [B·Hkv, slots, M, D]
        try
        {
            var queryView = new Cuda.CudaKernels.Queries(TensorMemory.DeviceAddress(q ?? queries, contiguous: true), type, 1f / MathF.Sqrt(d), m);
            IntPtr sp = TensorMemory.DeviceAddress(scratch, contiguous: true), op = sp + sizeof(float) * (nint)(bh * rows * total);
            var (keysAddress, valuesAddress) = BufferAddresses();
            long capacity = _bufferCapacity;
            mark?.Invoke("queries");
            // At a serving batch the small launches — a decode-rank store of a few blocks, the buffer's scores — each took
            // ~20 µs of a step for a few µs of work, waiting their turn behind the prompt store's kernel: they go to a side
            // stream and run beside it (forked after the queries and the softmax, joined before the softmax and the finish).
            var side = bh >= Cuda.CudaKernels.SideStreamSlices && _stores.Count > 0 ? module.Side : null;
            var largest = side is null ? null : _stores.Values.MaxBy(s => s.Keys.Length).Keys;
            IntPtr Stream(CompressedStore store) => side is null || ReferenceEquals(store, largest) ? IntPtr.Zero : side.Stream;
            long offset = 0;
            side?.Fork();
            try
            {
                foreach (var (keyStore, _) in _stores.Values)
                {
                    keyStore.CudaKeyScores(module, queryView, sp, bh, total, offset, Stream(keyStore));
                    offset += keyStore.Length;
                }
                Cuda.CudaKernels.DenseScores(module, queryView, keysAddress, capacity, (int)_buffered, (int)tq, sp, bh, d, total, compressed,
                    side?.Stream ?? IntPtr.Zero);
            }
            finally
            {
                side?.Join();                                                                  // before the scratch can be freed
            }
            mark?.Invoke("buffer_scores");
            Cuda.CudaKernels.Softmax(module, sp, bh * rows, total);                           // scores → probabilities, in place
            mark?.Invoke("softmax");
            offset = 0;
            int slot = 0, lowRanks = 0;
            Span<Cuda.CudaKernels.LowRankStore> lowRank = stackalloc Cuda.CudaKernels.LowRankStore[Cuda.CudaKernels.MaxLowRankStores];
            side?.Fork();
            try
            {
                foreach (var (keyStore, valueStore) in _stores.Values)
                {
                    slot += valueStore.CudaValues(module, sp, op, bh, m, total, slots, offset, slot, Stream(keyStore));
                    if (valueStore.CudaLowRank(offset) is { } factors)
                        lowRank[lowRanks++] = factors;
                    offset += valueStore.Length;
                }
            }
            finally
            {
                side?.Join();
            }
            var output = empty([b, hq, tq, d], dtype, _shape.Device);                          // [B, Hq, Tq, D] = [B·Hkv, M, D]
            Cuda.CudaKernels.Finish(module, op, slots, bh, m, d, TensorMemory.DeviceAddress(output, contiguous: true), type, sp, total,
                lowRank[..lowRanks], valuesAddress, capacity, (int)_buffered, compressed);
            mark?.Invoke("finish");
            return output;
        }
        finally
        {
            q?.Dispose();
        }
    }

    /// <summary>Device addresses of the float16 buffers, read once per allocation.</summary>
    private (IntPtr Keys, IntPtr Values) BufferAddresses() =>
        _bufferAddresses ??= (TensorMemory.DeviceAddress(_bufferKeys!, contiguous: true), TensorMemory.DeviceAddress(_bufferValues!, contiguous: true));

    /// <summary>
    /// Attention for a few query rows on the CPU in one pass per (batch, head): scores from the packed keys,
    /// one softmax over compressed history and buffer, then the packed values — no dequantized copy.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private unsafe Tensor AttendCpu(Tensor queries)
    {
        long b = _shape.Batch, hkv = _shape.KeyValueHeads, hq = queries.shape[1], tq = queries.shape[2];
        int d = (int)_shape.HeadDim, rows = (int)(hq / hkv * tq);
        long total = Length, capacity = _bufferCapacity;
        using var scope = NewDisposeScope();
        var q = Attention.GroupQueries(queries, hkv).contiguous();                            // [B, Hkv, M, D]
        var output = zeros([b, hkv, rows, d], ScalarType.Float32);                             // [B, Hkv, M, D]
        float* qAll = TensorMemory.Pointer<float>(q), oAll = TensorMemory.Pointer<float>(output);
        Half* keys16 = TensorMemory.Pointer<Half>(_bufferKeys!), values16 = TensorMemory.Pointer<Half>(_bufferValues!);
        // One thread: spreading slices over cores measured slower inside a forward pass, where libtorch's
        // own worker threads still hold the other cores between operations.
        for (long bh = 0; bh < b * hkv; bh++)
            AttendSlice(bh, qAll + bh * rows * d, oAll + bh * rows * d, rows, tq, keys16 + bh * capacity * d, values16 + bh * capacity * d);
        return Attention.UngroupQueries(output, hq, tq).MoveToOuterDisposeScope();            // [B, Hq, Tq, D]
    }

    private const float SoftmaxFloor = -64f;

    /// <summary>Attention of one (batch, key/value head) slice: q [M, D] → o [M, D], buffer slices at <paramref name="keys16"/>/<paramref name="values16"/>.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private unsafe void AttendSlice(long bh, float* qs, float* o, int rows, long tq, Half* keys16, Half* values16)
    {
        int d = (int)_shape.HeadDim;
        long total = Length, compressed = CompressedLength;
        float scale = 1f / MathF.Sqrt(d);
        float[] scratch = System.Buffers.ArrayPool<float>.Shared.Rent((int)(rows * total) + d);
        try
        {
            fixed (float* scores = scratch)
            {
                float* row = scores + rows * total;
                long offset = 0;
                foreach (var (keyStore, _) in _stores.Values)
                {
                    keyStore.CpuKeyScores(bh, qs, rows, scores + offset, total);
                    offset += keyStore.Length;
                }
                for (long t = 0; t < _buffered; t++)
                {
                    TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(keys16 + t * d, d), new Span<float>(row, d));
                    for (int i = 0; i < rows; i++)                                            // query i % Tq sees keys up to total − Tq + i % Tq
                        scores[i * total + compressed + t] = compressed + t <= total - tq + i % tq
                            ? TensorPrimitives.Dot(new ReadOnlySpan<float>(qs + i * d, d), new ReadOnlySpan<float>(row, d))
                            : float.NegativeInfinity;
                }
                for (int i = 0; i < rows; i++)
                {
                    var p = new Span<float>(scores + i * total, (int)total);
                    TensorPrimitives.Multiply(p, scale, p);
                    TensorPrimitives.Subtract(p, TensorPrimitives.Max(p), p);
                    // Weights below e^-64 (relative to the largest) become e^-64, not subnormal: subnormal
                    // floats cost a microcode assist per operation on x86 and the change is far below float precision.
                    TensorPrimitives.Max(p, SoftmaxFloor, p);
                    TensorPrimitives.Exp(p, p);
                    TensorPrimitives.Multiply(p, 1f / TensorPrimitives.Sum(p), p);
                }
                offset = 0;
                foreach (var (_, valueStore) in _stores.Values)
                {
                    valueStore.CpuValueOutput(bh, scores + offset, total, rows, o);
                    offset += valueStore.Length;
                }
                for (long t = 0; t < _buffered; t++)
                {
                    TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(values16 + t * d, d), new Span<float>(row, d));
                    for (int i = 0; i < rows; i++)
                    {
                        var oi = new Span<float>(o + i * d, d);
                        TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(row, d), scores[i * total + compressed + t], oi, oi);
                    }
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(scratch);
        }
    }

    /// <summary>
    /// Attention when everything is still in the float16 buffer (a first prompt): plain causal attention over the
    /// buffer, as the dense cache does — the general path would materialize the mask and a float32 score matrix for
    /// every prompt position.
    /// </summary>
    private Tensor AttendBufferOnly(Tensor queries)
    {
        using var keys = _bufferKeys!.narrow(2, 0, _buffered);                             // [B, Hkv, Tb, D]
        using var values = _bufferValues!.narrow(2, 0, _buffered);                         // [B, Hkv, Tb, D]
        return Attention.Dense(queries, keys, values, _shape.KeyValueHeads);               // [B, Hq, Tq, D]
    }

    /// <summary>Compresses every whole n_b-token block in the buffer (done after attention and before appends).</summary>
    public void Flush()
    {
        long n = _buffered / _options.BufferLength * _options.BufferLength;
        if (n == 0)
            return;
        int rank = !_options.UsesLowRank ? 0 : _lastAppendWasMulti ? _options.PromptRank : _options.DecodeRank;
        rank = (int)Math.Min(rank, Math.Min(n, _shape.HeadDim));
        var options = _options with { Seed = _seed + _blocks.Count };
        if (!_stores.TryGetValue(rank, out var stores))
        {
            stores = (new CompressedStore(QuantAxis.PerChannel, _options.Bits, _options.GroupSize, _shape.HeadDim),
                      new CompressedStore(QuantAxis.PerToken, _options.Bits, _options.GroupSize, _shape.HeadDim));
            _stores[rank] = stores;
        }
        using (var scope = NewDisposeScope())
        {
            var k = _bufferKeys!.narrow(2, 0, n);                                            // [B, Hkv, n, D]
            var v = _bufferValues!.narrow(2, 0, n);
            var mark = Cuda.CudaKernels.PhaseMarker;
            var keys = GearCompressor.Compress(k, QuantAxis.PerChannel, options, rank);
            stores.Keys.Append(keys);
            mark?.Invoke("store_keys");
            var values = GearCompressor.Compress(v, QuantAxis.PerToken, options, rank);
            stores.Values.Append(values);
            mark?.Invoke("store_values");
        }
        _blocks.Add((rank, n));
        CompressedLength += n;
        // Keep the remainder in a buffer no larger than one block; hold none when nothing is left.
        long remainder = _buffered - n;
        if (remainder == 0)
            ReleaseBuffer();
        else
            ReallocateBuffer(_options.BufferLength, n, remainder);
        _buffered = remainder;
    }

    /// <summary>Grows the buffer geometrically from 16 tokens up to a block (more only for a long append).</summary>
    private void EnsureBufferCapacity(long needed)
    {
        long capacity = _bufferCapacity;
        if (needed <= capacity)
            return;
        long grown = Math.Max(needed, Math.Min(_options.BufferLength, Math.Max(16, capacity * 2)));
        ReallocateBuffer(grown, 0, _buffered);
    }

    private void ReleaseBuffer()
    {
        _bufferKeys?.Dispose();
        _bufferValues?.Dispose();
        _bufferKeys = _bufferValues = null;
        _bufferCapacity = 0;
        _bufferAddresses = null;
    }

    /// <summary>New buffers of <paramref name="capacity"/> tokens holding tokens [from, from + count) of the old ones.</summary>
    private void ReallocateBuffer(long capacity, long from, long count)
    {
        capacity = Math.Max(capacity, count);
        long[] size = [_shape.Batch, _shape.KeyValueHeads, capacity, _shape.HeadDim];
        var keys = empty(size, ScalarType.Float16, _shape.Device).DetachFromDisposeScope();
        var values = empty(size, ScalarType.Float16, _shape.Device).DetachFromDisposeScope();
        if (count > 0)
        {
            using var oldK = _bufferKeys!.narrow(2, from, count);
            using var oldV = _bufferValues!.narrow(2, from, count);
            Attention.CopyTokens(keys, values, 0, oldK, oldV);
        }
        ReleaseBuffer();
        _bufferKeys = keys;
        _bufferValues = values;
        _bufferCapacity = capacity;
    }

    /// <inheritdoc />
    /// <remarks>Compressed blocks are kept or dropped whole: the kept length ends at a block boundary when it falls inside compressed history.</remarks>
    public long Truncate(long length)
    {
        if (length < 0)
            throw new ArgumentOutOfRangeException(nameof(length), length, "length must be 0 or more.");
        if (length >= Length)
            return Length;
        if (length >= CompressedLength)
        {
            _buffered = length - CompressedLength;
            return Length;
        }
        long kept = 0;
        int keepBlocks = 0;
        while (keepBlocks < _blocks.Count && kept + _blocks[keepBlocks].Length <= length)
            kept += _blocks[keepBlocks++].Length;
        var keepPerRank = _blocks.Take(keepBlocks).GroupBy(b => b.Rank).ToDictionary(g => g.Key, g => g.Count());
        foreach (var (rank, (k, v)) in _stores)
        {
            int keep = keepPerRank.GetValueOrDefault(rank);
            k.TruncateBlocks(keep);
            v.TruncateBlocks(keep);
        }
        foreach (var rank in _stores.Where(s => s.Value.Keys.BlockCount == 0).Select(s => s.Key).ToArray())
        {
            _stores[rank].Keys.Dispose();
            _stores[rank].Values.Dispose();
            _stores.Remove(rank);
        }
        _blocks.RemoveRange(keepBlocks, _blocks.Count - keepBlocks);
        CompressedLength = kept;
        _buffered = 0;
        ReleaseBuffer();
        return kept;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        ReleaseBuffer();
        foreach (var (k, v) in _stores.Values.Reverse())
        {
            v.Dispose();
            k.Dispose();
        }
        _stores.Clear();
        _blocks.Clear();
        _buffered = 0;
        CompressedLength = 0;
    }
}
