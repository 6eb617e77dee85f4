using System.Text.Json;
using System.Text.Json.Nodes;

namespace Gear.AI.Llama;

/// <summary>
/// A Llama-family architecture as read from Hugging Face <c>config.json</c> (Llama 2/3/3.1/3.2,
/// TinyLlama, SmolLM). Immutable; shapes derived once.
/// </summary>
public sealed record LlamaConfig
{
    /// <summary>Width of the residual stream.</summary>
    public required int HiddenSize { get; init; }

    /// <summary>Width of the SwiGLU MLP.</summary>
    public required int IntermediateSize { get; init; }

    /// <summary>Transformer layers.</summary>
    public required int NumLayers { get; init; }

    /// <summary>Query heads.</summary>
    public required int NumHeads { get; init; }

    /// <summary>Key/value heads (fewer than <see cref="NumHeads"/> for grouped-query attention).</summary>
    public required int NumKeyValueHeads { get; init; }

    /// <summary>Per-head width; hidden_size / num_attention_heads unless config.json gives head_dim.</summary>
    public required int HeadDim { get; init; }

    /// <summary>Vocabulary size.</summary>
    public required int VocabSize { get; init; }

    /// <summary>Context length: prompt plus generated tokens never exceed it.</summary>
    public required int MaxPositionEmbeddings { get; init; }

    /// <summary>RMSNorm epsilon.</summary>
    public double RmsNormEps { get; init; } = 1e-5;

    /// <summary>Base of the rotary frequencies.</summary>
    public double RopeTheta { get; init; } = 10000.0;

    /// <summary>Rotary scaling (type llama3), or null.</summary>
    public RopeScaling? RopeScaling { get; init; }

    /// <summary>Whether lm_head shares the token embedding matrix.</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary>Checkpoint dtype name (torch_dtype / dtype), e.g. "bfloat16".</summary>
    public string? TorchDtype { get; init; }

    /// <summary>Beginning-of-sequence token id.</summary>
    public int? BosTokenId { get; init; }

    /// <summary>End-of-sequence token ids (Llama 3 lists several).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    /// <summary>Whether q/k/v/o projections have biases (attention_bias).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Query heads per key/value head.</summary>
    public int KeyValueGroups => NumHeads / NumKeyValueHeads;

    /// <summary>Width of all key (or value) heads together.</summary>
    public int KeyValueDim => NumKeyValueHeads * HeadDim;

    /// <summary>Loads <c>config.json</c> from a model directory.</summary>
    /// <exception cref="ModelLoadException">The file is missing, not JSON, or a field is missing or invalid.</exception>
    public static LlamaConfig Load(string modelDirectory)
    {
        string path = Path.Combine(modelDirectory, "config.json");
        if (!File.Exists(path))
            throw new ModelLoadException(path, "config.json not found; point --model at a Hugging Face model directory.");
        string json;
        try
        {
            json = File.ReadAllText(path);
        }
        catch (IOException e)
        {
            throw new ModelLoadException(path, $"cannot be read: {e.Message}", e);
        }
        return Parse(json, path);
    }

    /// <summary>Parses config.json text; <paramref name="path"/> names it in errors.</summary>
    public static LlamaConfig Parse(string json, string path = "config.json")
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = 32 }) as JsonObject
                   ?? throw new ModelLoadException(path, "is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new ModelLoadException(path, $"is not valid JSON: {e.Message}", e);
        }

        var reader = new ConfigReader(root, path);
        string? modelType = reader.OptionalString("model_type");
        if (modelType is not null && modelType is not ("llama" or "mistral"))
            throw new ModelLoadException(path, $"model_type '{modelType}' is not a Llama-family architecture (expected 'llama').");

        int hidden = reader.Positive("hidden_size");
        int heads = reader.Positive("num_attention_heads");
        int kvHeads = reader.OptionalPositive("num_key_value_heads") ?? heads;
        if (heads % kvHeads != 0)
            throw new ModelLoadException(path, $"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kvHeads}).");
        int? headDim = reader.OptionalPositive("head_dim");
        if (headDim is null && hidden % heads != 0)
            throw new ModelLoadException(path, $"hidden_size ({hidden}) is not divisible by num_attention_heads ({heads}) and head_dim is not given.");

        // Newer transformers write rope_parameters {rope_type, rope_theta, ...}; older ones rope_theta + rope_scaling.
        var ropeParameters = root["rope_parameters"] as JsonObject;
        double theta = reader.OptionalDouble("rope_theta")
                       ?? (ropeParameters is null ? null : new ConfigReader(ropeParameters, path + " rope_parameters").OptionalDouble("rope_theta"))
                       ?? 10000.0;
        if (!(theta > 0))
            throw new ModelLoadException(path, $"rope_theta must be positive, got {theta}.");
        var scaling = RopeScaling.Parse(root["rope_scaling"] as JsonObject ?? ropeParameters, path);

        var config = new LlamaConfig
        {
            HiddenSize = hidden,
            IntermediateSize = reader.Positive("intermediate_size"),
            NumLayers = reader.Positive("num_hidden_layers"),
            NumHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim ?? hidden / heads,
            VocabSize = reader.Positive("vocab_size"),
            MaxPositionEmbeddings = reader.Positive("max_position_embeddings"),
            RmsNormEps = reader.OptionalDouble("rms_norm_eps") ?? 1e-5,
            RopeTheta = theta,
            RopeScaling = scaling,
            TieWordEmbeddings = reader.OptionalBool("tie_word_embeddings") ?? false,
            TorchDtype = reader.OptionalString("torch_dtype") ?? reader.OptionalString("dtype"),
            BosTokenId = reader.OptionalInt("bos_token_id"),
            EosTokenIds = reader.IntOrIntList("eos_token_id"),
            AttentionBias = reader.OptionalBool("attention_bias") ?? false,
        };
        if (config.HeadDim % 2 != 0)
            throw new ModelLoadException(path, $"head_dim must be even for rotary embeddings, got {config.HeadDim}.");
        return config;
    }

    /// <summary>Typed access to config fields with errors that name the field.</summary>
    private readonly struct ConfigReader(JsonObject root, string path)
    {
        public int Positive(string name) =>
            OptionalPositive(name) ?? throw new ModelLoadException(path, $"required field '{name}' is missing.");

        public int? OptionalPositive(string name)
        {
            int? value = OptionalInt(name);
            if (value is <= 0)
                throw new ModelLoadException(path, $"field '{name}' must be a positive integer, got {value}.");
            return value;
        }

        public int? OptionalInt(string name)
        {
            var node = root[name];
            if (node is null)
                return null;
            if (node is JsonValue v && v.TryGetValue(out long l) && l is >= int.MinValue and <= int.MaxValue)
                return (int)l;
            if (node is JsonValue d && d.TryGetValue(out double x) && x == Math.Floor(x) && Math.Abs(x) <= int.MaxValue)
                return (int)x;
            throw new ModelLoadException(path, $"field '{name}' must be an integer, got {node.ToJsonString()}.");
        }

        public double? OptionalDouble(string name) =>
            TryOptional(name, "a number", out double d, double.IsFinite) ? d : null;

        public bool? OptionalBool(string name) =>
            TryOptional(name, "true or false", out bool b) ? b : null;

        public string? OptionalString(string name) =>
            TryOptional(name, "a string", out string? text) ? text : null;

        /// <summary>False when the field is absent; a field of the wrong type is a <see cref="ModelLoadException"/>.</summary>
        private bool TryOptional<T>(string name, string expected, out T value, Func<T, bool>? valid = null)
        {
            value = default!;
            var node = root[name];
            if (node is null)
                return false;
            if (node is JsonValue v && v.TryGetValue(out T? read) && read is not null && (valid is null || valid(read)))
            {
                value = read;
                return true;
            }
            throw new ModelLoadException(path, $"field '{name}' must be {expected}, got {node.ToJsonString()}.");
        }

        public IReadOnlyList<int> IntOrIntList(string name)
        {
            var node = root[name];
            if (node is null)
                return [];
            if (node is JsonArray array)
            {
                var ids = new int[array.Count];
                for (int i = 0; i < ids.Length; i++)
                    ids[i] = array[i] is JsonValue v && v.TryGetValue(out int x)
                        ? x : throw new ModelLoadException(path, $"field '{name}'[{i}] must be an integer.");
                return ids;
            }
            return [OptionalInt(name)!.Value];
        }
    }
}
