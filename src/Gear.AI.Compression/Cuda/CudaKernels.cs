using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Cuda;

/// <summary>
/// The kernels of <c>gear_decode.cu</c> (paged decode attention in <c>gear_attention.cuh</c>, a block's compression, the power
/// iteration, the model's element-wise steps), compiled to PTX and shipped as a resource, loaded once per CUDA context through
/// the driver API.
/// </summary>
/// <remarks>
/// Building the PTX (needs nvcc, any CUDA 11.8 or later; PTX of an older ISA loads on newer drivers):
/// <c>scripts/build_cuda_kernels.sh</c> (<c>nvcc -std=c++17 -ptx -arch=compute_70 -O3</c>, and the sources' hash a test checks).
/// Where the module cannot load (e.g. a driver too old for the PTX) the TorchSharp path runs and <see cref="UnavailableReason"/>
/// says why; a pool or model made with fused kernels off (<c>FusedKernels = false</c>) does not call them.
/// </remarks>
internal static class CudaKernels
{
    /// <summary>Query rows one launch handles (kernels are instantiated for up to 1, 2, 4 and 8 rows).</summary>
    public const int MaxRows = 8;

    /// <summary>Largest low-rank rank the kernels apply in place (larger ranks use the TorchSharp path).</summary>
    public const int MaxRank = 8;

    /// <summary>Largest dynamic shared memory a launch asks for without opting in (48 KiB).</summary>
    public const int SharedLimit = 48 * 1024;

    private static readonly int[] RowBuckets = [1, 2, 4, 8];

    /// <summary>
    /// The rank bounds the power iteration and the finishing kernel are instantiated for (they hold that many low-rank
    /// sums, all issued): ranks up to 2 (decode blocks), 4 (prompt blocks) and <see cref="MaxRank"/>.
    /// </summary>
    private static readonly int[] RankBounds = [2, 4, MaxRank];
    private static readonly int[] CodeWidths = [.. Enumerable.Range(1, 8).Where(BitPacking.TilesAByte)];
    private static readonly int[] PieceWidths = [64, 32, 16, 8];

    /// <summary>
    /// The value kernels' instantiations: rows M, code width, channels per lane (CPT) with M·CPT ≤ 64 (accumulators in
    /// registers) and CPT·bits ≤ 128 (one load of at most 16 bytes), as GEAR_VALUES lists them in the source.
    /// </summary>
    private static readonly (int Rows, int Bits, int Channels)[] ValueKernels =
        [.. RowBuckets.SelectMany(m => CodeWidths.SelectMany(b => PieceWidths.Where(c => m * c <= 64 && c * b <= 128).Select(c => (m, b, c))))];

    /// <summary>The kernel entry points, as declared in the PTX.</summary>
    public static readonly IReadOnlyList<string> EntryPoints =
        [.. RowBuckets.SelectMany(m => CodeWidths.Select(b => $"gear_paged_key_scores_m{m}_b{b}")),
         .. RowBuckets.SelectMany(m => RankBounds.Select(r => $"gear_paged_finish_m{m}_r{r}")),
         .. ValueKernels.Select(ValueKernelName),
         .. RowBuckets.Select(m => $"gear_paged_dense_values_m{m}"),
         "gear_paged_dense_scores", "gear_paged_softmax", "gear_orthonormalize",
         .. RankBounds.Select(r => $"gear_power_iteration_r{r}"),
         "gear_rms_norm", "gear_rope_qk", "gear_compress_channels", "gear_compress_tokens",
         "gear_paged_append", "gear_embed", "gear_rope_decode", "gear_silu_mul", "gear_add"];

    private static string ValueKernelName((int Rows, int Bits, int Channels) k) => $"gear_paged_values_m{k.Rows}_b{k.Bits}_c{k.Channels}";

    /// <summary>Thread blocks the value kernel aims for per launch.</summary>
    public const int ValueBlocks = 512;

    /// <summary>
    /// Channels per lane of the value kernel for <paramref name="rows"/> query rows (rounded up to the instantiated
    /// bucket), or 0 when none fits: the widest instantiated width that divides the head size and the value group, with
    /// a power-of-two number of lanes per token (at most a warp).
    /// </summary>
    public static int PieceWidth(int rows, int bits, int headDim, int valueGroup)
    {
        int m = Module.Bucket(rows);
        foreach (var (km, kb, c) in ValueKernels)
            if (km == m && kb == bits && headDim % c == 0 && valueGroup % c == 0
                && headDim / c <= 32 && int.IsPow2(headDim / c))
                return c;
        return 0;
    }

    /// <summary>A launch of the value kernel over a store: thread blocks per (batch, head) slice, chunks per warp, warps per block.</summary>
    internal readonly record struct ValueSplit(int Spans, int ChunksPerWarp, int Warps);

    /// <summary>
    /// How the value kernel splits a store of <paramref name="chunks"/> value groups of tokens over <paramref name="bh"/>
    /// (batch, head) slices: chunks per warp, as many as keep about <see cref="ValueBlocks"/> blocks of 8 warps busy (1 to 8);
    /// warps per block, <paramref name="maxWarps"/> or as few as the chunks need (a store of one decode block is one warp
    /// per slice, not a block of eight warps with seven idle); and the thread blocks (spans) per slice, each writing one
    /// slot of the partial sums.
    /// </summary>
    public static ValueSplit ValueLayout(int chunks, int bh, int maxWarps = 8)
    {
        int perWarp = (int)Math.Clamp((long)chunks * bh / (8L * ValueBlocks), 1, 8);
        int warps = Math.Clamp((chunks + perWarp - 1) / perWarp, 1, maxWarps);
        return new ValueSplit((chunks + warps * perWarp - 1) / (warps * perWarp), perWarp, warps);
    }

    /// <summary>The loaded entry points; key kernels indexed [row bucket, code width] (see <see cref="Pick"/>).</summary>
    internal sealed record Module(IntPtr[,] KeyScores, IntPtr[,] Finish,
        IReadOnlyDictionary<(int Rows, int Bits, int Channels), IntPtr> Values, IntPtr[] DenseValues,
        IntPtr DenseScores, IntPtr Softmax, IntPtr Orthonormalize,
        IntPtr RmsNorm, IntPtr RopeQk, IntPtr[] PowerIteration, IntPtr CompressChannels, IntPtr CompressTokens,
        IntPtr PagedAppend, IntPtr Embed, IntPtr RopeDecode, IntPtr SiluMul, IntPtr Add)
    {
        /// <summary>out [rows, H] = RMSNorm of x [rows, H] with weight w [H] (one dtype code), as <see cref="CudaKernels.RmsNorm"/>.</summary>
        public unsafe void RunRmsNorm(IntPtr x, IntPtr w, IntPtr output, int type, int rows, int h, float eps)
        {
            void** args = stackalloc void*[6];
            args[0] = &x; args[1] = &w; args[2] = &output; args[3] = &type; args[4] = &h; args[5] = &eps;
            CudaDriver.Launch(RmsNorm, ((uint)rows, 1), (uint)Math.Clamp((h / 4 + 31) / 32 * 32, 32, 1024), 0, args);
        }

        /// <summary>x [S, H] = table [V, H] rows at ids [S] (int64), one dtype code.</summary>
        public unsafe void RunEmbed(IntPtr ids, IntPtr table, IntPtr x, int type, int sequences, int h)
        {
            void** args = stackalloc void*[5];
            args[0] = &ids; args[1] = &table; args[2] = &x; args[3] = &type; args[4] = &h;
            CudaDriver.Launch(Embed, ((uint)sequences, 1), (uint)Math.Clamp((h + 31) / 32 * 32, 32, 1024), 0, args);
        }

        /// <summary>
        /// One new token per sequence: q [S, Hq, D], k and v [S, Hkv, D] from the fused projection qkv [S, (Hq + 2·Hkv)·D],
        /// q and k rotated at positions [S] (int64) with the inverse frequencies [D/2] (float32).
        /// </summary>
        public unsafe void RunRopeDecode(IntPtr qkv, IntPtr positions, IntPtr inverseFrequencies, IntPtr q, IntPtr k, IntPtr v, int type,
                                         int sequences, int hq, int hkv, int d)
        {
            void** args = stackalloc void*[10];
            args[0] = &qkv; args[1] = &positions; args[2] = &inverseFrequencies; args[3] = &q; args[4] = &k; args[5] = &v;
            args[6] = &type; args[7] = &hq; args[8] = &hkv; args[9] = &d;
            CudaDriver.Launch(RopeDecode, ((uint)sequences, (uint)(hq + 2 * hkv)), (uint)(d / 2), 0, args);
        }

        /// <summary>x += y over <paramref name="count"/> elements of one dtype code, rounded as a tensor add.</summary>
        public unsafe void RunAdd(IntPtr x, IntPtr y, int type, long count)
        {
            void** args = stackalloc void*[4];
            args[0] = &x; args[1] = &y; args[2] = &type; args[3] = &count;
            CudaDriver.Launch(Add, ((uint)((count + 255) / 256), 1), 256, 0, args);
        }

        /// <summary>out [S, I] = silu(gate)·up from gateUp [S, 2·I] (gate first), one dtype code.</summary>
        public unsafe void RunSiluMul(IntPtr gateUp, IntPtr output, int type, int sequences, int intermediate)
        {
            void** args = stackalloc void*[4];
            args[0] = &gateUp; args[1] = &output; args[2] = &type; args[3] = &intermediate;
            CudaDriver.Launch(SiluMul, ((uint)((intermediate + 255) / 256), (uint)sequences), 256, 0, args);
        }

        /// <summary>The kernel instantiated for the fewest rows ≥ <paramref name="rows"/> (and <paramref name="bits"/>-bit codes).</summary>
        public IntPtr Pick(IntPtr[,] kernels, int rows, int bits) => kernels[RowBucket(rows), Array.IndexOf(CodeWidths, bits)];

        /// <summary>The power iteration instantiated for the smallest rank bound (2, 4 or 8) ≥ <paramref name="rank"/>.</summary>
        public IntPtr PowerIterationFor(int rank) => PowerIteration[RankBucket(rank)];

        /// <summary>Index into <see cref="RankBounds"/> of the smallest bound ≥ <paramref name="rank"/> (≤ <see cref="MaxRank"/>).</summary>
        private static int RankBucket(int rank) => rank <= 2 ? 0 : rank <= 4 ? 1 : 2;

        /// <summary>The finishing kernel (low rank of the values, sum of the slots) for <paramref name="rows"/> rows and stores of rank ≤ <paramref name="rank"/>.</summary>
        public IntPtr FinishFor(int rows, int rank) => Finish[RowBucket(rows), RankBucket(rank)];

        /// <summary>The value kernel for <paramref name="rows"/> rows, <paramref name="bits"/>-bit codes and <paramref name="channels"/> channels per lane.</summary>
        public IntPtr Value(int rows, int bits, int channels) => Values[(Bucket(rows), bits, channels)];

        /// <summary>The dense pages' value kernel for <paramref name="rows"/> rows.</summary>
        public IntPtr DenseValue(int rows) => DenseValues[RowBucket(rows)];

        /// <summary>Rows the kernel for <paramref name="rows"/> rows is instantiated for (its register and shared-memory shape).</summary>
        public static int Bucket(int rows) => RowBuckets[RowBucket(rows)];

        private static int RowBucket(int rows) => rows <= 1 ? 0 : rows <= 2 ? 1 : rows <= 4 ? 2 : 3;
    }

    /// <summary>The kernels' code for a tensor dtype (0 float32, 1 float16, 2 bfloat16), or -1 for any other.</summary>
    public static int TypeCode(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => 0,
        ScalarType.Float16 => 1,
        ScalarType.BFloat16 => 2,
        _ => -1,
    };

    private static readonly object Gate = new();
    private static readonly Dictionary<IntPtr, Module> Modules = [];

    /// <summary>Why the kernels are not in use, or null when they are (or have not been needed yet).</summary>
    public static string? UnavailableReason { get; private set; }

    /// <summary>The module for <paramref name="device"/>'s context on this thread, or null when the kernels cannot be used.</summary>
    public static Module? For(Device device)
    {
        lock (Gate)
        {
            if (UnavailableReason is not null)
                return null;
            try
            {
                var context = CudaDriver.CurrentContext(device.index < 0 ? 0 : device.index);
                if (Modules.TryGetValue(context, out var module))
                    return module;
                var handle = CudaDriver.LoadModule(Ptx());
                IntPtr[,] Table(int[] rows, int[] columns, Func<int, int, IntPtr> function)
                {
                    var table = new IntPtr[rows.Length, columns.Length];
                    for (int i = 0; i < rows.Length; i++)
                        for (int j = 0; j < columns.Length; j++)
                            table[i, j] = function(rows[i], columns[j]);
                    return table;
                }
                module = new Module(
                    Table(RowBuckets, CodeWidths, (m, b) => CudaDriver.Function(handle, $"gear_paged_key_scores_m{m}_b{b}")),
                    Table(RowBuckets, RankBounds, (m, r) => CudaDriver.Function(handle, $"gear_paged_finish_m{m}_r{r}")),
                    ValueKernels.ToDictionary(k => k, k => CudaDriver.Function(handle, ValueKernelName(k))),
                    [.. RowBuckets.Select(m => CudaDriver.Function(handle, $"gear_paged_dense_values_m{m}"))],
                    CudaDriver.Function(handle, "gear_paged_dense_scores"),
                    CudaDriver.Function(handle, "gear_paged_softmax"),
                    CudaDriver.Function(handle, "gear_orthonormalize"),
                    CudaDriver.Function(handle, "gear_rms_norm"),
                    CudaDriver.Function(handle, "gear_rope_qk"),
                    [.. RankBounds.Select(r => CudaDriver.Function(handle, $"gear_power_iteration_r{r}"))],
                    CudaDriver.Function(handle, "gear_compress_channels"),
                    CudaDriver.Function(handle, "gear_compress_tokens"),
                    CudaDriver.Function(handle, "gear_paged_append"),
                    CudaDriver.Function(handle, "gear_embed"),
                    CudaDriver.Function(handle, "gear_rope_decode"),
                    CudaDriver.Function(handle, "gear_silu_mul"),
                    CudaDriver.Function(handle, "gear_add"));
                Modules[context] = module;
                return module;
            }
            catch (Exception e) when (e is GearException or DllNotFoundException or EntryPointNotFoundException or IOException)
            {
                UnavailableReason = e.Message;
                return null;
            }
        }
    }

    /// <summary>
    /// Orthonormal columns of every matrix of <paramref name="y"/> [..., n, r] (float32, CUDA): one launch for the whole
    /// batch, where linalg.qr on CUDA makes a solver call per matrix. Null when the kernels are not available.
    /// </summary>
    public static unsafe Tensor? Orthonormalize(Tensor y)
    {
        if (y.device_type != DeviceType.CUDA || For(y.device) is not { } module)
            return null;
        var q = y.to(ScalarType.Float32).contiguous().clone();                     // the kernel works in place
        long n = q.shape[^2];
        int r = (int)q.shape[^1];
        long batch = q.numel() / Math.Max(1, n * r);
        if (batch == 0)
            return q;
        IntPtr data = Caching.TensorMemory.DeviceAddress(q);
        void** args = stackalloc void*[3];
        args[0] = &data; args[1] = &n; args[2] = &r;
        CudaDriver.Launch(module.Orthonormalize, ((uint)batch, 1), 256, 0, args);
        return q;
    }

    /// <summary>
    /// Group quantization of <paramref name="x"/> [..., n, D] (CUDA) as <see cref="GroupQuantizer"/> does it, in one launch
    /// (the tensor ops are ~25 calls): <see cref="CompressBlock"/> with no outliers and no residual — packed codes
    /// [..., n, D·bits/8], scale and zero in fp16 ([..., n/g, D] per channel, [..., n, D/g] per token). Null where that
    /// kernel does not apply; the caller then runs the tensor ops.
    /// </summary>
    public static (Tensor Codes, Tensor Scale, Tensor Zero)? Quantize(Tensor x, int bits, int g, QuantAxis axis) =>
        CompressBlock(x, bits, g, axis, perSide: 0, residual: false) is { } parts ? (parts.Codes, parts.Scale, parts.Zero) : null;

    /// <summary>What <see cref="CompressBlock"/> returns: the quantized block, its outliers (when k is 1) and the residual (when asked for).</summary>
    internal sealed record BlockParts(Tensor Codes, Tensor Scale, Tensor Zero, Tensor? OutlierValues, Tensor? OutlierIndex, Tensor? Residual);

    /// <summary>Warps a block of gear_compress_tokens (one value group each).</summary>
    private const int TokenWarps = 8;

    /// <summary>
    /// A block's compression but the low rank in one launch (the tensor ops are ~40 calls over the block, most of a decode
    /// step's compression at a serving batch): GEAR's outliers with <paramref name="perSide"/> k = 1 (0: none), the group
    /// quantization of the rest as <see cref="GroupQuantizer"/> gives it, and, when <paramref name="residual"/> is set, the float32
    /// residual x − (D̂ + S) for the low rank. <paramref name="x"/> [..., n, D] in float32, float16 or bfloat16 on CUDA, read
    /// in place when its rows are dense and its leading dimensions one stride apart (a narrow of the buffer). Outliers as
    /// <see cref="OutlierSet"/> holds them (uint8 indices). Null where the kernel does not apply — k above 1 (a prompt's
    /// keys), vectors over 256 entries, value groups that are not whole warps or are over 256 features, bits other than 1, 2, 4 and 8, D not a
    /// multiple of 8 up to 1,024, groups that do not tile the axis — and the caller runs the tensor ops.
    /// </summary>
    public static unsafe BlockParts? CompressBlock(Tensor x, int bits, int g, QuantAxis axis, int perSide, bool residual)
    {
        long n = x.shape[^2], d = x.shape[^1];
        int type = TypeCode(x.dtype);
        bool channels = axis == QuantAxis.PerChannel;
        long vector = channels ? n : g;
        if (x.device_type != DeviceType.CUDA || type < 0 || !BitPacking.TilesAByte(bits) || perSide is not (0 or 1)
            || d % 8 != 0 || d > 1024 || n > int.MaxValue || (perSide == 1 && (vector < 3 || vector > 256))
            || (channels ? n % g != 0 : d % g != 0 || g % 32 != 0 || g > 256 || n * (d / g) > int.MaxValue)
            || For(x.device) is not { } module)
            return null;
        var lead = x.shape[..^2];
        long l = x.numel() / Math.Max(1, n * d);
        if (!channels && l > 65535)
            return null;
        var input = x;
        long ld = n * d;
        if (!RowsInPlace(x, out long stride))
            input = x.contiguous();
        else if (lead.Length > 0)
            ld = stride;
        var device = x.device;
        var codes = empty([.. lead, n, d / 8 * bits], ScalarType.Byte, device);
        long[] groupShape = channels ? [.. lead, n / g, d] : [.. lead, n, d / g];
        var scale = empty(groupShape, ScalarType.Float16, device);
        var zero = empty(groupShape, ScalarType.Float16, device);
        long[] outlierShape = channels ? [.. lead, d, 2] : [.. lead, n, d / g, 2];
        var values = perSide == 1 ? empty(outlierShape, ScalarType.Float16, device) : null;
        var index = perSide == 1 ? empty(outlierShape, ScalarType.Byte, device) : null;
        var rest = residual ? empty([.. lead, n, d], ScalarType.Float32, device) : null;
        if (l > 0 && n > 0)
        {
            IntPtr xp = Caching.TensorMemory.DeviceAddress(input, contiguous: true), cp = Caching.TensorMemory.DeviceAddress(codes, contiguous: true);
            IntPtr sp = Caching.TensorMemory.DeviceAddress(scale, contiguous: true), zp = Caching.TensorMemory.DeviceAddress(zero, contiguous: true);
            IntPtr vp = values is null ? IntPtr.Zero : Caching.TensorMemory.DeviceAddress(values, contiguous: true);
            IntPtr ip = index is null ? IntPtr.Zero : Caching.TensorMemory.DeviceAddress(index, contiguous: true);
            IntPtr rp = rest is null ? IntPtr.Zero : Caching.TensorMemory.DeviceAddress(rest, contiguous: true);
            int rows = (int)n, features = (int)d;
            void** args = stackalloc void*[14];
            args[0] = &xp; args[1] = &type; args[2] = &ld; args[3] = &rows; args[4] = &features; args[5] = &g; args[6] = &bits;
            args[7] = &perSide; args[8] = &cp; args[9] = &sp; args[10] = &zp; args[11] = &vp; args[12] = &ip; args[13] = &rp;
            if (channels)
                CudaDriver.Launch(module.CompressChannels, ((uint)l, 1), (uint)((d + 31) / 32 * 32), 0, args);
            else
                CudaDriver.Launch(module.CompressTokens, ((uint)((n * (d / g) + TokenWarps - 1) / TokenWarps), (uint)l), 32 * TokenWarps, 0, args);
        }
        return new BlockParts(codes, scale, zero, values, index, rest);
    }

    /// <summary>
    /// Whether <paramref name="x"/> [..., n, D] has dense rows of D (token stride D) and leading dimensions that collapse
    /// into one of stride <paramref name="stride"/> (elements from one [n, D] slice to the next, at least n·D).
    /// </summary>
    internal static bool RowsInPlace(Tensor x, out long stride)
    {
        var strides = x.stride();
        var shape = x.shape;
        int dims = shape.Length;
        stride = shape[^2] * shape[^1];
        if (strides[dims - 1] != 1 || (shape[^2] > 1 && strides[dims - 2] != shape[^1]))
            return false;
        if (dims == 2)
            return true;
        stride = strides[dims - 3];
        if (stride < shape[^2] * shape[^1])
            return false;
        for (int i = dims - 4; i >= 0; i--)
            if (shape[i] > 1 && strides[i] != strides[i + 1] * shape[i + 1])
                return false;
        return true;
    }

    /// <summary>
    /// The randomized power iteration of <see cref="LowRankFactors.Approximate"/> for every matrix of
    /// <paramref name="residual"/> [..., n, D] (float32, CUDA) in one launch, each matrix held in shared memory (so n·D up to
    /// ~11,000 floats: a decode block, not a prompt): float16 A [..., n, r] and B [..., D, r]. <paramref name="omega"/>
    /// [D, r] float32 on the same device. Null where the kernel does not apply (the caller then runs the tensor ops).
    /// </summary>
    public static unsafe (Tensor A, Tensor B)? PowerIteration(Tensor residual, Tensor omega, int iterations)
    {
        long n = residual.shape[^2], d = residual.shape[^1], r = omega.shape[^1];
        long shared = sizeof(float) * (n * d + n * r + d * r);
        if (residual.device_type != DeviceType.CUDA || residual.dtype != ScalarType.Float32 || omega.dtype != ScalarType.Float32
            || omega.device_type != residual.device_type || omega.device_index != residual.device_index || omega.shape[0] != d
            || r > MaxRank || shared > SharedLimit || For(residual.device) is not { } module)
            return null;
        var lead = residual.shape[..^2];
        long batch = residual.numel() / Math.Max(1, n * d);
        var input = Contiguous(residual);
        var w = Contiguous(omega);
        var a = empty([.. lead, n, r], ScalarType.Float16, residual.device);
        var b = empty([.. lead, d, r], ScalarType.Float16, residual.device);
        if (batch > 0)
        {
            IntPtr xp = Caching.TensorMemory.DeviceAddress(input), wp = Caching.TensorMemory.DeviceAddress(w);
            IntPtr ap = Caching.TensorMemory.DeviceAddress(a), bp = Caching.TensorMemory.DeviceAddress(b);
            int rows = (int)n, features = (int)d, rank = (int)r;
            void** args = stackalloc void*[8];
            args[0] = &xp; args[1] = &wp; args[2] = &rows; args[3] = &features; args[4] = &rank; args[5] = &iterations; args[6] = &ap; args[7] = &bp;
            CudaDriver.Launch(module.PowerIterationFor(rank), ((uint)batch, 1), 256, (uint)shared, args);
        }
        return (a, b);
    }

    /// <summary>
    /// RMSNorm of <paramref name="x"/> [..., H] with weight <paramref name="weight"/> [H] (CUDA, float32/float16/bfloat16, one
    /// dtype) in one launch, as the model's tensor ops compute it: w · dtype(x / sqrt(mean(x²) + eps)), the mean in float32.
    /// Null where the kernel does not apply (the caller then runs the tensor ops).
    /// </summary>
    public static unsafe Tensor? RmsNorm(Tensor x, Tensor weight, double eps)
    {
        int type = TypeCode(x.dtype);
        long h = x.size(-1);
        if (x.device_type != DeviceType.CUDA || type < 0 || weight.dtype != x.dtype || weight.numel() != h || h > int.MaxValue
            || For(x.device) is not { } module)
            return null;
        long rows = x.numel() / Math.Max(1, h);
        var input = Contiguous(x);
        var w = Contiguous(weight);
        var output = empty_like(input);
        if (rows > 0)
            module.RunRmsNorm(Caching.TensorMemory.DeviceAddress(input, contiguous: true), Caching.TensorMemory.DeviceAddress(w, contiguous: true),
                Caching.TensorMemory.DeviceAddress(output, contiguous: true), type, (int)rows, (int)h, (float)eps);
        return output;
    }

    /// <summary>
    /// Rotary embedding of the queries and keys of a fused projection <paramref name="qkv"/> [B, T, (Hq + 2·Hkv)·D] (CUDA,
    /// float32/float16/bfloat16) with tables <paramref name="cos"/>, <paramref name="sin"/> [T, D] of its dtype, in one
    /// launch: q [B, Hq, T, D] and k [B, Hkv, T, D], contiguous, as x·cos + rotate_half(x)·sin computes them in that dtype.
    /// Null where the kernel does not apply.
    /// </summary>
    public static unsafe (Tensor Q, Tensor K)? RopeQk(Tensor qkv, Tensor cos, Tensor sin, int hq, int hkv, int d)
    {
        int type = TypeCode(qkv.dtype);
        if (qkv.device_type != DeviceType.CUDA || type < 0 || qkv.dim() != 3 || d % 2 != 0 || d > 2048
            || qkv.size(2) != (long)(hq + 2 * hkv) * d || cos.dtype != qkv.dtype || sin.dtype != qkv.dtype
            || !qkv.is_contiguous() || !cos.is_contiguous() || !sin.is_contiguous() || For(qkv.device) is not { } module)
            return null;
        long b = qkv.size(0), t = qkv.size(1);
        var q = empty([b, hq, t, d], qkv.dtype, qkv.device);
        var k = empty([b, hkv, t, d], qkv.dtype, qkv.device);
        if (b * t > 0)
        {
            IntPtr xp = Caching.TensorMemory.DeviceAddress(qkv), cp = Caching.TensorMemory.DeviceAddress(cos), sp = Caching.TensorMemory.DeviceAddress(sin);
            IntPtr qp = Caching.TensorMemory.DeviceAddress(q), kp = Caching.TensorMemory.DeviceAddress(k);
            int tokens = (int)t;
            void** args = stackalloc void*[10];
            args[0] = &xp; args[1] = &cp; args[2] = &sp; args[3] = &qp; args[4] = &kp; args[5] = &type; args[6] = &tokens;
            args[7] = &hq; args[8] = &hkv; args[9] = &d;
            CudaDriver.Launch(module.RopeQk, ((uint)(b * t), (uint)(hq + hkv)), (uint)(d / 2), 0, args);
        }
        return (q, k);
    }

    /// <summary><paramref name="t"/> itself where it is contiguous, else a contiguous copy (it belongs to the caller's dispose scope).</summary>
    private static Tensor Contiguous(Tensor t) => t.is_contiguous() ? t : t.contiguous();

    /// <summary>The PTX text, NUL-terminated as cuModuleLoadData wants it.</summary>
    public static byte[] Ptx()
    {
        using var stream = typeof(CudaKernels).Assembly.GetManifestResourceStream("Gear.AI.Compression.Cuda.gear_decode.ptx")
            ?? throw new IOException("The gear_decode.ptx resource is missing from Gear.AI.Compression.");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return [.. copy.ToArray(), 0];
    }
}
