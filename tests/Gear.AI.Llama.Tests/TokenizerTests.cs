using System.Text;
using System.Text.Json;
using Gear.AI.Llama.Chat;
using Gear.AI.Llama.Tokenization;

namespace Gear.AI.Llama.Tests;

public class TokenizerTests
{
    private static readonly LlamaTextTokenizer Stories = LlamaTextTokenizer.Load(TestModels.StoriesDir);
    private static readonly LlamaTextTokenizer GearTiny = LlamaTextTokenizer.Load(TestModels.GearTinyDir);

    [Fact]
    public void Encode_StoriesPrompt_MatchesTransformersIds()
    {
        using var meta = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestModels.StoriesDir, "reference", "reference.json")));
        var expected = meta.RootElement.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var actual = new[] { Stories.BosId!.Value }.Concat(Stories.Encode(meta.RootElement.GetProperty("prompt").GetString()!)).ToArray();
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void Decode_ReferenceContinuation_MatchesTransformersText()
    {
        using var meta = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestModels.StoriesDir, "reference", "reference.json")));
        var ids = meta.RootElement.GetProperty("greedy_continuation_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var detok = new StreamingDetokenizer(Stories, anchor: 426);
        var streamed = string.Concat(ids.Select(detok.Push)) + detok.Flush();
        Assert.Equal(" " + meta.RootElement.GetProperty("greedy_continuation_text").GetString(), streamed);
    }

    [Theory]
    [InlineData("naïve café — 日本語 🙂 done")]
    [InlineData("emoji 🙂🙃 and ümlauts")]
    public void StreamingDetokenizer_MultiByteCharacters_NeverSplit(string text)
    {
        // gear-tiny has byte fallback: rare characters become several byte tokens.
        var ids = GearTiny.Encode(text);
        Assert.True(ids.Count > text.Split(' ').Length, "expected byte-fallback tokens");
        var detok = new StreamingDetokenizer(GearTiny);
        var pieces = ids.Select(detok.Push).ToList();
        pieces.Add(detok.Flush());
        Assert.All(pieces, p => Assert.DoesNotContain('\uFFFD', p));
        Assert.All(pieces.Where(p => p.Length > 0), p => Assert.False(char.IsHighSurrogate(p[^1])));
        Assert.Equal(GearTiny.Decode(ids), string.Concat(pieces));
        Assert.Equal(text, string.Concat(pieces));
    }

    [Fact]
    public void Decode_SkipsSpecialTokens()
    {
        var ids = new[] { Stories.BosId!.Value }.Concat(Stories.Encode("Hello")).Append(Stories.EosId!.Value);
        Assert.Equal("Hello", Stories.Decode(ids));
    }

    [Fact]
    public void Template_BundledModels_ArePlain()
    {
        Assert.Equal(ChatTemplateKind.Plain, ChatTemplate.Detect(Stories));
        var ids = ChatTemplate.Create(ChatTemplateKind.Plain).Render([new(ChatRole.System, "Be brief."), new(ChatRole.User, "Once upon a time")], Stories);
        Assert.Equal(Stories.BosId, ids[0]);
        Assert.Equal("Be brief.\n\nOnce upon a time", Stories.Decode(ids));
    }

    [Fact]
    public void Template_Llama2_RendersInstAndSys()
    {
        var ids = ChatTemplate.Create(ChatTemplateKind.Llama2).Render(
            [new(ChatRole.System, "S"), new(ChatRole.User, "Hi"), new(ChatRole.Assistant, "Yo"), new(ChatRole.User, "Bye")], GearTiny);
        Assert.Equal(2, ids.Count(id => id == GearTiny.BosId));
        Assert.Single(ids, id => id == GearTiny.EosId);
        string text = GearTiny.Decode(ids);
        Assert.StartsWith("[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST]", text);
        Assert.EndsWith("[INST] Bye [/INST]", text);
    }

    [Fact]
    public void Template_Zephyr_EndsWithAssistantOpener()
    {
        var ids = ChatTemplate.Create(ChatTemplateKind.Zephyr).Render([new(ChatRole.User, "Hi")], GearTiny);
        Assert.Equal(GearTiny.BosId, ids[0]);
        Assert.Contains(GearTiny.EosId!.Value, ids);
        Assert.EndsWith("<|assistant|>\n", GearTiny.Decode(ids));
    }

    /// <summary>A byte-level BPE tokenizer.json with Llama 3's special tokens, written in the test.</summary>
    private static string WriteLlama3Tokenizer()
    {
        string dir = Directory.CreateTempSubdirectory("gear-llama3-tok-").FullName;
        var alphabet = new Dictionary<byte, char>();
        foreach (var (c, b) in new Dictionary<char, byte>(ByteLevelAlphabet.Decoder))
            alphabet[b] = c;
        var vocab = new Dictionary<string, int>();
        for (int b = 0; b < 256; b++)
            vocab[alphabet[(byte)b].ToString()] = b;
        string Word(string w) => string.Concat(Encoding.UTF8.GetBytes(w).Select(b => alphabet[b]));
        foreach (var merged in new[] { "he", "ll", "hell", "hello", " w", " wo", " wor", " worl", " world" })
            vocab[Word(merged)] = vocab.Count;
        var added = new[] { "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>" }
            .Select((t, i) => new { id = 1000 + i, content = t, special = true }).ToArray();
        var json = new { model = new { type = "BPE", vocab }, added_tokens = added };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(json));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
            "{\"bos_token\": \"<|begin_of_text|>\", \"eos_token\": \"<|eot_id|>\", \"chat_template\": \"{{ '<|start_header_id|>' }}\"}");
        return dir;
    }

    [Fact]
    public void Llama3TokenizerJson_EncodesBytesAndRendersHeaders()
    {
        string dir = WriteLlama3Tokenizer();
        try
        {
            var tok = LlamaTextTokenizer.Load(dir);
            Assert.Equal(TokenizerKind.Tiktoken, tok.Kind);
            Assert.Equal(1000, tok.BosId);
            Assert.Equal(1004, tok.EosId);
            var ids = tok.Encode("hello world");
            Assert.Equal(2, ids.Count);
            Assert.Equal("hello world", tok.Decode(ids));
            Assert.Equal("héllo", tok.Decode(tok.Encode("héllo")));

            Assert.Equal(ChatTemplateKind.Llama3, ChatTemplate.Detect(tok));
            var template = ChatTemplate.Create(ChatTemplateKind.Llama3);
            var prompt = template.Render([new(ChatRole.User, "hello")], tok);
            Assert.Equal([1000, 1002], prompt.Take(2));
            Assert.Equal([1003, .. tok.Encode("\n\n")], prompt.Skip(prompt.Count - 1 - tok.Encode("\n\n").Count));
            Assert.Contains(1004, template.StopTokenIds(tok));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Llama3TiktokenModelFile_LoadsWithMetaSpecialTokensAfterTheRanks()
    {
        string dir = Directory.CreateTempSubdirectory("gear-tiktoken-").FullName;
        try
        {
            var lines = Enumerable.Range(0, 256).Select(b => $"{Convert.ToBase64String([(byte)b])} {b}").ToList();
            foreach (var merged in new[] { "he", "ll", "hell", "hello" })
                lines.Add($"{Convert.ToBase64String(Encoding.UTF8.GetBytes(merged))} {lines.Count}");
            File.WriteAllLines(Path.Combine(dir, "tokenizer.model"), lines);
            var tok = LlamaTextTokenizer.Load(dir);
            Assert.Equal(TokenizerKind.Tiktoken, tok.Kind);
            Assert.Equal(260, tok.BosId);                              // <|begin_of_text|> right after the 260 ranks
            Assert.Equal(260 + 9, tok.SpecialId("<|eot_id|>"));
            Assert.Equal([259], tok.Encode("hello"));
            Assert.Equal("hello world", tok.Decode(tok.Encode("hello world")));
            Assert.Equal(ChatTemplateKind.Llama3, ChatTemplate.Detect(tok));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
