using System.Text;
using System.Text.Json;
using Gear.AI.Llama.Generation.Json;
using Gear.AI.Llama.Tokenization;
using Json.Schema;

namespace Gear.AI.Llama.Tests;

/// <summary>
/// The JSON grammar against an independent JSON parser (System.Text.Json) and validator (JsonSchema.Net): random walks
/// through the matcher always end in text that parses and validates, within their byte budget; texts the matcher rejects
/// are the ones the parser or validator rejects; the token search equals trying every token alone.
/// </summary>
public sealed class JsonGrammarTests
{
    public static readonly string[] Schemas =
    [
        """{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]}""",
        """{"type":"object","properties":{"name":{"type":"string"},"nickname":{"type":["string","null"]}},"required":["name"]}""",
        """{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"},"c":{"type":"integer"}}}""",
        """{"type":"object","properties":{"tags":{"type":"array","items":{"type":"string"}}},"required":["tags"]}""",
        """{"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":4}""",
        """{"type":"array","items":{"type":"number","minimum":-1.5,"maximum":2.25}}""",
        """{"type":"string","enum":["red","green","blue"]}""",
        """{"enum":["Red","Green",3,null,true]}""",
        """{"const":{"kind":"fixed","n":1}}""",
        """{"type":"integer","minimum":10,"maximum":20}""",
        """{"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":5}""",
        """{"type":"integer","minimum":1000}""",
        """{"type":"integer","maximum":-7}""",
        """{"type":"number","minimum":0.25,"maximum":0.75}""",
        """{"type":"number","exclusiveMinimum":1,"maximum":1.5}""",
        """{"type":"string","minLength":3,"maxLength":5}""",
        """{"type":"string","format":"date"}""",
        """{"type":"string","format":"date-time"}""",
        """{"type":"string","format":"uuid"}""",
        """{"type":"boolean"}""",
        """{"type":"null"}""",
        """{"anyOf":[{"type":"string"},{"type":"integer"},{"type":"null"}]}""",
        """{"oneOf":[{"type":"object","properties":{"x":{"type":"integer"}},"required":["x"]},{"type":"array","items":{"type":"boolean"}}]}""",
        """{"type":"object","additionalProperties":{"type":"integer"}}""",
        """{"type":"object","additionalProperties":false}""",
        """{"type":"object","properties":{"inner":{"type":"object","properties":{"deep":{"type":"object","properties":{"v":{"type":"boolean"}},"required":["v"]}},"required":["deep"]}},"required":["inner"]}""",
        """{"$defs":{"Point":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"]}},"type":"object","properties":{"from":{"$ref":"#/$defs/Point"},"to":{"$ref":"#/$defs/Point"}},"required":["from","to"]}""",
        """{"type":"object","properties":{"value":{"type":"integer"},"children":{"type":"array","items":{"$ref":"#"}}},"required":["value"]}""",
        """{"type":"object","properties":{"id":{"type":"integer"},"idx":{"type":"integer"},"i":{"type":"string"}},"required":["i"]}""",
        """{"type":"object","properties":{"title":{"type":"string","description":"A title"},"when":{"type":"string","format":"date-time"},"score":{"type":"number"},"ok":{"type":"boolean"},"level":{"type":"string","enum":["Low","High"]}},"required":["title","when","score","ok","level"]}""",
        """{"type":["object","array"],"properties":{"k":{"type":"string"}},"items":{"type":"integer"}}""",
        """{}""",
    ];

    public static TheoryData<int> SchemaIndexes => [.. Enumerable.Range(0, Schemas.Length)];

    [Theory]
    [MemberData(nameof(SchemaIndexes))]
    public void RandomWalks_EndInTextThatParsesAndValidates_WithinTheirBudget(int index)
    {
        var schemaText = Schemas[index];
        var grammar = JsonGrammar.FromSchema(schemaText);
        var validator = JsonSchema.FromText(schemaText);
        var random = new Random(1000 + index);
        for (int walk = 0; walk < 60; walk++)
        {
            int budget = grammar.MinimumBytes + random.Next(0, 120);
            var text = Walk(grammar, random, budget);
            Assert.True(text.Length <= budget, $"{text.Length} bytes for a budget of {budget}: {Encoding.UTF8.GetString(text)}");
            using var document = JsonDocument.Parse(text);
            var result = validator.Evaluate(document.RootElement);
            Assert.True(result.IsValid, $"schema {index}: {Encoding.UTF8.GetString(text)} does not validate");
        }
    }

    [Theory]
    [MemberData(nameof(SchemaIndexes))]
    public void Mutated_TextsTheMatcherAccepts_ParseAndValidate(int index)
    {
        // Soundness from the other side: change a byte of a valid text; whenever the matcher still accepts the whole of it,
        // the parser and validator must too (and the original is always accepted).
        var schemaText = Schemas[index];
        var grammar = JsonGrammar.FromSchema(schemaText);
        var validator = JsonSchema.FromText(schemaText);
        var random = new Random(2000 + index);
        const string alphabet = "{}[]\":,0123456789-.eE tfnrualsx\\/ab\n";
        for (int walk = 0; walk < 30; walk++)
        {
            var text = Walk(grammar, random, grammar.MinimumBytes + 60);
            Assert.True(Accepts(grammar, text));
            for (int m = 0; m < 20; m++)
            {
                var mutated = (byte[])text.Clone();
                int at = random.Next(mutated.Length);
                if (random.Next(3) == 0)
                    mutated = [.. mutated.Take(at), .. mutated.Skip(at + 1)];
                else
                    mutated[at] = (byte)alphabet[random.Next(alphabet.Length)];
                if (!Accepts(grammar, mutated))
                    continue;
                using var document = JsonDocument.Parse(mutated);
                Assert.True(validator.Evaluate(document.RootElement).IsValid, $"schema {index}: accepted {Encoding.UTF8.GetString(mutated)}");
            }
        }
    }

    [Theory]
    [InlineData("""{"type":"string","pattern":"^a+$"}""", "pattern")]
    [InlineData("""{"type":"object","patternProperties":{"^x":{}}}""", "patternProperties")]
    [InlineData("""{"type":"string","format":"email"}""", "email")]
    [InlineData("""{"type":"number","multipleOf":0.5}""", "multipleOf")]
    [InlineData("""{"allOf":[{"type":"object"},{"required":["a"]}]}""", "allOf")]
    [InlineData("""{"oneOf":[{"type":"integer"},{"type":"number"}]}""", "oneOf")]
    [InlineData("""{"type":"array","uniqueItems":true}""", "uniqueItems")]
    [InlineData("""{"type":"object","properties":{"a":{"$ref":"#"}},"required":["a"]}""", "no finite")]
    public void FromSchema_WhatCannotBeEnforced_IsRefusedByName(string schema, string named)
    {
        var e = Assert.Throws<NotSupportedException>(() => JsonGrammar.FromSchema(schema));
        Assert.Contains(named, e.Message);
    }

    [Theory]
    [InlineData("""{"type":"integer","minimum":5,"maximum":3}""")]
    [InlineData("""{"type":"string","minLength":4,"maxLength":2}""")]
    [InlineData("""{"$ref":"#/$defs/Missing"}""")]
    [InlineData("""{"type":"text"}""")]
    [InlineData("""[1,2]""")]
    public void FromSchema_MalformedSchemas_AreArgumentErrors(string schema) =>
        Assert.Throws<ArgumentException>(() => JsonGrammar.FromSchema(schema));

    [Fact]
    public void OrFreeText_AnyTextMayStart_ButOnceJsonStartsItIsHeldToTheGrammar()
    {
        var tokenizer = LlamaTextTokenizer.Load(TestModels.GearTinyDir);
        var vocabulary = TokenVocabulary.Of(tokenizer);
        int Id(string piece) => System.Array.FindIndex(vocabulary.Bytes, b => b is not null && b.AsSpan().SequenceEqual(Encoding.UTF8.GetBytes(piece)));
        int brace = Id("{"), word = Id("The"), space = Id(" "), eos = tokenizer.EosId!.Value;
        Assert.True(brace >= 0 && word >= 0 && space >= 0);
        var grammar = JsonGrammar.FromSchema(Schemas[0]).OrFreeText();
        Assert.Equal(0, grammar.MinimumBytes);

        var text = new JsonConstraint(grammar, vocabulary, [eos], 8192, 32);
        Assert.True(text.Allowed()[word] && text.Allowed()[brace] && text.Allowed()[eos]);
        text.Accept(word);
        Assert.All(text.Allowed(), Assert.True);                                                    // free text from here on

        var call = new JsonConstraint(grammar, vocabulary, [eos], 8192, 32);
        call.Accept(space);                                                                         // whitespace decides nothing
        Assert.True(call.Allowed()[word]);
        call.Accept(brace);
        var allowed = call.Allowed();
        Assert.False(allowed[word] || allowed[eos] || allowed[brace]);
        Assert.True(allowed[Id("\"")]);
    }

    [Fact]
    public void Allowed_EqualsTryingEveryTokenAlone_OnTheRealLlama3Vocabulary()
    {
        var tokenizer = LlamaTextTokenizer.Load(Gear.AI.TestSupport.RealLlama3Tokenizer.Directory);
        Check(tokenizer, 128256);
    }

    [Fact]
    public void Allowed_EqualsTryingEveryTokenAlone_OnGearTiny()
    {
        var tokenizer = LlamaTextTokenizer.Load(TestModels.GearTinyDir);
        Check(tokenizer, 8192);
    }

    /// <summary>
    /// At each step of a greedy-like walk through a schema's text, the constraint's allowed set against each token's bytes
    /// fed alone to the matcher (with the same budget rule); the walk takes a random allowed token.
    /// </summary>
    private static void Check(LlamaTextTokenizer tokenizer, int vocabSize)
    {
        var vocabulary = TokenVocabulary.Of(tokenizer);
        int end = tokenizer.EosId ?? throw new InvalidOperationException("no EOS");
        var random = new Random(7);
        foreach (var schema in new[] { Schemas[0], Schemas[5], Schemas[15], Schemas[26], """{"type":"object","properties":{"s":{"type":"string"},"t":{"type":"string","maxLength":4}},"required":["s","t"]}""" })
        {
            var grammar = JsonGrammar.FromSchema(schema);
            const int maxTokens = 48;
            var constraint = new JsonConstraint(grammar, vocabulary, [end], vocabSize, maxTokens);
            var states = new List<FrameStack> { new(new RootFrame(grammar.Root), null) };
            for (int step = 0; step < maxTokens; step++)
            {
                var allowed = constraint.Allowed();
                int budget = maxTokens - step - 1;
                for (int id = 0; id < vocabSize && step % 5 == 0; id++)
                {
                    bool expected = id == end ? states.Any(s => s.CanEnd) : id < vocabulary.Size && vocabulary.Bytes[id] is { } bytes
                        && Feed(states, bytes).Any(s => s.MinRemaining <= budget);
                    Assert.True(expected == allowed[id], $"{schema}, step {step}: token {id} ('{Printable(vocabulary.Bytes.ElementAtOrDefault(id))}') expected {expected}");
                }
                var choices = Enumerable.Range(0, vocabSize).Where(i => allowed[i]).ToArray();
                Assert.NotEmpty(choices);
                int pick = choices[random.Next(choices.Length)];
                constraint.Accept(pick);
                if (pick == end)
                    break;
                states = Feed(states, vocabulary.Bytes[pick]!);
            }
        }
    }

    private static List<FrameStack> Feed(List<FrameStack> states, byte[] bytes)
    {
        foreach (byte b in bytes)
        {
            var next = new List<FrameStack>();
            foreach (var state in states)
                state.Step(b, next);
            states = next;
        }
        return states;
    }

    private static string Printable(byte[]? bytes) => bytes is null ? "<control>" : Encoding.UTF8.GetString(bytes).Replace("\n", "\\n");

    private static bool Accepts(JsonGrammar grammar, byte[] text) =>
        Feed([new FrameStack(new RootFrame(grammar.Root), null)], text).Any(s => s.CanEnd);

    /// <summary>A random text of the grammar: at each byte, any ASCII byte the matcher takes that leaves the rest within the budget.</summary>
    private static byte[] Walk(JsonGrammar grammar, Random random, int budget)
    {
        var states = new List<FrameStack> { new(new RootFrame(grammar.Root), null) };
        var text = new List<byte>();
        while (true)
        {
            bool canEnd = states.Any(s => s.CanEnd);
            int left = budget - text.Count - 1;
            var options = new List<(byte Byte, List<FrameStack> States)>();
            for (int b = 0; b < 128; b++)
            {
                var next = Feed(states, [(byte)b]);
                if (next.Count > 0 && next.Any(s => s.MinRemaining <= left))
                    options.Add(((byte)b, next));
            }
            if (canEnd && (options.Count == 0 || random.Next(8) == 0))
                return [.. text];
            Assert.True(options.Count > 0, $"stuck after '{Encoding.UTF8.GetString([.. text])}' with {left + 1} bytes left");
            var (chosen, after) = options[random.Next(options.Count)];
            text.Add(chosen);
            states = after;
        }
    }
}
