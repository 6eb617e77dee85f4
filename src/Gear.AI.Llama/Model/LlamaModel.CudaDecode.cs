using Gear.AI.Compression.Caching;
using Gear.AI.Compression.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Model;

/// <summary>
/// The launch-light CUDA decode step: every sequence of the step appends one token, and each layer runs as a fixed list
/// of launches on buffers made once per step — RMSNorm, the projections through cuBLAS, the residual adds, rotary
/// embedding computed in a kernel from the positions, SiLU·up, and attention through the fused kernels over the pages
/// (<see cref="KvBatch.AttendOnDevice"/>). About 17 launches a layer instead of some 40 TorchSharp calls, each of which
/// costs more host time than its kernel takes on the device at batch 1. Every result is rounded where the TorchSharp
/// step rounds it (the residual adds after the projections, the logits in the compute dtype), so the two agree to the
/// matrix products' summation order.
/// </summary>
public sealed partial class LlamaModel
{
    /// <summary>
    /// Whether decode steps on CUDA run launch-light (default true); false runs them through TorchSharp like every other
    /// step (the reference the launch-light step is checked against on the GPU machine).
    /// </summary>
    internal bool UseLaunchLightDecode { get; set; } = true;

    private Cublas? _cublas;
    private string? _launchLightUnavailable;
    private bool _launchLightChecked;

    /// <summary>Why this model's CUDA decode steps run through TorchSharp, or null when they run launch-light (or the model is not on CUDA).</summary>
    internal string? LaunchLightUnavailableReason => _launchLightUnavailable;

    /// <summary>
    /// Whether <paramref name="step"/> runs launch-light: a CUDA model in float32, float16 or bfloat16 without projection
    /// biases, whose kernels and cuBLAS load, and a step that <see cref="KvBatch.AttendsOnDevice"/>.
    /// </summary>
    private bool DecodesLaunchLight(KvBatch step)
    {
        if (!UseLaunchLightDecode || !UseCudaKernels || Device.type != DeviceType.CUDA)
            return false;
        if (!_launchLightChecked)
        {
            _launchLightChecked = true;
            _launchLightUnavailable = LaunchLightMisfit();
            if (_launchLightUnavailable is null)
            {
                _cublas = Cublas.TryCreate();
                _launchLightUnavailable = _cublas is null ? Cublas.UnavailableReason : null;
            }
        }
        return _cublas is not null && step.AttendsOnDevice(Config.NumHeads);
    }

    private string? LaunchLightMisfit()
    {
        if (Cublas.DataType(ComputeType) < 0 || CudaKernels.TypeCode(ComputeType) < 0)
            return $"compute dtype {ComputeType}";
        if (Weights.Layers.Any(l => l.QkvBias is not null || l.OutputBias is not null))
            return "projection biases";
        if (Weights.Tensors.Any(w => !w.is_contiguous() || w.dtype != ComputeType))
            return "weights that are not contiguous in the compute dtype";
        if (Config.HeadDim % 2 != 0 || Config.HeadDim > 2048)
            return $"head_dim {Config.HeadDim}";
        return CudaKernels.For(Device) is null ? CudaKernels.UnavailableReason ?? "the CUDA kernels are off" : null;
    }

    /// <summary>The launch-light decode step: logits [S, V] (float32), one row per sequence. Runs in the caller's dispose scope.</summary>
    private Tensor DecodeOnCuda(KvBatch step, Tensor tokens, long[] positions)
    {
        var c = Config;
        var kernels = CudaKernels.For(Device)!;
        var cublas = _cublas!;
        int s = step.Count, hidden = c.HiddenSize, d = c.HeadDim, hq = c.NumHeads, hkv = c.NumKeyValueHeads, inter = c.IntermediateSize;
        int qkvDim = (hq + 2 * hkv) * d, type = CudaKernels.TypeCode(ComputeType), blas = Cublas.DataType(ComputeType);
        float eps = (float)c.RmsNormEps;

        var ids = tokens.device_type == DeviceType.CPU
            ? TensorMemory.ToDevice(tokens.to(ScalarType.Int64).contiguous(), Device)
            : tokens.to(ScalarType.Int64).contiguous();                                      // [S]
        var at = OnDevice(positions);                                                        // [S]
        var x = empty(s, hidden, dtype: ComputeType, device: Device);                        // [S, H] the residual stream
        var h = empty(s, hidden, dtype: ComputeType, device: Device);                        // [S, H] normed input
        var qkv = empty(s, qkvDim, dtype: ComputeType, device: Device);                      // [S, (Hq + 2·Hkv)·D]
        var q = empty(s, hq, d, dtype: ComputeType, device: Device);                         // [S, Hq, D]
        var k = empty(s, hkv, d, dtype: ComputeType, device: Device);                        // [S, Hkv, D]
        var v = empty(s, hkv, d, dtype: ComputeType, device: Device);                        // [S, Hkv, D]
        var o = empty(s, hq, d, dtype: ComputeType, device: Device);                         // [S, Hq, D] attention output
        var gateUp = empty(s, 2 * inter, dtype: ComputeType, device: Device);                // [S, 2·I]
        var act = empty(s, inter, dtype: ComputeType, device: Device);                       // [S, I]
        var logits = empty(s, c.VocabSize, dtype: ComputeType, device: Device);              // [S, V]
        IntPtr px = Ptr(x), ph = Ptr(h), pqkv = Ptr(qkv), pg = Ptr(gateUp), pa = Ptr(act), po = Ptr(o);
        long residual = (long)s * hidden;
        var rows = new DeviceRows(Ptr(q), Ptr(k), Ptr(v), po, ComputeType, hq);

        kernels.RunEmbed(Ptr(ids), Ptr(Weights.Embedding), px, type, s, hidden);
        for (int i = 0; i < c.NumLayers; i++)
        {
            var w = Weights.Layers[i];
            kernels.RunRmsNorm(px, Ptr(w.AttentionNorm), ph, type, s, hidden, eps);
            cublas.Linear(ph, Ptr(w.Qkv), blas, pqkv, blas, s, qkvDim, hidden);
            kernels.RunRopeDecode(pqkv, Ptr(at), Ptr(_rope.InverseFrequencies), rows.Queries, rows.Keys, rows.Values, type, s, hq, hkv, d);
            step.AttendOnDevice(i, rows);
            cublas.Linear(po, Ptr(w.Output), blas, ph, blas, s, hidden, hq * d);
            kernels.RunAdd(px, ph, type, residual);                                           // x += o_proj(o)
            kernels.RunRmsNorm(px, Ptr(w.MlpNorm), ph, type, s, hidden, eps);
            cublas.Linear(ph, Ptr(w.GateUp), blas, pg, blas, s, 2 * inter, hidden);
            kernels.RunSiluMul(pg, pa, type, s, inter);
            cublas.Linear(pa, Ptr(w.Down), blas, ph, blas, s, hidden, inter);
            kernels.RunAdd(px, ph, type, residual);                                           // x += down(silu(gate)·up)
        }
        step.Complete();
        kernels.RunRmsNorm(px, Ptr(Weights.FinalNorm), ph, type, s, hidden, eps);
        cublas.Linear(ph, Ptr(Weights.LmHead), blas, Ptr(logits), blas, s, c.VocabSize, hidden);
        return logits.to(ScalarType.Float32);

        static IntPtr Ptr(Tensor t) => TensorMemory.DeviceAddress(t, contiguous: true);
    }
}
