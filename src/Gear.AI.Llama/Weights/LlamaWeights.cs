using Gear.AI.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Weights;

/// <summary>One transformer layer's weights, in the compute dtype on the model's device.</summary>
internal sealed class LayerWeights : IDisposable
{
    /// <summary>RMSNorm before attention, [H].</summary>
    public required Tensor AttentionNorm { get; init; }

    /// <summary>q, k and v projections stacked: [(Hq + 2·Hkv)·D, H].</summary>
    public required Tensor Qkv { get; init; }

    /// <summary>q, k, v biases stacked, or null.</summary>
    public Tensor? QkvBias { get; init; }

    /// <summary>Output projection, [H, Hq·D].</summary>
    public required Tensor Output { get; init; }

    /// <summary>Output projection bias, or null.</summary>
    public Tensor? OutputBias { get; init; }

    /// <summary>RMSNorm before the MLP, [H].</summary>
    public required Tensor MlpNorm { get; init; }

    /// <summary>gate and up projections stacked: [2·I, H].</summary>
    public required Tensor GateUp { get; init; }

    /// <summary>Down projection, [H, I].</summary>
    public required Tensor Down { get; init; }

    /// <summary>Every tensor the layer holds (biases where there are some).</summary>
    public IEnumerable<Tensor> Tensors =>
        new[] { AttentionNorm, Qkv, QkvBias, Output, OutputBias, MlpNorm, GateUp, Down }.OfType<Tensor>();

    /// <inheritdoc />
    public void Dispose()
    {
        Down.Dispose();
        GateUp.Dispose();
        MlpNorm.Dispose();
        OutputBias?.Dispose();
        Output.Dispose();
        QkvBias?.Dispose();
        Qkv.Dispose();
        AttentionNorm.Dispose();
    }
}

/// <summary>
/// The read-only weights of a Llama model, loaded from safetensors and checked against the config:
/// every expected tensor present with its shape, no unexpected tensor. Owns its tensors.
/// </summary>
public sealed class LlamaWeights : IDisposable
{
    private LlamaWeights(Tensor embedding, LayerWeights[] layers, Tensor finalNorm, Tensor lmHead, bool tied)
    {
        Embedding = embedding;
        Layers = layers;
        FinalNorm = finalNorm;
        LmHead = lmHead;
        _tied = tied;
    }

    private readonly bool _tied;

    /// <summary>Token embeddings, [V, H].</summary>
    public Tensor Embedding { get; }

    /// <summary>Per-layer weights.</summary>
    internal IReadOnlyList<LayerWeights> Layers { get; }

    /// <summary>Final RMSNorm, [H].</summary>
    public Tensor FinalNorm { get; }

    /// <summary>Output head, [V, H] (the embedding itself when tied).</summary>
    public Tensor LmHead { get; }

    /// <summary>Every tensor held, each once (a tied head is the embedding).</summary>
    public IEnumerable<Tensor> Tensors =>
        new[] { Embedding, FinalNorm }.Concat(_tied ? [] : [LmHead]).Concat(Layers.SelectMany(l => l.Tensors));

    /// <summary>Bytes held by the weights.</summary>
    public long Bytes => Tensors.Sum(Compression.Bytes.Of);

    /// <summary>Loads and validates the checkpoint in <paramref name="modelDirectory"/> for <paramref name="config"/>.</summary>
    /// <exception cref="ModelLoadException">A tensor is missing, unexpected, or has the wrong shape or dtype.</exception>
    public static LlamaWeights Load(string modelDirectory, LlamaConfig config, Device device, ScalarType dtype, IProgress<ModelLoadProgress>? progress = null)
    {
        var checkpoint = CheckpointReader.Open(modelDirectory);
        var expected = ExpectedShapes(config);
        foreach (var name in checkpoint.Names)
        {
            if (!expected.ContainsKey(name) && !IsIgnorable(name, config))
                throw new ModelLoadException(checkpoint[name].File.FilePath,
                    $"unexpected tensor '{name}' for a {config.NumLayers}-layer Llama config; is config.json from the same model?");
        }
        foreach (var (name, shape) in expected)
        {
            bool optional = name == "lm_head.weight" && config.TieWordEmbeddings;
            if (!checkpoint.Contains(name))
            {
                if (optional)
                    continue;
                throw new ModelLoadException(Path.Combine(modelDirectory, "model.safetensors"), $"tensor '{name}' is missing from the checkpoint.");
            }
            var (file, entry) = checkpoint[name];
            if (!entry.Shape.SequenceEqual(shape))
                throw new ModelLoadException(file.FilePath, $"tensor '{name}' has shape [{string.Join(", ", entry.Shape)}] but config.json implies [{string.Join(", ", shape)}].");
            if (entry.DType is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
                throw new ModelLoadException(file.FilePath, $"tensor '{name}' has dtype {SafetensorsFile.DTypeName(entry.DType)}; weights must be F32, F16 or BF16.");
        }

        var loader = new Loader(checkpoint, device, dtype, progress, expected.Keys.Count(checkpoint.Contains));
        var owned = new List<IDisposable>();
        try
        {
            Tensor Take(string name) { var t = loader.Load(name); owned.Add(t); return t; }
            Tensor? TakeOptional(string name) => checkpoint.Contains(name) ? Take(name) : null;
            Tensor Fuse(params string[] names)
            {
                var parts = names.Select(loader.Load).ToArray();
                var fused = cat(parts, 0).DetachFromDisposeScope();
                foreach (var p in parts) p.Dispose();
                owned.Add(fused);
                return fused;
            }

            var embedding = Take("model.embed_tokens.weight");
            var layers = new LayerWeights[config.NumLayers];
            for (int i = 0; i < config.NumLayers; i++)
            {
                string p = $"model.layers.{i}.";
                layers[i] = new LayerWeights
                {
                    AttentionNorm = Take(p + "input_layernorm.weight"),
                    Qkv = Fuse(p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"),
                    QkvBias = config.AttentionBias ? Fuse(p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias", p + "self_attn.v_proj.bias") : null,
                    Output = Take(p + "self_attn.o_proj.weight"),
                    OutputBias = config.AttentionBias ? TakeOptional(p + "self_attn.o_proj.bias") : null,
                    MlpNorm = Take(p + "post_attention_layernorm.weight"),
                    GateUp = Fuse(p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"),
                    Down = Take(p + "mlp.down_proj.weight"),
                };
            }
            var norm = Take("model.norm.weight");
            bool tied = config.TieWordEmbeddings;
            var head = tied ? embedding : Take("lm_head.weight");
            return new LlamaWeights(embedding, layers, norm, head, tied);
        }
        catch
        {
            foreach (var t in owned) t.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Weights of <paramref name="config"/>'s shape drawn at random (normal, std 0.02; norms 1), made
    /// directly on the device: for speed and memory runs of large shapes, never for quality.
    /// </summary>
    public static LlamaWeights Random(LlamaConfig config, Device device, ScalarType dtype, long seed = 0)
    {
        ArgumentNullException.ThrowIfNull(config);
        // The device's default generator, seeded: a CPU-side generator cannot feed CUDA randn.
        if (device.type == DeviceType.CUDA)
            cuda.manual_seed(seed);
        else
            manual_seed(seed);
        var owned = new List<Tensor>();
        Tensor Normal(params long[] shape)
        {
            var t = randn(shape, dtype: dtype, device: device).DetachFromDisposeScope();
            using Scalar std = 0.02;
            t.mul_(std);                                                       // in place: no second copy of the weights
            owned.Add(t);
            return t;
        }
        Tensor Ones(long n)
        {
            var t = ones(n, dtype: dtype, device: device).DetachFromDisposeScope();
            owned.Add(t);
            return t;
        }
        try
        {
            long h = config.HiddenSize, q = (long)config.NumHeads * config.HeadDim, kv = config.KeyValueDim, i = config.IntermediateSize;
            var embedding = Normal(config.VocabSize, h);
            var layers = new LayerWeights[config.NumLayers];
            for (int l = 0; l < layers.Length; l++)
            {
                layers[l] = new LayerWeights
                {
                    AttentionNorm = Ones(h),
                    Qkv = Normal(q + 2 * kv, h),
                    Output = Normal(h, q),
                    MlpNorm = Ones(h),
                    GateUp = Normal(2 * i, h),
                    Down = Normal(h, i),
                };
            }
            var norm = Ones(h);
            var head = config.TieWordEmbeddings ? embedding : Normal(config.VocabSize, h);
            return new LlamaWeights(embedding, layers, norm, head, config.TieWordEmbeddings);
        }
        catch
        {
            foreach (var t in owned) t.Dispose();
            throw;
        }
    }

    /// <summary>Names and shapes config.json implies.</summary>
    internal static Dictionary<string, long[]> ExpectedShapes(LlamaConfig c)
    {
        long h = c.HiddenSize, q = (long)c.NumHeads * c.HeadDim, kv = c.KeyValueDim, i = c.IntermediateSize;
        var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal)
        {
            ["model.embed_tokens.weight"] = [c.VocabSize, h],
            ["model.norm.weight"] = [h],
            ["lm_head.weight"] = [c.VocabSize, h],
        };
        for (int l = 0; l < c.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            shapes[p + "input_layernorm.weight"] = [h];
            shapes[p + "post_attention_layernorm.weight"] = [h];
            shapes[p + "self_attn.q_proj.weight"] = [q, h];
            shapes[p + "self_attn.k_proj.weight"] = [kv, h];
            shapes[p + "self_attn.v_proj.weight"] = [kv, h];
            shapes[p + "self_attn.o_proj.weight"] = [h, q];
            shapes[p + "mlp.gate_proj.weight"] = [i, h];
            shapes[p + "mlp.up_proj.weight"] = [i, h];
            shapes[p + "mlp.down_proj.weight"] = [h, i];
            if (c.AttentionBias)
            {
                shapes[p + "self_attn.q_proj.bias"] = [q];
                shapes[p + "self_attn.k_proj.bias"] = [kv];
                shapes[p + "self_attn.v_proj.bias"] = [kv];
            }
        }
        return shapes;
    }

    /// <summary>Buffers older checkpoints carry that the model recomputes.</summary>
    private static bool IsIgnorable(string name, LlamaConfig c) =>
        name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal) ||
        (c.AttentionBias && name.EndsWith("self_attn.o_proj.bias", StringComparison.Ordinal));

    /// <summary>Streams tensors to the device in the compute dtype, one at a time, reporting progress.</summary>
    private sealed class Loader(CheckpointReader checkpoint, Device device, ScalarType dtype, IProgress<ModelLoadProgress>? progress, int total)
    {
        private int _done;
        private long _bytes;
        private readonly long _totalBytes = checkpoint.TotalBytes;

        public Tensor Load(string name)
        {
            var (file, entry) = checkpoint[name];
            // Read once; convert (and free the read copy) only when dtype or device differ.
            var raw = file.Read(entry);
            Tensor result = raw;
            if (raw.dtype != dtype || device.type != DeviceType.CPU)
            {
                result = raw.to(dtype, device, copy: true).DetachFromDisposeScope();
                raw.Dispose();
            }
            _done++;
            _bytes += entry.Length;
            progress?.Report(new ModelLoadProgress(_done, total, _bytes, _totalBytes, name, Path.GetFileName(file.FilePath)));
            return result;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (!_tied)
            LmHead.Dispose();
        FinalNorm.Dispose();
        for (int i = Layers.Count - 1; i >= 0; i--)
            Layers[i].Dispose();
        Embedding.Dispose();
    }
}
