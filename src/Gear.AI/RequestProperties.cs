using System.Globalization;
using System.Text.Json;
using Gear.AI.Compression;
using Microsoft.Extensions.AI;

namespace Gear.AI;

/// <summary>
/// The <c>gear.*</c> entries of <see cref="ChatOptions.AdditionalProperties"/>, read once per request: cache settings
/// (<c>gear.cache</c>, <c>gear.bits</c>, <c>gear.group_size</c>, <c>gear.outlier_ratio</c>, <c>gear.prompt_rank</c>,
/// <c>gear.decode_rank</c>, <c>gear.buffer_length</c>), <c>gear.repetition_penalty</c>, <c>gear.raw</c> (no chat
/// template: BOS and the messages' text, special-token text parsed as control tokens) and <c>gear.ignore_eos</c>.
/// Values may be CLR values, strings or JSON elements (as a server forwards them).
/// </summary>
internal sealed record RequestProperties
{
    /// <summary>Every property read, in the order the error for an unknown one lists them.</summary>
    public static readonly IReadOnlyList<string> Names =
    [
        "gear.cache", "gear.bits", "gear.group_size", "gear.outlier_ratio", "gear.prompt_rank", "gear.decode_rank",
        "gear.buffer_length", "gear.repetition_penalty", "gear.raw", "gear.ignore_eos",
    ];

    private static readonly RequestProperties None = new();

    private CacheKind? _kind;
    private int? _bits, _groupSize, _promptRank, _decodeRank, _bufferLength;
    private double? _outlierRatio;

    /// <summary>gear.repetition_penalty (default 1: none).</summary>
    public double RepetitionPenalty { get; private init; } = 1.0;

    /// <summary>gear.raw (default false: message text is text).</summary>
    public bool Raw { get; private init; }

    /// <summary>gear.ignore_eos (default false).</summary>
    public bool IgnoreEndOfSequence { get; private init; }

    /// <exception cref="ArgumentException">An unknown <c>gear.*</c> property, or a value of the wrong type.</exception>
    public static RequestProperties Read(ChatOptions? options)
    {
        var props = options?.AdditionalProperties;
        if (props is null || !props.Keys.Any(k => k.StartsWith("gear.", StringComparison.Ordinal)))
            return None;
        var read = new RequestProperties();
        foreach (var (key, value) in props)
        {
            if (!key.StartsWith("gear.", StringComparison.Ordinal))
                continue;
            read = key switch
            {
                "gear.cache" => read with { _kind = CacheKindNames.Parse(AsString(key, value)) },
                "gear.bits" => read with { _bits = AsInt(key, value) },
                "gear.group_size" => read with { _groupSize = AsInt(key, value) },
                "gear.outlier_ratio" => read with { _outlierRatio = AsDouble(key, value) },
                "gear.prompt_rank" => read with { _promptRank = AsInt(key, value) },
                "gear.decode_rank" => read with { _decodeRank = AsInt(key, value) },
                "gear.buffer_length" => read with { _bufferLength = AsInt(key, value) },
                "gear.repetition_penalty" => read with { RepetitionPenalty = AsDouble(key, value) },
                "gear.raw" => read with { Raw = AsBool(key, value) },
                "gear.ignore_eos" => read with { IgnoreEndOfSequence = AsBool(key, value) },
                _ => throw new ArgumentException($"Unknown additional property '{key}'; Gear reads {string.Join(", ", Names)}.", nameof(options)),
            };
        }
        return read;
    }

    /// <summary><paramref name="defaults"/> with this request's cache settings, validated.</summary>
    /// <exception cref="ArgumentException">A cache setting out of range.</exception>
    public GearOptions Cache(GearOptions defaults)
    {
        if (_kind is null && _bits is null && _groupSize is null && _outlierRatio is null && _promptRank is null && _decodeRank is null && _bufferLength is null)
            return defaults;
        try
        {
            return (defaults with
            {
                Kind = _kind ?? defaults.Kind,
                Bits = _bits ?? defaults.Bits,
                GroupSize = _groupSize ?? defaults.GroupSize,
                OutlierRatio = _outlierRatio ?? defaults.OutlierRatio,
                PromptRank = _promptRank ?? defaults.PromptRank,
                DecodeRank = _decodeRank ?? defaults.DecodeRank,
                BufferLength = _bufferLength ?? defaults.BufferLength,
            }).Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"Invalid cache setting in ChatOptions.AdditionalProperties: {e.Message}", "options", e);
        }
    }

    private static string AsString(string key, object? value) => value switch
    {
        string s => s,
        JsonElement { ValueKind: JsonValueKind.String } e => e.GetString()!,
        _ => throw new ArgumentException($"{key} must be a string.", key),
    };

    private static int AsInt(string key, object? value) => value switch
    {
        int i => i,
        long l when l is >= int.MinValue and <= int.MaxValue => (int)l,
        string s when int.TryParse(s, out int p) => p,
        JsonElement { ValueKind: JsonValueKind.Number } e when e.TryGetInt32(out int j) => j,
        _ => throw new ArgumentException($"{key} must be an integer.", key),
    };

    private static double AsDouble(string key, object? value) => value switch
    {
        double d => d,
        float f => f,
        int i => i,
        string s when double.TryParse(s, CultureInfo.InvariantCulture, out double p) => p,
        JsonElement { ValueKind: JsonValueKind.Number } e => e.GetDouble(),
        _ => throw new ArgumentException($"{key} must be a number.", key),
    };

    private static bool AsBool(string key, object? value) => value switch
    {
        bool b => b,
        string s when bool.TryParse(s, out bool p) => p,
        JsonElement { ValueKind: JsonValueKind.True or JsonValueKind.False } e => e.GetBoolean(),
        _ => throw new ArgumentException($"{key} must be true or false.", key),
    };
}
