using Gear.AI.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Model;

/// <summary>
/// Rotary position embedding in the rotate-half convention of Hugging Face Llama, with optional
/// llama3 frequency scaling. Computed in float32 exactly as transformers does, for parity.
/// </summary>
internal sealed class RotaryEmbedding : IDisposable
{
    private readonly Tensor _invFreq; // [D/2] float32

    public RotaryEmbedding(LlamaConfig config, Device device)
    {
        using var scope = NewDisposeScope();
        int d = config.HeadDim;
        using Scalar headDim = d;
        var exponents = Scalars.Arange(0, d, 2, ScalarType.Int64, CPU).to(ScalarType.Float32).div(headDim); // [D/2]
        var invFreq = pow(config.RopeTheta, exponents).reciprocal();                          // [D/2]
        if (config.RopeScaling is { } s)
            invFreq = ScaleLlama3(invFreq, s);
        _invFreq = invFreq.to(device).DetachFromDisposeScope();
    }

    /// <summary>Llama 3.1 scaling: long wavelengths slowed by the factor, short ones kept, a smooth blend between.</summary>
    private static Tensor ScaleLlama3(Tensor invFreq, RopeScaling s)
    {
        double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
        double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
        using Scalar low = lowWavelen, high = highWavelen, factor = s.Factor, twoPi = 2 * Math.PI, original = (double)s.OriginalMaxPositionEmbeddings,
            lowFactor = s.LowFreqFactor, span = s.HighFreqFactor - s.LowFreqFactor;
        var wavelen = full_like(invFreq, twoPi) / invFreq;
        var scaled = where(wavelen > low, invFreq.div(factor), invFreq);
        var smooth = (full_like(wavelen, original) / wavelen).sub_(lowFactor).div_(span);
        var smoothed = ((full_like(smooth, Scalars.One) - smooth) * scaled).div_(factor).add_(smooth * scaled, Scalars.One);
        var medium = (wavelen >= high).logical_and(wavelen <= low);
        return where(medium, smoothed, scaled);
    }

    /// <summary>The inverse frequencies [D/2], float32 on the model's device (the CUDA decode step computes its angles from them).</summary>
    public Tensor InverseFrequencies => _invFreq;

    private float[]? _hostInvFreq;

    /// <summary>The inverse frequencies [D/2] on the host (the CPU decode step computes its angles from them).</summary>
    public float[] HostInverseFrequencies => _hostInvFreq ??= HostCopy(_invFreq);

    private static float[] HostCopy(Tensor t)
    {
        if (t.device_type == DeviceType.CPU)
            return t.data<float>().ToArray();
        using var host = t.to(CPU);
        return host.data<float>().ToArray();
    }

    /// <summary>cos and sin tables [T, D] for the given positions, in <paramref name="dtype"/>.</summary>
    public (Tensor Cos, Tensor Sin) Tables(Tensor positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var freqs = positions.to(ScalarType.Float32).unsqueeze(1) * _invFreq.unsqueeze(0);   // [T, D/2]
        var emb = cat([freqs, freqs], -1);                                                  // [T, D]
        return (emb.cos().to(dtype).MoveToOuterDisposeScope(), emb.sin().to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>x·cos + rotate_half(x)·sin for x [B, H, T, D].</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.size(-1) / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat([x2.neg(), x1], -1);                                              // [B, H, T, D]
        return (x * cos).add_(rotated * sin, Scalars.One).MoveToOuterDisposeScope();
    }

    public void Dispose() => _invFreq.Dispose();
}
