using System.Text.Json.Nodes;

namespace Gear.AI.Llama;

/// <summary>Llama 3.1-style rotary frequency scaling (rope_type "llama3").</summary>
/// <param name="Factor">Long-context scaling factor (8 for Llama 3.1).</param>
/// <param name="LowFreqFactor">Wavelengths longer than original/low_freq_factor are divided by the factor.</param>
/// <param name="HighFreqFactor">Wavelengths shorter than original/high_freq_factor are kept.</param>
/// <param name="OriginalMaxPositionEmbeddings">The pre-training context length.</param>
public sealed record RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings)
{
    /// <summary>Reads rope_scaling or rope_parameters; null for none or "default".</summary>
    internal static RopeScaling? Parse(JsonObject? node, string path)
    {
        if (node is null)
            return null;
        string? type = (node["rope_type"] ?? node["type"])?.GetValue<string>();
        if (type is null or "default")
            return null;
        if (type != "llama3")
            throw new ModelLoadException(path, $"rope scaling type '{type}' is not supported (supported: llama3, default).");
        double Get(string name) => node[name] is JsonValue v && v.TryGetValue(out double d) && d > 0
            ? d : throw new ModelLoadException(path, $"rope scaling field '{name}' must be a positive number.");
        return new RopeScaling(Get("factor"), Get("low_freq_factor"), Get("high_freq_factor"), (int)Get("original_max_position_embeddings"));
    }
}
