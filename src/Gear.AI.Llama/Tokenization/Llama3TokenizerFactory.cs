using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Gear.AI.Llama.Tokenization;

/// <summary>
/// Llama 3's byte-level BPE through <see cref="TiktokenTokenizer"/>: from Meta's tiktoken-format
/// <c>tokenizer.model</c>, or from a Hugging Face <c>tokenizer.json</c> whose vocabulary (byte-level
/// unicode strings) is turned back into byte sequences ranked by id.
/// </summary>
internal static class Llama3TokenizerFactory
{
    /// <summary>Llama 3's pre-tokenization pattern.</summary>
    private const string Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>The 256 special tokens Meta appends after the BPE ranks (Llama 3.1 names).</summary>
    private static Dictionary<string, int> MetaSpecialTokens(int baseId)
    {
        string[] named =
        [
            "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
        ];
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < 256; i++)
            special[i < named.Length ? named[i] : $"<|reserved_special_token_{i - named.Length + 3}|>"] = baseId + i;
        return special;
    }

    public static LlamaTextTokenizer FromTiktokenFile(string path, string? bos, string? eos, string? template)
    {
        try
        {
            int ranks = File.ReadLines(path).Count(l => l.Length > 0);
            var special = MetaSpecialTokens(ranks);
            using var stream = File.OpenRead(path);
            return Build(stream, special, bos, eos, template);
        }
        catch (Exception e) when (e is not ModelLoadException)
        {
            throw new ModelLoadException(path, $"is not a valid tiktoken BPE file: {e.Message}", e);
        }
    }

    public static LlamaTextTokenizer FromTokenizerJson(string path, string? bos, string? eos, string? template)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var root = doc.RootElement;
            if (!root.TryGetProperty("model", out var model) || !model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
                throw new ModelLoadException(path, "has no model.vocab object; only byte-level BPE tokenizer.json files (Llama 3) are supported.");
            var decode = ByteLevelAlphabet.Decoder;
            var ranked = new List<(int Id, byte[] Bytes)>();
            foreach (var entry in vocab.EnumerateObject())
            {
                var bytes = new byte[entry.Name.Length];
                for (int i = 0; i < bytes.Length; i++)
                {
                    if (!decode.TryGetValue(entry.Name[i], out bytes[i]))
                        throw new ModelLoadException(path, $"vocab entry '{entry.Name}' is not byte-level BPE text.");
                }
                ranked.Add((entry.Value.GetInt32(), bytes));
            }
            var tiktoken = new StringBuilder();
            foreach (var (id, bytes) in ranked.OrderBy(r => r.Id))
                tiktoken.Append(Convert.ToBase64String(bytes)).Append(' ').Append(id).Append('\n');
            var special = new Dictionary<string, int>(StringComparer.Ordinal);
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            {
                foreach (var token in added.EnumerateArray())
                    special[token.GetProperty("content").GetString()!] = token.GetProperty("id").GetInt32();
            }
            using var stream = new MemoryStream(Encoding.UTF8.GetBytes(tiktoken.ToString()));
            return Build(stream, special, bos, eos, template);
        }
        catch (Exception e) when (e is not ModelLoadException)
        {
            throw new ModelLoadException(path, $"cannot be read as a byte-level BPE tokenizer: {e.Message}", e);
        }
    }

    private static LlamaTextTokenizer Build(Stream ranks, Dictionary<string, int> special, string? bos, string? eos, string? template)
    {
        // Special-token text is not split out: text is text (LlamaTextTokenizer.EncodeWithSpecialTokens parses it on purpose).
        var preTokenizer = new CodePointRegexPreTokenizer(new Regex(Pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant));
        using var copy = new MemoryStream();
        ranks.CopyTo(copy);
        var pieces = new Dictionary<int, byte[]>();                                              // "<base64 bytes> <rank>" lines
        foreach (var line in Encoding.UTF8.GetString(copy.GetBuffer(), 0, (int)copy.Length).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int space = line.IndexOf(' ');
            pieces[int.Parse(line.AsSpan(space + 1), System.Globalization.CultureInfo.InvariantCulture)] = Convert.FromBase64String(line[..space]);
        }
        copy.Position = 0;
        var tokenizer = TiktokenTokenizer.Create(copy, preTokenizer, normalizer: null, specialTokens: special);
        int? Lookup(string? text, string fallback) =>
            text is not null && special.TryGetValue(text, out int id) ? id : special.TryGetValue(fallback, out int f) ? f : null;
        return LlamaTextTokenizer.Create(tokenizer, special, Lookup(bos, "<|begin_of_text|>"), Lookup(eos, "<|end_of_text|>"), TokenizerKind.Tiktoken, template, pieces);
    }
}

/// <summary>GPT-2's byte ↔ printable-character alphabet used by byte-level BPE vocabularies.</summary>
internal static class ByteLevelAlphabet
{
    public static readonly IReadOnlyDictionary<char, byte> Decoder = Build();

    private static Dictionary<char, byte> Build()
    {
        var printable = new List<int>();
        for (int b = '!'; b <= '~'; b++) printable.Add(b);
        for (int b = 0xA1; b <= 0xAC; b++) printable.Add(b);
        for (int b = 0xAE; b <= 0xFF; b++) printable.Add(b);
        var map = new Dictionary<char, byte>();
        foreach (int b in printable)
            map[(char)b] = (byte)b;
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            if (!printable.Contains(b))
                map[(char)(256 + next++)] = (byte)b;
        }
        return map;
    }
}
