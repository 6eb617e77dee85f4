using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Gear.AI.Llama.Tokenization;

/// <summary>
/// Text ↔ token ids for a model directory, through Microsoft.ML.Tokenizers: SentencePiece
/// <c>tokenizer.model</c> (Llama 2, TinyLlama, the bundled models) or Llama 3's tiktoken-format
/// <c>tokenizer.model</c> / byte-level BPE <c>tokenizer.json</c>. BOS is added by the caller, never implicitly.
/// </summary>
public sealed class LlamaTextTokenizer
{
    private readonly Tokenizer _tokenizer;
    private readonly Dictionary<string, int> _special;
    private readonly Dictionary<int, string> _specialById;
    private Regex? _specialPattern;

    private LlamaTextTokenizer(Tokenizer tokenizer, Dictionary<string, int> special, int? bos, int? eos, TokenizerKind kind, string? chatTemplate)
    {
        _tokenizer = tokenizer;
        _special = special;
        _specialById = special.ToDictionary(p => p.Value, p => p.Key);
        BosId = bos;
        EosId = eos;
        Kind = kind;
        ChatTemplateSource = chatTemplate;
    }

    /// <summary>Beginning-of-sequence id, if the model has one.</summary>
    public int? BosId { get; }

    /// <summary>End-of-sequence id, if the model has one.</summary>
    public int? EosId { get; }

    /// <summary>Which tokenizer family was loaded.</summary>
    public TokenizerKind Kind { get; }

    /// <summary>The Jinja chat_template text of tokenizer_config.json, if any (used to pick a template).</summary>
    public string? ChatTemplateSource { get; }

    /// <summary>The underlying Microsoft.ML.Tokenizers tokenizer.</summary>
    public Tokenizer Inner => _tokenizer;

    /// <summary>Special tokens by text.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens => _special;

    /// <summary>Loads the tokenizer of <paramref name="modelDirectory"/>.</summary>
    /// <exception cref="ModelLoadException">No tokenizer file, or one that cannot be parsed.</exception>
    public static LlamaTextTokenizer Load(string modelDirectory)
    {
        string model = Path.Combine(modelDirectory, "tokenizer.model");
        string json = Path.Combine(modelDirectory, "tokenizer.json");
        var (bosText, eosText, template) = ReadTokenizerConfig(Path.Combine(modelDirectory, "tokenizer_config.json"));
        if (File.Exists(model) && !LooksLikeTiktoken(model))
        {
            try
            {
                using var stream = File.OpenRead(model);
                var sp = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
                var special = new Dictionary<string, int>(StringComparer.Ordinal);
                foreach (var (text, id) in new[] { ("<unk>", 0), (sp.BeginningOfSentenceToken, sp.BeginningOfSentenceId), (sp.EndOfSentenceToken, sp.EndOfSentenceId) })
                    special[text] = id;
                return new LlamaTextTokenizer(sp, special, sp.BeginningOfSentenceId, sp.EndOfSentenceId, TokenizerKind.SentencePiece, template);
            }
            catch (Exception e) when (e is not ModelLoadException)
            {
                throw new ModelLoadException(model, $"is not a valid SentencePiece model: {e.Message}", e);
            }
        }
        if (File.Exists(model))
            return Llama3TokenizerFactory.FromTiktokenFile(model, bosText, eosText, template);
        if (File.Exists(json))
            return Llama3TokenizerFactory.FromTokenizerJson(json, bosText, eosText, template);
        throw new ModelLoadException(model, "no tokenizer.model or tokenizer.json in the model directory.");
    }

    internal static LlamaTextTokenizer Create(Tokenizer tokenizer, Dictionary<string, int> special, int? bos, int? eos, TokenizerKind kind, string? template,
        IReadOnlyDictionary<int, byte[]>? pieces = null) =>
        new(tokenizer, special, bos, eos, kind, template) { Pieces = pieces };

    /// <summary>The bytes of each ordinary token of a byte-level BPE vocabulary (from its rank file), null for SentencePiece.</summary>
    internal IReadOnlyDictionary<int, byte[]>? Pieces { get; private init; }

    private static bool LooksLikeTiktoken(string path)
    {
        // tiktoken files are text lines "<base64> <rank>"; SentencePiece models are protobuf (binary).
        using var reader = new StreamReader(path);
        var buffer = new char[64];
        int read = reader.Read(buffer, 0, buffer.Length);
        var head = new string(buffer, 0, read);
        int nl = head.IndexOf('\n');
        string line = nl < 0 ? head : head[..nl];
        var parts = line.Split(' ');
        return parts.Length == 2 && int.TryParse(parts[1], out _) && parts[0].All(c => char.IsLetterOrDigit(c) || c is '+' or '/' or '=');
    }

    private static (string? Bos, string? Eos, string? Template) ReadTokenizerConfig(string path)
    {
        if (!File.Exists(path))
            return (null, null, null);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            static string? Token(JsonElement root, string name) =>
                !root.TryGetProperty(name, out var v) ? null :
                v.ValueKind == JsonValueKind.String ? v.GetString() :
                v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) ? c.GetString() : null;
            var root = doc.RootElement;
            string? template = root.TryGetProperty("chat_template", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
            return (Token(root, "bos_token"), Token(root, "eos_token"), template);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new ModelLoadException(path, $"is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>
    /// Encodes text as text: special-token text such as "&lt;|eot_id|&gt;" or "&lt;/s&gt;" gives the ids of its characters,
    /// never a control token (what Meta's <c>tokenizer.encode</c> does by default). No BOS. Use this for anything that came
    /// from outside: messages, documents, tool results.
    /// </summary>
    public IReadOnlyList<int> Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Length == 0 ? [] : _tokenizer.EncodeToIds(text);
    }

    /// <summary>
    /// Encodes text in which the special tokens' text stands for the control tokens themselves (longest first), for a
    /// caller who builds a raw prompt on purpose; everything between them is encoded as <see cref="Encode"/> does. No BOS.
    /// </summary>
    public IReadOnlyList<int> EncodeWithSpecialTokens(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        int at = 0;
        foreach (var match in SpecialPattern.EnumerateMatches(text))
        {
            ids.AddRange(Encode(text[at..match.Index]));
            ids.Add(_special[text.Substring(match.Index, match.Length)]);
            at = match.Index + match.Length;
        }
        ids.AddRange(Encode(text[at..]));
        return ids;
    }

    /// <summary>The special tokens' text, longest first (built on first use).</summary>
    private Regex SpecialPattern => _specialPattern ??= new(
        string.Join("|", _special.Keys.Where(k => k.Length > 0).OrderByDescending(k => k.Length).Select(Regex.Escape)) is { Length: > 0 } alternatives ? alternatives : "(?!)",
        RegexOptions.CultureInvariant);

    /// <summary>The id of a special token such as "&lt;|eot_id|&gt;", or null.</summary>
    public int? SpecialId(string token) => _special.TryGetValue(token, out int id) ? id : null;

    /// <summary>Whether <paramref name="id"/> is a special (control) token.</summary>
    public bool IsSpecial(int id) => _specialById.ContainsKey(id);

    /// <summary>Decodes ids to text; special tokens are skipped.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return _tokenizer.Decode(ids.Where(id => !IsSpecial(id))) ?? string.Empty;
    }
}
