using System.Numerics.Tensors;
using Tensor = TorchSharp.torch.Tensor;
using Gear.AI.Compression.Caching;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Model;

/// <summary>
/// The CPU decode step in managed code: every sequence of the step appends one token, and the dense work — embedding,
/// RMSNorm, the projections, rotary embedding, SiLU·up, the residual adds, the head — runs as loops over the weights'
/// memory (System.Numerics.Tensors, the rows of each projection split over the cores) instead of some forty libtorch
/// calls a layer. Attention and the cache stay with <see cref="KvBatch.Attend"/> (the fused CPU kernel over the pages).
/// Each row is computed by the same loops whatever else is in the step, so a decode row's bits never depend on the batch.
/// </summary>
public sealed partial class LlamaModel
{
    /// <summary>
    /// Whether decode steps on the CPU run in managed code (default true); false runs them through libtorch like every other
    /// step (the reference the managed step is tested against).
    /// </summary>
    internal bool UseManagedCpuDecode { get; set; } = true;

    private bool? _managedDecodeFits;

    /// <summary>
    /// Whether a step of one new token per sequence runs in managed code here: a CPU model computing in float32 whose
    /// weights are contiguous.
    /// </summary>
    public bool DecodesInManagedCode
    {
        get
        {
            _managedDecodeFits ??= Device.type == DeviceType.CPU && ComputeType == ScalarType.Float32 && Weights.Tensors.All(w => w.is_contiguous());
            return UseManagedCpuDecode && _managedDecodeFits.Value;
        }
    }

    /// <summary>The managed decode step: logits [S, V] (float32), one row per sequence. Runs in the caller's dispose scope.</summary>
    private unsafe Tensor DecodeOnCpu(KvBatch step, long[] ids, long[] positions)
    {
        var c = Config;
        int s = step.Count, hidden = c.HiddenSize, d = c.HeadDim, hq = c.NumHeads, hkv = c.NumKeyValueHeads;
        int qDim = hq * d, kvDim = hkv * d, inter = c.IntermediateSize, vocab = c.VocabSize;
        float eps = (float)c.RmsNormEps;

        var x = empty(s, hidden);                                                            // [S, H] the residual stream
        var h = empty(s, hidden);                                                            // [S, H] normed input, then a block's output
        var q = empty(s, hq, d);                                                             // [S, Hq, D]
        var k = empty(s, hkv, d);                                                            // [S, Hkv, D]
        var v = empty(s, hkv, d);                                                            // [S, Hkv, D]
        var gateUp = empty(s, 2 * inter);                                                    // [S, 2·I]
        var act = empty(s, inter);                                                           // [S, I]
        var logits = empty(s, vocab);                                                        // [S, V]
        float* px = Ptr(x), ph = Ptr(h), pq = Ptr(q), pk = Ptr(k), pv = Ptr(v), pg = Ptr(gateUp), pa = Ptr(act);

        float* embedding = Ptr(Weights.Embedding);
        for (int i = 0; i < s; i++)
        {
            if ((ulong)ids[i] >= (ulong)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), ids[i], $"Token id {ids[i]} is outside the vocabulary (0 … {vocab - 1}).");
            new ReadOnlySpan<float>(embedding + ids[i] * hidden, hidden).CopyTo(new Span<float>(px + (long)i * hidden, hidden));
        }
        var (cos, sin) = RotaryAngles(positions, d);

        for (int layer = 0; layer < c.NumLayers; layer++)
        {
            var w = Weights.Layers[layer];
            RmsNormRows(px, Ptr(w.AttentionNorm), ph, s, hidden, eps);
            float* qkvBias = w.QkvBias is null ? null : Ptr(w.QkvBias);
            float* qkv = Ptr(w.Qkv);
            Project(qkv, qkvBias, qDim, hidden, ph, s, pq, qDim);
            Project(qkv + (long)qDim * hidden, qkvBias is null ? null : qkvBias + qDim, kvDim, hidden, ph, s, pk, kvDim);
            Project(qkv + (long)(qDim + kvDim) * hidden, qkvBias is null ? null : qkvBias + qDim + kvDim, kvDim, hidden, ph, s, pv, kvDim);
            for (int i = 0; i < s; i++)
            {
                Rotate(pq + (long)i * qDim, hq, d, cos, sin, i);
                Rotate(pk + (long)i * kvDim, hkv, d, cos, sin, i);
            }

            using (var o = step.Attend(layer, q, k, v))                                     // [S, Hq, D]
            {
                var dense = o.is_contiguous() ? o : o.contiguous();
                Project(Ptr(w.Output), w.OutputBias is null ? null : Ptr(w.OutputBias), hidden, qDim, Ptr(dense), s, ph, hidden);
                if (!ReferenceEquals(dense, o))
                    dense.Dispose();
            }
            TensorPrimitives.Add(new ReadOnlySpan<float>(px, s * hidden), new ReadOnlySpan<float>(ph, s * hidden), new Span<float>(px, s * hidden));

            RmsNormRows(px, Ptr(w.MlpNorm), ph, s, hidden, eps);
            Project(Ptr(w.GateUp), null, 2 * inter, hidden, ph, s, pg, 2 * inter);
            for (int i = 0; i < s; i++)
            {
                var gate = new ReadOnlySpan<float>(pg + (long)i * 2 * inter, inter);
                var up = new ReadOnlySpan<float>(pg + (long)i * 2 * inter + inter, inter);
                var a = new Span<float>(pa + (long)i * inter, inter);
                TensorPrimitives.Sigmoid(gate, a);                                           // silu(g) = g·σ(g)
                TensorPrimitives.Multiply(a, gate, a);
                TensorPrimitives.Multiply(a, up, a);
            }
            Project(Ptr(w.Down), null, hidden, inter, pa, s, ph, hidden);
            TensorPrimitives.Add(new ReadOnlySpan<float>(px, s * hidden), new ReadOnlySpan<float>(ph, s * hidden), new Span<float>(px, s * hidden));
        }
        step.Complete();
        RmsNormRows(px, Ptr(Weights.FinalNorm), ph, s, hidden, eps);
        Project(Ptr(Weights.LmHead), null, vocab, hidden, ph, s, Ptr(logits), vocab);
        return logits;

        static float* Ptr(Tensor t) => TensorMemory.Pointer<float>(t);
    }

    /// <summary>cos and sin [S, D] of each sequence's position (the rotate-half layout: the D/2 angles twice), float32 as the tensor path computes them.</summary>
    private (float[] Cos, float[] Sin) RotaryAngles(long[] positions, int d)
    {
        var invFreq = _rope.HostInverseFrequencies;
        var cos = new float[positions.Length * d];
        var sin = new float[positions.Length * d];
        for (int i = 0; i < positions.Length; i++)
        {
            float p = positions[i];
            for (int j = 0; j < d / 2; j++)
            {
                float angle = p * invFreq[j];
                cos[i * d + j] = cos[i * d + j + d / 2] = MathF.Cos(angle);
                sin[i * d + j] = sin[i * d + j + d / 2] = MathF.Sin(angle);
            }
        }
        return (cos, sin);
    }

    /// <summary>Rotate-half rotary embedding in place of <paramref name="heads"/> heads of one row: x·cos + rotate_half(x)·sin.</summary>
    private static unsafe void Rotate(float* row, int heads, int d, float[] cos, float[] sin, int sequence)
    {
        int half = d / 2;
        for (int head = 0; head < heads; head++)
        {
            float* x = row + head * d;
            for (int j = 0; j < half; j++)
            {
                float x1 = x[j], x2 = x[j + half];
                x[j] = x1 * cos[sequence * d + j] + -x2 * sin[sequence * d + j];
                x[j + half] = x2 * cos[sequence * d + j + half] + x1 * sin[sequence * d + j + half];
            }
        }
    }

    /// <summary>RMSNorm of <paramref name="rows"/> rows: y = w · (x / √(mean(x²) + ε)).</summary>
    private static unsafe void RmsNormRows(float* x, float* weight, float* y, int rows, int width, float eps)
    {
        var w = new ReadOnlySpan<float>(weight, width);
        for (int i = 0; i < rows; i++)
        {
            var xi = new ReadOnlySpan<float>(x + (long)i * width, width);
            var yi = new Span<float>(y + (long)i * width, width);
            float scale = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(xi) / width + eps);
            TensorPrimitives.Multiply(xi, scale, yi);
            TensorPrimitives.Multiply(yi, w, yi);
        }
    }

    /// <summary>
    /// y[r, j] = w[j]·x[r] (+ bias[j]) for the <paramref name="rows"/> input rows and the <paramref name="n"/> weight rows
    /// [n, k]: each weight row is read once for all input rows; the weight rows are split over the cores.
    /// </summary>
    private static unsafe void Project(float* w, float* bias, int n, int k, float* x, int rows, float* y, int ldy)
    {
        int parts = Math.Min(Environment.ProcessorCount, Math.Max(1, (int)((long)n * k * rows / 32_768)));
        if (parts == 1)
        {
            ProjectRange(w, bias, 0, n, k, x, rows, y, ldy);
            return;
        }
        nint wp = (nint)w, bp = (nint)bias, xp = (nint)x, yp = (nint)y;
        Parallel.For(0, parts, p => ProjectRange((float*)wp, (float*)bp, (int)((long)n * p / parts), (int)((long)n * (p + 1) / parts), k, (float*)xp, rows, (float*)yp, ldy));
    }

    private static unsafe void ProjectRange(float* w, float* bias, int from, int to, int k, float* x, int rows, float* y, int ldy)
    {
        for (int j = from; j < to; j++)
        {
            var wj = new ReadOnlySpan<float>(w + (long)j * k, k);
            float b = bias is null ? 0f : bias[j];
            for (int r = 0; r < rows; r++)
                y[(long)r * ldy + j] = TensorPrimitives.Dot(wj, new ReadOnlySpan<float>(x + (long)r * k, k)) + b;
        }
    }
}
