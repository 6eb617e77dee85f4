using System.Text.Json;

namespace Gear.AI.Llama.Weights;

/// <summary>
/// The tensors of a Hugging Face checkpoint directory: one <c>model.safetensors</c> or shards listed by
/// <c>model.safetensors.index.json</c>. Headers are read and validated up front; data is streamed on demand.
/// </summary>
internal sealed class CheckpointReader
{
    private readonly Dictionary<string, (SafetensorsFile File, SafetensorsEntry Entry)> _tensors;

    private CheckpointReader(Dictionary<string, (SafetensorsFile, SafetensorsEntry)> tensors) => _tensors = tensors;

    /// <summary>Every tensor name in the checkpoint.</summary>
    public IEnumerable<string> Names => _tensors.Keys;

    /// <summary>Total bytes of tensor data.</summary>
    public long TotalBytes => _tensors.Values.Sum(t => t.Entry.Length);

    /// <summary>Opens the checkpoint in <paramref name="modelDirectory"/>.</summary>
    /// <exception cref="ModelLoadException">No safetensors found, a bad index, or a malformed shard.</exception>
    public static CheckpointReader Open(string modelDirectory)
    {
        string index = Path.Combine(modelDirectory, "model.safetensors.index.json");
        string single = Path.Combine(modelDirectory, "model.safetensors");
        var tensors = new Dictionary<string, (SafetensorsFile, SafetensorsEntry)>(StringComparer.Ordinal);
        if (File.Exists(index))
        {
            var map = ReadIndex(index);
            var files = map.Values.Distinct().ToDictionary(f => f, f => SafetensorsFile.Open(Path.Combine(modelDirectory, f)));
            foreach (var (name, fileName) in map)
            {
                var file = files[fileName];
                if (!file.Entries.TryGetValue(name, out var entry))
                    throw new ModelLoadException(file.FilePath, $"the index says it holds tensor '{name}', but its header does not.");
                tensors[name] = (file, entry);
            }
        }
        else if (File.Exists(single))
        {
            var file = SafetensorsFile.Open(single);
            foreach (var entry in file.Entries.Values)
                tensors[entry.Name] = (file, entry);
        }
        else
        {
            throw new ModelLoadException(single, "no model.safetensors or model.safetensors.index.json in the model directory.");
        }
        return new CheckpointReader(tensors);
    }

    private static Dictionary<string, string> ReadIndex(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new ModelLoadException(path, "missing the weight_map object.");
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in map.EnumerateObject())
            {
                string file = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : throw new ModelLoadException(path, $"weight_map['{p.Name}'] must be a file name.");
                if (file.Length == 0 || Path.GetFileName(file) != file)
                    throw new ModelLoadException(path, $"weight_map['{p.Name}'] = '{file}' must be a plain file name in the model directory.");
                result[p.Name] = file;
            }
            return result;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new ModelLoadException(path, $"is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Whether the checkpoint has <paramref name="name"/>.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The header entry of <paramref name="name"/>.</summary>
    public (SafetensorsFile File, SafetensorsEntry Entry) this[string name] => _tensors[name];
}
