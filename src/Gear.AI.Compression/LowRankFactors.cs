using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression;

/// <summary>
/// The low-rank part L of GEAR: per (batch, head), L ≈ A·Bᵀ with A [n, r] and B [D, r] in float16.
/// Owns its tensors. Computed by randomized power iteration with QR orthonormalization.
/// </summary>
internal sealed class LowRankFactors : IDisposable
{
    internal LowRankFactors(Tensor a, Tensor b)
    {
        A = a;
        B = b;
    }

    /// <summary>Left factor, float16 [..., n, r], orthonormal columns.</summary>
    public Tensor A { get; }

    /// <summary>Right factor, float16 [..., D, r].</summary>
    public Tensor B { get; }

    /// <summary>The rank r.</summary>
    public long Rank => A.shape[^1];

    /// <summary>Exact bytes held.</summary>
    public long ResidentBytes => Bytes.Of(A) + Bytes.Of(B);

    /// <summary>A·Bᵀ, [..., n, D].</summary>
    public Tensor Reconstruct(ScalarType dtype = ScalarType.Float32)
    {
        using var scope = NewDisposeScope();
        return A.to(ScalarType.Float32).matmul(B.to(ScalarType.Float32).transpose(-1, -2)).to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Rank-<paramref name="rank"/> approximation of <paramref name="residual"/> [..., n, D] for every
    /// leading index independently: Y = R·Ω (Ω Gaussian [D, r] from <paramref name="seed"/>, shared by all), then
    /// <paramref name="iterations"/> rounds of Q = qr(Y), Z = qr(Rᵀ·Q), Y = R·Z; finally A = qr(Y) and B = Rᵀ·A.
    /// </summary>
    /// <remarks><paramref name="fused"/> false: the tensor ops alone (the reference the one-pass kernels are compared with).</remarks>
    public static LowRankFactors Approximate(Tensor residual, int rank, int iterations, long seed, bool fused = true)
    {
        ArgumentNullException.ThrowIfNull(residual);
        if (residual.dim() < 2)
            throw new ArgumentException($"Expected [..., n, D], got [{string.Join(", ", residual.shape)}].", nameof(residual));
        GearOptions.ValidateRank(rank, residual.shape[^2], residual.shape[^1], nameof(rank));
        if (iterations < 0)
            throw new ArgumentOutOfRangeException(nameof(iterations), iterations, "iterations must be 0 or more.");

        using var scope = NewDisposeScope();
        var r = residual.to(ScalarType.Float32);                               // [..., n, D]
        var rt = r.transpose(-1, -2);                                          // [..., D, n]
        // One Ω for every matrix of the batch (each is independent of Ω, which is all the range finder needs): a
        // sequence's factors do not depend on what else is in the batch, and drawing it costs D·r numbers, not B·H·D·r.
        var omega = Omega(r.shape[^1], rank, seed, r.device);                  // [D, r]
        // On CUDA a decode block's matrices fit in shared memory: the same steps in one launch (the tensor ops below are
        // ~40 calls, and a batch-1 decode step is bound by calls).
        if (fused && Cuda.CudaKernels.PowerIteration(r, omega, iterations) is { } kernel)
            return new LowRankFactors(kernel.A.DetachFromDisposeScope(), kernel.B.DetachFromDisposeScope());
        // On the CPU the same for small matrices in managed code (a decode block's ~40 tensor calls cost more than its arithmetic).
        if (fused && r.device_type == DeviceType.CPU && r.shape[^2] <= ManagedRows && r.shape[^1] <= ManagedRows)
            return PowerIterationOnCpu(r.contiguous(), omega.contiguous(), rank, iterations);
        var y = r.matmul(omega);                                               // [..., n, r]
        for (int i = 0; i < iterations; i++)
        {
            var q = Orthonormal(y);                                            // [..., n, r]
            var z = Orthonormal(rt.matmul(q));                                 // [..., D, r]
            y = r.matmul(z);                                                   // [..., n, r]
        }
        var a = Orthonormal(y);                                                // [..., n, r]
        var b = rt.matmul(a);                                                  // [..., D, r]
        return new LowRankFactors(
            a.to(ScalarType.Float16).DetachFromDisposeScope(),
            b.to(ScalarType.Float16).DetachFromDisposeScope());
    }

    /// <summary>
    /// Ω [D, r], drawn on the CPU and moved without waiting for the device (<see cref="Caching.TensorMemory.ToDevice"/>):
    /// the same seed gives the same projection on every device. Not kept between calls: a cache's seed changes with every
    /// block and layer it compresses.
    /// </summary>
    private static Tensor Omega(long d, int rank, long seed, Device device)
    {
        using var generator = new Generator((ulong)seed, CPU);
        var drawn = randn([d, rank], dtype: ScalarType.Float32, generator: generator); // in the caller's dispose scope
        return Caching.TensorMemory.ToDevice(drawn, device);
    }

    /// <summary>Matrices up to this many rows and columns are factored in managed code on the CPU (a decode block's 64 tokens).</summary>
    private const int ManagedRows = 256;

    /// <summary>
    /// The power iteration above for every [n, D] matrix of <paramref name="r"/> (float32, contiguous, CPU), with modified
    /// Gram-Schmidt for the QR steps (the same column space as Householder QR; only column signs may differ, which A·Bᵀ
    /// does not see). A column with nothing left after the projection becomes zero (its B column is then zero too).
    /// </summary>
    private static unsafe LowRankFactors PowerIterationOnCpu(Tensor r, Tensor omega, int rank, int iterations)
    {
        long n = r.shape[^2], d = r.shape[^1], matrices = r.numel() / Math.Max(1, n * d);
        var lead = r.shape[..^2];
        var a16 = empty([.. lead, n, rank], ScalarType.Float16);
        var b16 = empty([.. lead, d, rank], ScalarType.Float16);
        float* rp = Caching.TensorMemory.Pointer<float>(r), op = Caching.TensorMemory.Pointer<float>(omega);
        Half* ap = Caching.TensorMemory.Pointer<Half>(a16), bp = Caching.TensorMemory.Pointer<Half>(b16);
        int rows = (int)n, cols = (int)d;
        var y = new float[rows * rank];
        var z = new float[cols * rank];
        fixed (float* yp = y, zp = z)
            for (long m = 0; m < matrices; m++)
            {
                float* matrix = rp + m * n * d;
                Times(matrix, rows, cols, op, rank, yp);                                       // Y = R·Ω
                for (int i = 0; i < iterations; i++)
                {
                    Orthonormalize(yp, rows, rank);
                    TransposeTimes(matrix, rows, cols, yp, rank, zp);                          // Z = qr(Rᵀ·Q)
                    Orthonormalize(zp, cols, rank);
                    Times(matrix, rows, cols, zp, rank, yp);                                   // Y = R·Z
                }
                Orthonormalize(yp, rows, rank);                                                // A = qr(Y)
                TransposeTimes(matrix, rows, cols, yp, rank, zp);                              // B = Rᵀ·A
                for (int i = 0; i < rows * rank; i++)
                    ap[m * n * rank + i] = (Half)yp[i];
                for (int i = 0; i < cols * rank; i++)
                    bp[m * d * rank + i] = (Half)zp[i];
            }
        return new LowRankFactors(a16.DetachFromDisposeScope(), b16.DetachFromDisposeScope());

        // out [rows, rank] = M [rows, cols] · v [cols, rank]
        static void Times(float* m, int rows, int cols, float* v, int rank, float* result)
        {
            for (int t = 0; t < rows; t++)
                for (int j = 0; j < rank; j++)
                {
                    float sum = 0;
                    for (int c = 0; c < cols; c++)
                        sum += m[t * cols + c] * v[c * rank + j];
                    result[t * rank + j] = sum;
                }
        }

        // out [cols, rank] = Mᵀ · v [rows, rank]
        static void TransposeTimes(float* m, int rows, int cols, float* v, int rank, float* result)
        {
            new Span<float>(result, cols * rank).Clear();
            for (int t = 0; t < rows; t++)
                for (int c = 0; c < cols; c++)
                {
                    float x = m[t * cols + c];
                    for (int j = 0; j < rank; j++)
                        result[c * rank + j] += x * v[t * rank + j];
                }
        }

        // Columns of v [rows, rank] made orthonormal in order (modified Gram-Schmidt, sums in double).
        static void Orthonormalize(float* v, int rows, int rank)
        {
            for (int j = 0; j < rank; j++)
            {
                for (int k = 0; k < j; k++)
                {
                    double dot = 0;
                    for (int t = 0; t < rows; t++)
                        dot += (double)v[t * rank + k] * v[t * rank + j];
                    for (int t = 0; t < rows; t++)
                        v[t * rank + j] -= (float)dot * v[t * rank + k];
                }
                double norm = 0;
                for (int t = 0; t < rows; t++)
                    norm += (double)v[t * rank + j] * v[t * rank + j];
                float scale = norm > 1e-30 ? (float)(1 / Math.Sqrt(norm)) : 0f;
                for (int t = 0; t < rows; t++)
                    v[t * rank + j] *= scale;
            }
        }
    }

    /// <summary>
    /// Q of a thin QR: LAPACK's Householder QR on the CPU; on CUDA one Gram-Schmidt kernel launch for the whole
    /// batch (linalg.qr there makes solver calls per matrix, hundreds per layer for one decode block).
    /// Either is an orthonormal basis of the same column space; only column signs may differ.
    /// </summary>
    private static Tensor Orthonormal(Tensor y) =>
        y.shape[^1] <= 64 && Cuda.CudaKernels.Orthonormalize(y) is { } q ? q : linalg.qr(y).Q;

    /// <inheritdoc />
    public void Dispose()
    {
        B.Dispose();
        A.Dispose();
    }
}
