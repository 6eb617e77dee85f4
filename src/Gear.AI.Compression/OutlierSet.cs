using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression;

/// <summary>
/// The sparse part S of GEAR: per quantization vector, the k largest and k smallest entries (by
/// signed value) kept exactly as float16 values plus their index within the vector. Owns its tensors.
/// </summary>
/// <remarks>
/// Outliers are chosen along the same vectors the quantization groups run along, so every group (and every cache page,
/// which holds whole groups) carries its own. Per-channel (keys): a vector is one channel's g tokens of a group;
/// <see cref="Values"/> and <see cref="Indices"/> are [..., n/g, D, 2k] holding token indices within the group in
/// ascending order. Per-token (values): a vector is one token's g features of a group; they are [..., n, D/g, 2k] holding
/// feature indices within the group. Indices use the smallest type that fits the vector: uint8 up to 256 entries,
/// int16 up to 32,768, else int32.
/// </remarks>
internal sealed class OutlierSet : IDisposable
{
    internal OutlierSet(Tensor values, Tensor indices, QuantAxis axis, int vectorLength, int perSide)
    {
        Values = values;
        Indices = indices;
        Axis = axis;
        VectorLength = vectorLength;
        PerSide = perSide;
    }

    /// <summary>Outlier values, float16.</summary>
    public Tensor Values { get; }

    /// <summary>Index of each outlier within its vector (uint8, int16 or int32).</summary>
    public Tensor Indices { get; }

    /// <summary>Direction of the vectors.</summary>
    public QuantAxis Axis { get; }

    /// <summary>Entries per vector.</summary>
    public int VectorLength { get; }

    /// <summary>k: outliers taken from each side (largest and smallest) of every vector.</summary>
    public int PerSide { get; }

    /// <summary>Exact bytes held (values and indices).</summary>
    public long ResidentBytes => Bytes.Of(Values) + Bytes.Of(Indices);

    /// <summary>k for a vector of <paramref name="vectorLength"/> entries: max(1, round(s·n/2)), at most n/2; 0 when s is 0.</summary>
    public static int CountPerSide(double ratio, int vectorLength)
    {
        if (ratio <= 0 || vectorLength < 2)
            return 0;
        int k = Math.Max(1, (int)Math.Round(ratio * vectorLength / 2, MidpointRounding.ToEven));
        return Math.Min(k, vectorLength / 2);
    }

    /// <summary>The smallest index dtype that addresses <paramref name="vectorLength"/> entries.</summary>
    public static ScalarType IndexType(int vectorLength) =>
        vectorLength <= 256 ? ScalarType.Byte : vectorLength <= short.MaxValue + 1 ? ScalarType.Int16 : ScalarType.Int32;

    /// <summary>
    /// Splits <paramref name="x"/> [..., n, D] (float32) into outliers and a filled copy in which each
    /// outlier is replaced by the mean of its vector's other entries (so it no longer stretches the
    /// quantization range). <paramref name="x"/> is not modified.
    /// </summary>
    /// <param name="x">Input [..., n, D], float32.</param>
    /// <param name="ratio">Outlier share s; k = max(1, round(s·n/2)) per side.</param>
    /// <param name="axis">Per-channel: vectors are a channel's <paramref name="groupSize"/> tokens of a group. Per-token: vectors are <paramref name="groupSize"/> features of a token.</param>
    /// <param name="groupSize">Vector length; must divide n (per-channel) or D (per-token).</param>
    /// <returns>The outliers, or null when k is 0, and the filled tensor [..., n, D] float32.</returns>
    public static (OutlierSet? Outliers, Tensor Filled) Extract(Tensor x, double ratio, QuantAxis axis, int groupSize)
    {
        ArgumentNullException.ThrowIfNull(x);
        long n = x.shape[^2], d = x.shape[^1];
        using var scope = NewDisposeScope();
        // Vectors along the last dimension of `work`.
        Tensor work;                                                           // [..., V, len]
        int len = groupSize;
        if (axis == QuantAxis.PerChannel)
        {
            if (n % groupSize != 0)
                throw new ArgumentException($"Per-channel outlier vectors need the group size ({groupSize}) to divide the token count ({n}); compress whole groups.", nameof(groupSize));
            work = x.reshape([.. x.shape[..^2], n / groupSize, groupSize, d]).transpose(-1, -2); // [..., G, D, g]
        }
        else
        {
            if (d % groupSize != 0)
                throw new ArgumentException($"Per-token outlier vectors need the group size ({groupSize}) to divide the feature count ({d}).", nameof(groupSize));
            work = x.reshape([.. x.shape[..^1], d / groupSize, groupSize]);     // [..., n, G, g]
        }
        int k = CountPerSide(ratio, len);
        if (k == 0)
            return (null, x.to(ScalarType.Float32).clone().MoveToOuterDisposeScope());

        Tensor idx;                                                            // [..., V, 2k]
        if (k == 1)
        {
            // One per side (64-token decode blocks, 64-feature groups at 2%): argmax and argmin, cheaper than topk.
            var top = work.argmax(-1, keepdim: true);
            var bottom = work.argmin(-1, keepdim: true);
            idx = axis == QuantAxis.PerChannel ? cat([minimum(top, bottom), maximum(top, bottom)], -1) : cat([top, bottom], -1);
        }
        else
        {
            var (_, top) = work.topk(k, -1, largest: true, sorted: false);    // [..., V, k]
            var (_, bottom) = work.topk(k, -1, largest: false, sorted: false);
            idx = cat([top, bottom], -1);
            if (axis == QuantAxis.PerChannel)
                idx = idx.sort(-1).Values;                                     // ascending tokens: the CUDA kernel searches them
        }
        var values = work.gather(-1, idx);                                     // [..., V, 2k]
        // Mean of the remaining entries of each vector, written over the outliers in a float32 copy of x (its own layout).
        using Scalar inliers = len - 2 * k;
        var inlierMean = (work.sum(-1, keepdim: true) - values.sum(-1, keepdim: true)).div_(inliers).to(ScalarType.Float32).expand(values.shape);
        var filled = (x.dtype == ScalarType.Float32 ? x.clone() : x.to(ScalarType.Float32)).contiguous(); // [..., n, D]
        if (axis == QuantAxis.PerChannel)
            filled.view([.. x.shape[..^2], n / groupSize, groupSize, d]).scatter_(-2, idx.transpose(-1, -2), inlierMean.transpose(-1, -2));
        else
            filled.view([.. x.shape[..^1], d / groupSize, groupSize]).scatter_(-1, idx, inlierMean);
        var set = new OutlierSet(
            values.to(ScalarType.Float16).DetachFromDisposeScope(),
            idx.to(IndexType(len)).DetachFromDisposeScope(),
            axis, len, k);
        return (set, filled.MoveToOuterDisposeScope());
    }

    /// <summary>Writes the outliers back into <paramref name="dense"/> [..., n, D] in place (exact float16 values).</summary>
    public void ScatterInto(Tensor dense)
    {
        ArgumentNullException.ThrowIfNull(dense);
        using var scope = NewDisposeScope();
        var idx = Indices.to(ScalarType.Int64);
        var val = Values.to(dense.dtype);
        if (Axis == QuantAxis.PerChannel)
        {
            // dense[..., group, idx[group, c, j], c] = val[group, c, j]
            var view = dense.view([.. dense.shape[..^2], dense.shape[^2] / VectorLength, VectorLength, dense.shape[^1]]); // [..., G, g, D]
            view.scatter_(-2, idx.transpose(-1, -2), val.transpose(-1, -2));
        }
        else
        {
            var view = dense.view([.. dense.shape[..^1], dense.shape[^1] / VectorLength, VectorLength]); // [..., n, G, g]
            view.scatter_(-1, idx, val);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Indices.Dispose();
        Values.Dispose();
    }
}
