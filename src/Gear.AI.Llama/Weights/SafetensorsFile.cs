using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Llama.Weights;

/// <summary>Where one tensor lives inside a safetensors file.</summary>
/// <param name="Name">Tensor name, e.g. "model.norm.weight".</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Offset">Absolute byte offset of the data in the file.</param>
/// <param name="Length">Bytes of data.</param>
internal sealed record SafetensorsEntry(string Name, ScalarType DType, long[] Shape, long Offset, long Length);

/// <summary>
/// Reads the header of a safetensors file and streams single tensors out of it, with every field
/// checked: header size within the format's 100 MB limit and the file, valid JSON, known dtypes,
/// shapes whose byte size matches the data offsets (overflow checked), offsets inside the file,
/// no overlapping tensors. Nothing is read outside the file.
/// </summary>
internal sealed class SafetensorsFile
{
    private static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The format's upper bound on the JSON header (safetensors rejects larger headers).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private SafetensorsFile(string path, IReadOnlyDictionary<string, SafetensorsEntry> entries, IReadOnlyDictionary<string, string> metadata)
    {
        FilePath = path;
        Entries = entries;
        Metadata = metadata;
    }

    /// <summary>The file.</summary>
    public string FilePath { get; }

    /// <summary>Tensors by name.</summary>
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }

    /// <summary>The optional __metadata__ strings.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Parses and validates the header of <paramref name="path"/>.</summary>
    /// <exception cref="ModelLoadException">The file is missing, truncated or malformed; the message says how.</exception>
    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path))
            throw new ModelLoadException(path, "safetensors file not found.");
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None);
        long fileLength = stream.Length;
        if (fileLength < 8)
            throw new ModelLoadException(path, $"truncated: {fileLength} bytes, fewer than the 8-byte header length.");
        Span<byte> lengthBytes = stackalloc byte[8];
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BitConverter.ToUInt64(lengthBytes);
        if (headerLength > MaxHeaderBytes)
            throw new ModelLoadException(path, $"header length {headerLength} exceeds the safetensors limit of {MaxHeaderBytes} bytes.");
        if ((long)headerLength > fileLength - 8)
            throw new ModelLoadException(path, $"header length {headerLength} runs past the end of the file ({fileLength} bytes); the file is truncated or not safetensors.");
        var header = new byte[headerLength];
        stream.ReadExactly(header);
        long dataStart = 8 + (long)headerLength;
        return Parse(path, header, dataStart, fileLength - dataStart);
    }

    private static SafetensorsFile Parse(string path, byte[] header, long dataStart, long dataLength)
    {
        try
        {
            StrictUtf8.GetCharCount(header);
        }
        catch (System.Text.DecoderFallbackException)
        {
            throw new ModelLoadException(path, "header is not valid UTF-8; the file is corrupt or not safetensors.");
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new ModelLoadException(path, $"header is not valid JSON: {e.Message}", e);
        }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new ModelLoadException(path, "header is not a JSON object.");

        var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var property in doc.RootElement.EnumerateObject())
        {
            if (property.Name == "__metadata__")
            {
                if (property.Value.ValueKind != JsonValueKind.Object)
                    throw new ModelLoadException(path, "__metadata__ must be an object of strings.");
                foreach (var m in property.Value.EnumerateObject())
                    metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                continue;
            }
            if (entries.ContainsKey(property.Name))
                throw new ModelLoadException(path, $"tensor '{property.Name}' appears twice in the header.");
            entries[property.Name] = ParseEntry(path, property, dataStart, dataLength);
        }

        // No two tensors may share bytes.
        var ordered = entries.Values.Where(e => e.Length > 0).OrderBy(e => e.Offset).ToArray();
        for (int i = 1; i < ordered.Length; i++)
        {
            if (ordered[i].Offset < ordered[i - 1].Offset + ordered[i - 1].Length)
                throw new ModelLoadException(path, $"tensors '{ordered[i - 1].Name}' and '{ordered[i].Name}' overlap in the data section.");
        }
        return new SafetensorsFile(path, entries, metadata);
    }

    private static SafetensorsEntry ParseEntry(string path, JsonProperty property, long dataStart, long dataLength)
    {
        string name = property.Name;
        var e = property.Value;
        if (e.ValueKind != JsonValueKind.Object)
            throw new ModelLoadException(path, $"tensor '{name}': header entry is not an object.");
        if (!e.TryGetProperty("dtype", out var dtypeNode) || dtypeNode.ValueKind != JsonValueKind.String)
            throw new ModelLoadException(path, $"tensor '{name}': missing dtype.");
        var dtype = ParseDType(dtypeNode.GetString()!) ?? throw new ModelLoadException(path, $"tensor '{name}': dtype '{dtypeNode.GetString()}' is not supported.");
        if (!e.TryGetProperty("shape", out var shapeNode) || shapeNode.ValueKind != JsonValueKind.Array)
            throw new ModelLoadException(path, $"tensor '{name}': missing shape.");
        if (!e.TryGetProperty("data_offsets", out var offsetsNode) || offsetsNode.ValueKind != JsonValueKind.Array || offsetsNode.GetArrayLength() != 2)
            throw new ModelLoadException(path, $"tensor '{name}': data_offsets must be [begin, end].");

        var shape = new long[shapeNode.GetArrayLength()];
        long numel = 1;
        int d = 0;
        foreach (var dim in shapeNode.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long v) || v < 0)
                throw new ModelLoadException(path, $"tensor '{name}': shape entries must be non-negative integers, got {shapeNode.GetRawText()}.");
            shape[d++] = v;
            try { numel = checked(numel * v); }
            catch (OverflowException) { throw new ModelLoadException(path, $"tensor '{name}': shape {shapeNode.GetRawText()} overflows."); }
        }
        long begin = ReadOffset(path, name, offsetsNode[0]), end = ReadOffset(path, name, offsetsNode[1]);
        if (end < begin)
            throw new ModelLoadException(path, $"tensor '{name}': data_offsets [{begin}, {end}] end before they begin.");
        if (end > dataLength)
            throw new ModelLoadException(path, $"tensor '{name}': data_offsets [{begin}, {end}] lie outside the {dataLength}-byte data section; the file is truncated or corrupt.");
        long bytes;
        try { bytes = checked(numel * ElementSize(dtype)); }
        catch (OverflowException) { throw new ModelLoadException(path, $"tensor '{name}': shape {shapeNode.GetRawText()} overflows."); }
        if (bytes != end - begin)
            throw new ModelLoadException(path, $"tensor '{name}': shape {shapeNode.GetRawText()} of {DTypeName(dtype)} needs {bytes} bytes but data_offsets span {end - begin}.");
        return new SafetensorsEntry(name, dtype, shape, dataStart + begin, bytes);
    }

    private static long ReadOffset(string path, string name, JsonElement node) =>
        node.ValueKind == JsonValueKind.Number && node.TryGetInt64(out long v) && v >= 0
            ? v : throw new ModelLoadException(path, $"tensor '{name}': data_offsets must be non-negative integers.");

    /// <summary>Maps a safetensors dtype name to a torch dtype; null if unsupported.</summary>
    public static ScalarType? ParseDType(string name) => name switch
    {
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "F64" => ScalarType.Float64,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => null,
    };

    /// <summary>The safetensors name of a dtype.</summary>
    public static string DTypeName(ScalarType type) => type switch
    {
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Float64 => "F64",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => type.ToString(),
    };

    private static long ElementSize(ScalarType type) => type switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        _ => 1,
    };

    /// <summary>Streams one tensor from disk into a new CPU tensor (no second copy of the file in memory).</summary>
    public Tensor Read(SafetensorsEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var tensor = empty(entry.Shape, entry.DType, CPU);
        try
        {
            using var stream = new FileStream(FilePath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            if (stream.Length < entry.Offset + entry.Length)
                throw new ModelLoadException(FilePath, $"tensor '{entry.Name}': file shrank while loading.");
            stream.Position = entry.Offset;
            if (entry.Length > 0)
                tensor.ReadBytesFromStream(stream);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }
}
