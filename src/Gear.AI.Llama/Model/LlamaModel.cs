using Gear.AI.Compression;
using Gear.AI.Compression.Caching;
using Gear.AI.Llama.Weights;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Gear.AI.Llama.Model;

/// <summary>
/// A Llama transformer: read-only weights plus the forward pass. Per-sequence state lives in the
/// <see cref="KvSequence"/>s of the step passed to every call; positions are each sequence's own.
/// </summary>
/// <remarks>
/// Per layer: x += o_proj(attention(rope(q), rope(k), v)) over RMSNorm(x); x += down(silu(gate)·up) over
/// RMSNorm(x). A step's tokens of every sequence run packed, [N, ...]; attention goes through
/// <see cref="KvBatch.Attend"/>, which reads each sequence's pages and stores the new K/V.
/// </remarks>
public sealed partial class LlamaModel : IDisposable
{
    private readonly RotaryEmbedding _rope;

    private LlamaModel(LlamaConfig config, LlamaWeights weights, Device device, ScalarType computeType)
    {
        Config = config;
        Weights = weights;
        Device = device;
        ComputeType = computeType;
        _rope = new RotaryEmbedding(config, device);
    }

    /// <summary>The architecture.</summary>
    public LlamaConfig Config { get; }

    /// <summary>The weights.</summary>
    public LlamaWeights Weights { get; }

    /// <summary>Where the model runs.</summary>
    public Device Device { get; }

    /// <summary>The dtype activations and weights use.</summary>
    public ScalarType ComputeType { get; }

    /// <summary>Loads config.json and the safetensors weights of <paramref name="modelDirectory"/>.</summary>
    /// <exception cref="ModelLoadException">A file is missing or malformed.</exception>
    /// <exception cref="ArgumentException">The device is not available.</exception>
    /// <exception cref="GearException">TorchSharp's native library cannot be loaded (the message says which package to add).</exception>
    public static LlamaModel Load(string modelDirectory, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        var config = LlamaConfig.Load(modelDirectory);
        TorchSharpSetup.EnsureLoaded();
        var device = ResolveDevice(options.Device);
        if (device.type == DeviceType.CPU && options.KeepFreedHostMemory)
            HostAllocator.KeepFreedMemory();
        var dtype = options.ComputeType ?? (device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32);
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new ArgumentOutOfRangeException(nameof(options), dtype, "ComputeType must be Float32, Float16 or BFloat16.");
        var weights = LlamaWeights.Load(modelDirectory, config, device, dtype, options.Progress);
        return new LlamaModel(config, weights, device, dtype) { UseCudaKernels = options.FusedKernels };
    }

    /// <summary>Wraps already-loaded weights (tests, synthetic shapes).</summary>
    public static LlamaModel FromWeights(LlamaConfig config, LlamaWeights weights, Device device, ScalarType computeType) =>
        new(config, weights, device, computeType);

    /// <summary>Parses "cpu", "cuda", "cuda:1" and checks CUDA is there.</summary>
    public static Device ResolveDevice(string device)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(device);
        string d = device.Trim().ToLowerInvariant();
        if (d == "cpu")
            return CPU;
        if (d == "cuda" || d.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw new ArgumentException($"Device '{device}' was asked for but CUDA is not available: reference a CUDA backend (TorchBackend=cuda-windows or cuda-linux) and check the driver, or use 'cpu'.", nameof(device));
            return torch.device(d);
        }
        throw new ArgumentException($"Device '{device}' is not known; use 'cpu', 'cuda' or 'cuda:N'.", nameof(device));
    }

    /// <summary>
    /// The number of rows the matrix products' kernels work in on this machine, when padding a step's rows to a multiple
    /// of it gives every row the same bits whatever else is in the step; null where no such number up to 16 exists, and
    /// on CUDA (cuBLAS picks its kernels by the number of rows). Found once, on the CPU, by trying the model's own
    /// weights (one row runs as a matrix-vector product and differs; 4 on the machines measured).
    /// </summary>
    public int? BatchInvariantRowBlock
    {
        get
        {
            if (_rowBlock == 0)
                _rowBlock = ProbeRowBlock();
            return _rowBlock > 0 ? _rowBlock : null;
        }
    }

    private int _rowBlock;                                                                   // 0: not probed yet; -1: none

    /// <summary><see cref="BatchInvariantRowBlock"/>, or a <see cref="NotSupportedException"/> saying why there is none.</summary>
    public int RequireBatchInvariance() => BatchInvariantRowBlock ?? throw new NotSupportedException(
        Device.type == DeviceType.CPU
            ? "Batch-invariant steps (GearChatClientOptions.BatchInvariant) are not available on this machine: its matrix products round rows differently at every batch size tried."
            : "Batch-invariant steps (GearChatClientOptions.BatchInvariant) run on the CPU only: cuBLAS picks its kernels by the number of rows. Turn the option off on CUDA.");

    private int ProbeRowBlock()
    {
        if (Device.type != DeviceType.CPU)
            return -1;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var generator = new Generator(20261207);
        var layer = Weights.Layers[0];
        Tensor[] weights = [layer.Qkv, layer.Output, layer.GateUp, layer.Down, Weights.LmHead];
        foreach (int block in new[] { 1, 2, 4, 8, 16 })
            if (weights.All(w => RowsInvariant(w, block, generator)))
                return block;
        return -1;
    }

    /// <summary>Whether rows padded to a multiple of <paramref name="block"/> come out the same at every count and position.</summary>
    private bool RowsInvariant(Tensor weight, int block, Generator generator)
    {
        const int rows = 48;                                                                 // a multiple of every block tried
        var x = randn([rows, weight.shape[1]], dtype: ComputeType, generator: generator);
        var all = F.linear(x, weight);
        var order = randperm(rows, generator: generator);
        if (!Same(F.linear(x.index_select(0, order), weight), all.index_select(0, order)))
            return false;
        for (int m = 1; m <= 3 * block + 1; m++)
            if (!Same(Linear(x.narrow(0, 0, m), weight, null, block), all.narrow(0, 0, m)))
                return false;
        return true;

        static bool Same(Tensor a, Tensor b) => a.eq(b).all().item<bool>();
    }

    /// <summary><c>linear</c> with the rows padded by zeros to a multiple of <paramref name="block"/> (1: as they are).</summary>
    private static Tensor Linear(Tensor x, Tensor weight, Tensor? bias, int block)
    {
        long n = x.shape[0];
        if (block <= 1 || n % block == 0)
            return F.linear(x, weight, bias);
        var padded = cat([x, x.new_zeros(block - n % block, x.shape[1])]);
        return F.linear(padded, weight, bias).narrow(0, 0, n);
    }

    /// <summary>What this model's KV cache holds per token.</summary>
    public KvShape KvShape => new(Config.NumLayers, Config.NumKeyValueHeads, Config.HeadDim, ComputeType, Device);

    /// <summary>An empty cache of <paramref name="batch"/> sequences in a pool of its own (a static batch).</summary>
    public KvCache CreateCache(GearOptions options, int batch = 1, ScalarType? denseStorageType = null) =>
        KvCache.Create(KvShape, batch, options, denseStorageType, referenceAttention: false, fusedKernels: UseCudaKernels);

    /// <summary>A page pool for this model's KV history, shared by the sequences of a server or a client.</summary>
    /// <param name="options">Cache kind and compression settings.</param>
    /// <param name="maxBytes">Most bytes its pages may take.</param>
    /// <param name="denseStorageType">For <see cref="CacheKind.Fp16"/>: the stored dtype (float16 by default).</param>
    public PagePool CreatePool(GearOptions options, long maxBytes = long.MaxValue, ScalarType? denseStorageType = null) =>
        new(KvShape, options, denseStorageType, maxBytes, fusedKernels: UseCudaKernels);

    /// <summary>
    /// Runs <paramref name="tokens"/> [B, T] at positions startPosition … startPosition + T − 1 through the
    /// model, appending their K/V to <paramref name="cache"/>'s B sequences. Returns float32 logits [B, T, V], or [B, 1, V]
    /// for the last position only when <paramref name="lastOnly"/>.
    /// </summary>
    public Tensor Forward(Tensor tokens, long startPosition, KvCache cache, bool lastOnly = false)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(cache);
        if (tokens.dim() != 2)
            throw new ArgumentException($"tokens must be [B, T], got [{string.Join(", ", tokens.shape)}].", nameof(tokens));
        if (startPosition != cache.Length)
            throw new ArgumentException($"startPosition {startPosition} does not follow the cache, which holds {cache.Length} tokens.", nameof(startPosition));
        long b = tokens.shape[0], t = tokens.shape[1];
        if (b != cache.Batch)
            throw new ArgumentException($"tokens have batch {b} but the cache was made for {cache.Batch}.", nameof(tokens));
        using var step = KvBatch.Begin([.. cache.Sequences.Select(s => new KvBatchItem(s, (int)t))]);
        using var scope = NewDisposeScope();
        var logits = Forward(step, tokens.reshape(-1), allPositions: !lastOnly);               // [B·T', V]
        return logits.view(b, lastOnly ? 1 : t, -1).MoveToOuterDisposeScope();                  // [B, T', V]
    }

    /// <summary>
    /// One step over a ragged batch: each sequence of <paramref name="step"/> appends its own tokens at its own positions
    /// (<paramref name="tokens"/> [N] packed in the step's order; sequence i's start at <see cref="KvBatch.OffsetOf"/>).
    /// Completes the step. Returns float32 logits [N, V] when <paramref name="allPositions"/>, else [S, V] for each
    /// sequence's last new token.
    /// </summary>
    /// <param name="step">The sequences and how many tokens each appends.</param>
    /// <param name="tokens">[N] token ids, packed by sequence.</param>
    /// <param name="allPositions">Logits of every new token rather than of each sequence's last.</param>
    /// <param name="batchInvariant">
    /// Every sequence's results are the same bits whatever else runs in the step (and alone): the rows of each matrix
    /// product are padded to a multiple of <see cref="BatchInvariantRowBlock"/>. A step of one row costs a few
    /// matrix-vector products more.
    /// </param>
    /// <exception cref="ContextLengthExceededException">A sequence would pass the model's context; thrown before any work.</exception>
    /// <exception cref="NotSupportedException"><paramref name="batchInvariant"/> where <see cref="BatchInvariantRowBlock"/> is null.</exception>
    public Tensor Forward(KvBatch step, Tensor tokens, bool allPositions = false, bool batchInvariant = false)
    {
        ArgumentNullException.ThrowIfNull(step);
        ArgumentNullException.ThrowIfNull(tokens);
        int block = batchInvariant ? RequireBatchInvariance() : 1;
        if (tokens.dim() != 1 || tokens.shape[0] != step.TokenCount)
            throw new ArgumentException($"tokens must be [{step.TokenCount}] (the step's new tokens), got [{string.Join(", ", tokens.shape)}].", nameof(tokens));
        var c = Config;
        var positions = new long[step.TokenCount];                                           // each sequence's own positions
        var last = new long[step.Count];
        for (int i = 0, at = 0; i < step.Count; i++)
        {
            var item = step.Items[i];
            long start = item.Sequence.Length;
            if (start + item.NewTokens > c.MaxPositionEmbeddings)
                throw new ContextLengthExceededException((int)(start + item.NewTokens), 0, c.MaxPositionEmbeddings);
            for (int j = 0; j < item.NewTokens; j++)
                positions[at++] = start + j;
            last[i] = at - 1;
        }

        using var _ = no_grad();
        using var scope = NewDisposeScope();
        if (!allPositions && step.TokenCount == step.Count && DecodesInManagedCode)
        {
            long[] hostIds = tokens.dtype == ScalarType.Int64 && tokens.device_type == DeviceType.CPU
                ? tokens.data<long>().ToArray()
                : tokens.to(ScalarType.Int64, CPU).data<long>().ToArray();                  // the copy is the scope's
            return DecodeOnCpu(step, hostIds, positions).MoveToOuterDisposeScope();
        }
        if (!allPositions && step.TokenCount == step.Count && DecodesLaunchLight(step))
            return DecodeOnCuda(step, tokens, positions).MoveToOuterDisposeScope();
        long n = step.TokenCount;
        // Host ids go up pinned and non-blocking: a pageable copy would wait for all the work queued before it.
        var ids = tokens.device_type == DeviceType.CPU && Device.type != DeviceType.CPU
            ? AI.Compression.Caching.TensorMemory.ToDevice(tokens.to(ScalarType.Int64), Device)
            : tokens.to(ScalarType.Int64, Device);
        var x = Weights.Embedding.index_select(0, ids);                                     // [N, H]
        var (cos, sin) = _rope.Tables(OnDevice(positions), ComputeType);               // [N, D]
        long qDim = (long)c.NumHeads * c.HeadDim, kvDim = c.KeyValueDim;

        for (int i = 0; i < c.NumLayers; i++)
        {
            var w = Weights.Layers[i];
            var h = RmsNorm(x, w.AttentionNorm);                                             // [N, H]
            var qkv = Linear(h, w.Qkv, w.QkvBias, block);                                         // [N, (Hq + 2·Hkv)·D]
            var v = qkv.narrow(-1, qDim + kvDim, kvDim).view(n, c.NumKeyValueHeads, c.HeadDim); // [N, Hkv, D]
            var (q, k) = RotaryQk(qkv.unsqueeze(0), cos, sin);                              // [1, Hq, N, D], [1, Hkv, N, D]
            var o = step.Attend(i, q[0].transpose(0, 1), k[0].transpose(0, 1), v);          // [N, Hq, D]
            x = x.add(Linear(o.reshape(n, qDim), w.Output, w.OutputBias, block), Scalars.One);     // [N, H]

            h = RmsNorm(x, w.MlpNorm);
            var gateUp = Linear(h, w.GateUp, null, block);                                              // [N, 2·I]
            var gate = gateUp.narrow(-1, 0, c.IntermediateSize);
            var up = gateUp.narrow(-1, c.IntermediateSize, c.IntermediateSize);
            x = x.add(Linear(F.silu(gate) * up, w.Down, null, block), Scalars.One);                      // [N, H]
        }
        step.Complete();
        if (!allPositions)
            x = x.index_select(0, OnDevice(last));                                       // [S, H]
        x = RmsNorm(x, Weights.FinalNorm);
        var logits = Linear(x, Weights.LmHead, null, block).to(ScalarType.Float32);                     // [S or N, V]
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>A host array as an int64 tensor on the model's device, copied without waiting for the device.</summary>
    private Tensor OnDevice(long[] values) => AI.Compression.Caching.TensorMemory.ToDevice(tensor(values, dtype: ScalarType.Int64), Device);

    /// <summary>
    /// Rotary embedding of the queries and keys of the fused projection qkv [B, T, (Hq + 2·Hkv)·D]: one kernel on CUDA
    /// (the same arithmetic; at batch 1 a decode step is bound by host calls), else the tensor ops on views.
    /// </summary>
    private (Tensor Q, Tensor K) RotaryQk(Tensor qkv, Tensor cos, Tensor sin)
    {
        var c = Config;
        if (UseCudaKernels && AI.Compression.Cuda.CudaKernels.RopeQk(qkv, cos, sin, c.NumHeads, c.NumKeyValueHeads, c.HeadDim) is { } fused)
            return fused;
        long b = qkv.size(0), t = qkv.size(1), qDim = (long)c.NumHeads * c.HeadDim, kvDim = c.KeyValueDim;
        var q = qkv.narrow(-1, 0, qDim).view(b, t, c.NumHeads, c.HeadDim).transpose(1, 2);           // [B, Hq, T, D]
        var k = qkv.narrow(-1, qDim, kvDim).view(b, t, c.NumKeyValueHeads, c.HeadDim).transpose(1, 2); // [B, Hkv, T, D]
        return (RotaryEmbedding.Apply(q, cos, sin), RotaryEmbedding.Apply(k, cos, sin));
    }

    /// <summary>
    /// Whether CUDA runs the model's fused element-wise kernels (RMSNorm, rotary embedding) and pools made by
    /// <see cref="CreatePool"/> and <see cref="CreateCache"/> use the one-pass kernels (<see cref="ModelLoadOptions.FusedKernels"/>;
    /// the bench turns it off on a model to compute the tensor-op reference).
    /// </summary>
    internal bool UseCudaKernels { get; set; } = true;

    /// <summary>RMSNorm computed in float32, as transformers does: w · (x / sqrt(mean(x²) + eps)); one kernel on CUDA.</summary>
    private Tensor RmsNorm(Tensor x, Tensor weight)
    {
        if (UseCudaKernels && AI.Compression.Cuda.CudaKernels.RmsNorm(x, weight, Config.RmsNormEps) is { } fused)
            return fused;
        var xf = x.to(ScalarType.Float32);
        using Scalar eps = Config.RmsNormEps;
        var normed = xf * xf.pow(Scalars.Two).mean([-1L], keepdim: true).add_(eps, Scalars.One).rsqrt();
        return weight * normed.to(x.dtype);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _cublas?.Dispose();
        _rope.Dispose();
        Weights.Dispose();
    }
}
