using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// How attention reads a pool's pages, chosen once when the pool is built: the fused CPU kernel, the fused CUDA kernels,
/// or the tensor reference (which every fused path is tested against, and which prefill-sized attention uses).
/// </summary>
internal abstract class PagedAttention : IDisposable
{
    protected PagedAttention(PagePool pool) => Pool = pool;

    protected PagePool Pool { get; }

    /// <summary>What reads the pages, and why where it is the tensor reference.</summary>
    public abstract string Description { get; }

    /// <summary>
    /// Attention of every sequence of <paramref name="batch"/> in layer <paramref name="layer"/>: queries [N, Hq, D] packed
    /// by sequence; <paramref name="recent"/>[i] sequence i's buffered and new tokens (as stored), after its pages.
    /// Returns [N, Hq, D] in the queries' dtype.
    /// </summary>
    public abstract Tensor Attend(int layer, KvBatch batch, Tensor queries, IReadOnlyList<RecentTokens> recent);

    public virtual void Dispose() { }

    /// <summary>The back-end for <paramref name="pool"/>'s device, dtype and formats.</summary>
    public static PagedAttention Choose(PagePool pool)
    {
        if (pool.Shape.Device.type == DeviceType.CPU)
            return CpuPagedAttention.Supports(pool, out string? why) ? new CpuPagedAttention(pool) : new TensorPagedAttention(pool, why);
        return CudaPagedAttention.TryCreate(pool, out string? reason) is { } cuda ? cuda : new TensorPagedAttention(pool, reason);
    }
}
