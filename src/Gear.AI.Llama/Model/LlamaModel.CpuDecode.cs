using System.Numerics;
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
        // Weight rows against input rows a few at a time, so that each load feeds several multiply-adds (a plain dot
        // product loads two numbers per multiply-add): four weight rows against one input row, or two against two. Every
        // (weight row, input row) pair is summed the same way in each kernel — two vector accumulators over alternate
        // chunks, then their sum, then the tail in order — so a row's result does not depend on how many rows share the step
        // (what BatchInvariant relies on).
        // Weight rows outside, input rows inside: each weight row comes from memory once for the whole step.
        int j = from;
        if (rows == 1)
        {
            for (; j + 4 <= to; j += 4)
                Dot4x1(w + (long)j * k, k, x, y + j);
        }
        else
        {
            for (; j + 2 <= to; j += 2)
            {
                int pair = 0;
                for (; pair + 2 <= rows; pair += 2)
                    Dot2x2(w + (long)j * k, k, x + (long)pair * k, y + (long)pair * ldy + j, ldy);
                if (pair < rows)
                {
                    y[(long)pair * ldy + j] = Dot1(w + (long)j * k, x + (long)pair * k, k);
                    y[(long)pair * ldy + j + 1] = Dot1(w + (long)(j + 1) * k, x + (long)pair * k, k);
                }
            }
        }
        for (; j < to; j++)
            for (int r = 0; r < rows; r++)
                y[(long)r * ldy + j] = Dot1(w + (long)j * k, x + (long)r * k, k);
        if (bias is not null)
            for (int r = 0; r < rows; r++)
                TensorPrimitives.Add(new ReadOnlySpan<float>(y + (long)r * ldy + from, to - from), new ReadOnlySpan<float>(bias + from, to - from),
                    new Span<float>(y + (long)r * ldy + from, to - from));
    }

    private static unsafe float Dot1(float* a, float* b, int k)
    {
        int n = Vector<float>.Count, c = 0;
        Vector<float> even = default, odd = default;
        for (; c + 2 * n <= k; c += 2 * n)
        {
            even = Vector.FusedMultiplyAdd(Vector.Load(a + c), Vector.Load(b + c), even);
            odd = Vector.FusedMultiplyAdd(Vector.Load(a + c + n), Vector.Load(b + c + n), odd);
        }
        if (c + n <= k)
        {
            even = Vector.FusedMultiplyAdd(Vector.Load(a + c), Vector.Load(b + c), even);
            c += n;
        }
        return Tail(Vector.Sum(even + odd), a, b, c, k);
    }

    private static unsafe void Dot4x1(float* w0, int k, float* x0, float* y0)
    {
        int n = Vector<float>.Count, c = 0;
        float* w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        for (; c + 2 * n <= k; c += 2 * n)
        {
            var xe = Vector.Load(x0 + c);
            var xo = Vector.Load(x0 + c + n);
            a0 = Vector.FusedMultiplyAdd(Vector.Load(w0 + c), xe, a0);
            b0 = Vector.FusedMultiplyAdd(Vector.Load(w0 + c + n), xo, b0);
            a1 = Vector.FusedMultiplyAdd(Vector.Load(w1 + c), xe, a1);
            b1 = Vector.FusedMultiplyAdd(Vector.Load(w1 + c + n), xo, b1);
            a2 = Vector.FusedMultiplyAdd(Vector.Load(w2 + c), xe, a2);
            b2 = Vector.FusedMultiplyAdd(Vector.Load(w2 + c + n), xo, b2);
            a3 = Vector.FusedMultiplyAdd(Vector.Load(w3 + c), xe, a3);
            b3 = Vector.FusedMultiplyAdd(Vector.Load(w3 + c + n), xo, b3);
        }
        if (c + n <= k)
        {
            var xe = Vector.Load(x0 + c);
            a0 = Vector.FusedMultiplyAdd(Vector.Load(w0 + c), xe, a0);
            a1 = Vector.FusedMultiplyAdd(Vector.Load(w1 + c), xe, a1);
            a2 = Vector.FusedMultiplyAdd(Vector.Load(w2 + c), xe, a2);
            a3 = Vector.FusedMultiplyAdd(Vector.Load(w3 + c), xe, a3);
            c += n;
        }
        y0[0] = Tail(Vector.Sum(a0 + b0), w0, x0, c, k);
        y0[1] = Tail(Vector.Sum(a1 + b1), w1, x0, c, k);
        y0[2] = Tail(Vector.Sum(a2 + b2), w2, x0, c, k);
        y0[3] = Tail(Vector.Sum(a3 + b3), w3, x0, c, k);
    }

    private static unsafe void Dot2x2(float* w0, int k, float* x0, float* y0, int ldy)
    {
        int n = Vector<float>.Count, c = 0;
        float* w1 = w0 + k, x1 = x0 + k, y1 = y0 + ldy;
        // a: weight row 0, b: weight row 1; 0/1: input row; e/o: even/odd chunks.
        Vector<float> a0e = default, a0o = default, a1e = default, a1o = default, b0e = default, b0o = default, b1e = default, b1o = default;
        for (; c + 2 * n <= k; c += 2 * n)
        {
            var x0e = Vector.Load(x0 + c);
            var x1e = Vector.Load(x1 + c);
            var we = Vector.Load(w0 + c);
            a0e = Vector.FusedMultiplyAdd(we, x0e, a0e);
            a1e = Vector.FusedMultiplyAdd(we, x1e, a1e);
            var ve = Vector.Load(w1 + c);
            b0e = Vector.FusedMultiplyAdd(ve, x0e, b0e);
            b1e = Vector.FusedMultiplyAdd(ve, x1e, b1e);
            var x0o = Vector.Load(x0 + c + n);
            var x1o = Vector.Load(x1 + c + n);
            var wo = Vector.Load(w0 + c + n);
            a0o = Vector.FusedMultiplyAdd(wo, x0o, a0o);
            a1o = Vector.FusedMultiplyAdd(wo, x1o, a1o);
            var vo = Vector.Load(w1 + c + n);
            b0o = Vector.FusedMultiplyAdd(vo, x0o, b0o);
            b1o = Vector.FusedMultiplyAdd(vo, x1o, b1o);
        }
        if (c + n <= k)
        {
            var x0e = Vector.Load(x0 + c);
            var x1e = Vector.Load(x1 + c);
            var we = Vector.Load(w0 + c);
            var ve = Vector.Load(w1 + c);
            a0e = Vector.FusedMultiplyAdd(we, x0e, a0e);
            a1e = Vector.FusedMultiplyAdd(we, x1e, a1e);
            b0e = Vector.FusedMultiplyAdd(ve, x0e, b0e);
            b1e = Vector.FusedMultiplyAdd(ve, x1e, b1e);
            c += n;
        }
        y0[0] = Tail(Vector.Sum(a0e + a0o), w0, x0, c, k);
        y0[1] = Tail(Vector.Sum(b0e + b0o), w1, x0, c, k);
        y1[0] = Tail(Vector.Sum(a1e + a1o), w0, x1, c, k);
        y1[1] = Tail(Vector.Sum(b1e + b1o), w1, x1, c, k);
    }

    /// <summary>The entries past the last whole vector, added in order.</summary>
    private static unsafe float Tail(float sum, float* a, float* b, int from, int k)
    {
        for (int c = from; c < k; c++)
            sum = MathF.FusedMultiplyAdd(a[c], b[c], sum);
        return sum;
    }
}
