using Gear.AI.Llama.Tokenization;

namespace Gear.AI.Llama.Chat;

/// <summary>
/// Renders a conversation into token ids, with special tokens as ids (never as text), ending in the
/// assistant's turn opener. Text segments are encoded separately, as SentencePiece does after a control token.
/// </summary>
public abstract class ChatTemplate
{
    /// <summary>The format.</summary>
    public abstract ChatTemplateKind Kind { get; }

    /// <summary>Token ids that end an assistant turn, beyond the model's EOS.</summary>
    public virtual IReadOnlyList<int> StopTokenIds(LlamaTextTokenizer tokenizer) => tokenizer.EosId is int e ? [e] : [];

    /// <summary>Renders <paramref name="turns"/> and opens the assistant's reply.</summary>
    public IReadOnlyList<int> Render(IReadOnlyList<ChatTurn> turns, LlamaTextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(turns);
        ArgumentNullException.ThrowIfNull(tokenizer);
        var ids = new List<int>();
        Render(turns, new Writer(ids, tokenizer));
        return ids;
    }

    /// <summary>Writes the segments of the prompt.</summary>
    protected abstract void Render(IReadOnlyList<ChatTurn> turns, Writer writer);

    /// <summary>
    /// What follows an assistant reply that the model generated (its ids as generated, not re-encoded from its text):
    /// the reply turn's end, <paramref name="turns"/>, and the opener of the next reply. Appended to the ids of the prompt
    /// and the reply, it gives the next prompt with the conversation's exact ids, so a cached conversation stays a prefix
    /// of its next turn.
    /// </summary>
    public IReadOnlyList<int> RenderContinuation(IReadOnlyList<ChatTurn> turns, LlamaTextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(turns);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (turns.Count == 0)
            throw new ArgumentException("A continuation renders at least one turn.", nameof(turns));
        var ids = new List<int>();
        RenderContinuation(turns, new Writer(ids, tokenizer));
        return ids;
    }

    /// <summary>Writes the segments that follow a generated reply (see <see cref="RenderContinuation(IReadOnlyList{ChatTurn}, LlamaTextTokenizer)"/>).</summary>
    protected abstract void RenderContinuation(IReadOnlyList<ChatTurn> turns, Writer writer);

    /// <summary>Creates the template of <paramref name="kind"/> in its plainest version (Llama 3: no knowledge-date block).</summary>
    public static ChatTemplate Create(ChatTemplateKind kind) => Create(kind, source: null);

    /// <summary>
    /// Creates the template of <paramref name="kind"/> in the version its Jinja <paramref name="source"/> (tokenizer_config.json's
    /// chat_template) writes: for Llama 3.1 / 3.2 the system block with "Cutting Knowledge Date" and "Today Date" (today's
    /// date where the template asks for it), and tool results as <c>ipython</c> turns; for Llama 3 tool results under
    /// their own role name.
    /// </summary>
    /// <param name="kind">The format.</param>
    /// <param name="source">The model's chat_template text, or null.</param>
    /// <param name="today">The date a template that reads the clock shows (default: today).</param>
    public static ChatTemplate Create(ChatTemplateKind kind, string? source, DateTime? today = null) => kind switch
    {
        ChatTemplateKind.Plain => new PlainChatTemplate(),
        ChatTemplateKind.Llama2 => new Llama2ChatTemplate(),
        ChatTemplateKind.Llama3 => new Llama3ChatTemplate(source, today ?? DateTime.Now),
        ChatTemplateKind.Zephyr => new ZephyrChatTemplate(),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown chat template."),
    };

    /// <summary>The template <paramref name="tokenizer"/>'s model was trained on: detected, in the version its chat_template writes.</summary>
    public static ChatTemplate For(LlamaTextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return Create(Detect(tokenizer), tokenizer.ChatTemplateSource);
    }

    /// <summary>
    /// Jinja's <c>trim</c> (Python's <c>str.strip()</c>): whitespace as Python sees it, which also takes U+001C–U+001F
    /// (.NET's <see cref="string.Trim()"/> keeps those).
    /// </summary>
    protected static string Strip(string text)
    {
        static bool Space(char c) => char.IsWhiteSpace(c) || c is >= '\u001C' and <= '\u001F';
        int start = 0, end = text.Length;
        while (start < end && Space(text[start]))
            start++;
        while (end > start && Space(text[end - 1]))
            end--;
        return text[start..end];
    }

    /// <summary>Picks the template from tokenizer_config.json's chat_template (Plain when there is none).</summary>
    public static ChatTemplateKind Detect(LlamaTextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        string? source = tokenizer.ChatTemplateSource;
        if (source is null)
            return tokenizer.Kind == TokenizerKind.Tiktoken && tokenizer.SpecialId("<|start_header_id|>") is not null ? ChatTemplateKind.Llama3 : ChatTemplateKind.Plain;
        if (source.Contains("<|start_header_id|>", StringComparison.Ordinal))
            return ChatTemplateKind.Llama3;
        if (source.Contains("<|user|>", StringComparison.Ordinal))
            return ChatTemplateKind.Zephyr;
        if (source.Contains("[INST]", StringComparison.Ordinal))
            return ChatTemplateKind.Llama2;
        return ChatTemplateKind.Plain;
    }

    /// <summary>Appends text and special tokens to the id list.</summary>
    protected sealed class Writer(List<int> ids, LlamaTextTokenizer tokenizer)
    {
        /// <summary>The tokenizer.</summary>
        public LlamaTextTokenizer Tokenizer => tokenizer;

        /// <summary>Appends BOS if the model has one.</summary>
        public void Bos()
        {
            if (tokenizer.BosId is int b)
                ids.Add(b);
        }

        /// <summary>Appends EOS if the model has one.</summary>
        public void Eos()
        {
            if (tokenizer.EosId is int e)
                ids.Add(e);
        }

        /// <summary>Appends a special token by its text; fails when the tokenizer lacks it.</summary>
        public void Special(string token) =>
            ids.Add(tokenizer.SpecialId(token) ?? throw new InvalidOperationException($"The tokenizer has no special token {token}; this chat template does not fit the model."));

        /// <summary>Appends encoded text.</summary>
        public void Text(string text) => ids.AddRange(tokenizer.Encode(text));
    }
}

/// <summary>Base models: BOS, then the messages' text separated by blank lines.</summary>
internal sealed class PlainChatTemplate : ChatTemplate
{
    public override ChatTemplateKind Kind => ChatTemplateKind.Plain;

    protected override void Render(IReadOnlyList<ChatTurn> turns, Writer writer)
    {
        writer.Bos();
        writer.Text(Join(turns));
    }

    protected override void RenderContinuation(IReadOnlyList<ChatTurn> turns, Writer writer) => writer.Text("\n\n" + Join(turns));

    private static string Join(IReadOnlyList<ChatTurn> turns) => string.Join("\n\n", turns.Select(t => Strip(t.Content)).Where(c => c.Length > 0));
}

/// <summary>Llama 2 chat: &lt;s&gt;[INST] &lt;&lt;SYS&gt;&gt;\n…\n&lt;&lt;/SYS&gt;&gt;\n\nuser [/INST] answer &lt;/s&gt;&lt;s&gt;[INST] … [/INST]</summary>
internal sealed class Llama2ChatTemplate : ChatTemplate
{
    public override ChatTemplateKind Kind => ChatTemplateKind.Llama2;

    protected override void Render(IReadOnlyList<ChatTurn> turns, Writer writer) => Turns(turns, writer, first: true);

    protected override void RenderContinuation(IReadOnlyList<ChatTurn> turns, Writer writer)
    {
        writer.Eos();
        Turns(turns, writer, first: false);
    }

    private static void Turns(IReadOnlyList<ChatTurn> turns, Writer writer, bool first)
    {
        string? system = string.Join("\n", turns.Where(t => t.Role == ChatRole.System).Select(t => t.Content));
        foreach (var turn in turns.Where(t => t.Role != ChatRole.System))
        {
            if (turn.Role is ChatRole.User or ChatRole.Tool)
            {
                string content = Strip(turn.Content);
                if (first && system.Length > 0)
                    content = $"<<SYS>>\n{system}\n<</SYS>>\n\n{content}";
                writer.Bos();
                writer.Text($"[INST] {content} [/INST]");
                first = false;
            }
            else
            {
                writer.Text($" {Strip(turn.Content)} ");
                writer.Eos();
            }
        }
    }
}

/// <summary>
/// Llama 3: &lt;|begin_of_text|&gt;&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\ncontent&lt;|eot_id|&gt; … assistant
/// header. Llama 3.1 / 3.2 (a chat_template with "Cutting Knowledge Date") always open with a system block holding the
/// knowledge and today's dates and the first message when it is a system one, and write tool results as <c>ipython</c>
/// turns whose text is a JSON string, as their Jinja templates do.
/// </summary>
internal sealed class Llama3ChatTemplate : ChatTemplate
{
    private readonly string? _dateBlock;
    private readonly string _toolRole;

    public Llama3ChatTemplate(string? source = null, DateTime? today = null)
    {
        if (source?.Contains("Cutting Knowledge Date", StringComparison.Ordinal) == true)
        {
            string date = source.Contains("strftime_now", StringComparison.Ordinal)
                ? (today ?? DateTime.Now).ToString("dd MMM yyyy", System.Globalization.CultureInfo.InvariantCulture)
                : "26 Jul 2024";
            _dateBlock = $"Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n";
        }
        // Llama 3's template writes each message's role as it is; 3.1 and later name tool results "ipython".
        _toolRole = source is null || source.Contains("ipython", StringComparison.Ordinal) ? "ipython" : "tool";
    }

    public override ChatTemplateKind Kind => ChatTemplateKind.Llama3;

    public override IReadOnlyList<int> StopTokenIds(LlamaTextTokenizer tokenizer) =>
        new[] { tokenizer.SpecialId("<|eot_id|>"), tokenizer.SpecialId("<|eom_id|>"), tokenizer.EosId }.OfType<int>().Distinct().ToArray();

    protected override void Render(IReadOnlyList<ChatTurn> turns, Writer writer)
    {
        writer.Bos();
        if (_dateBlock is not null)
        {
            bool system = turns.Count > 0 && turns[0].Role == ChatRole.System;
            Header(writer, "system");
            writer.Text(_dateBlock + (system ? Strip(turns[0].Content) : ""));
            writer.Special("<|eot_id|>");
            if (system)
                turns = [.. turns.Skip(1)];
        }
        Turns(turns, writer);
    }

    protected override void RenderContinuation(IReadOnlyList<ChatTurn> turns, Writer writer)
    {
        writer.Special("<|eot_id|>");
        Turns(turns, writer);
    }

    private void Turns(IReadOnlyList<ChatTurn> turns, Writer writer)
    {
        foreach (var turn in turns)
        {
            if (turn.Role == ChatRole.Tool)
            {
                Header(writer, _toolRole);
                writer.Text(_dateBlock is null ? Strip(turn.Content) : JsonString(turn.Content));
            }
            else
            {
                Header(writer, turn.Role switch { ChatRole.System => "system", ChatRole.User => "user", _ => "assistant" });
                writer.Text(Strip(turn.Content));
            }
            writer.Special("<|eot_id|>");
        }
        Header(writer, "assistant");
    }

    /// <summary>A JSON string as the templates' <c>tojson</c> writes it (Python's json.dumps, ensure_ascii off).</summary>
    private static string JsonString(string text)
    {
        var json = new System.Text.StringBuilder(text.Length + 2).Append('"');
        foreach (char c in text)
        {
            json.Append(c switch
            {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\b' => "\\b",
                '\f' => "\\f",
                < ' ' => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        }
        return json.Append('"').ToString();
    }

    private static void Header(Writer writer, string role)
    {
        writer.Special("<|start_header_id|>");
        writer.Text(role);
        writer.Special("<|end_header_id|>");
        writer.Text("\n\n");
    }
}

/// <summary>Zephyr / TinyLlama: &lt;|system|&gt;\n…&lt;/s&gt;\n&lt;|user|&gt;\n…&lt;/s&gt;\n&lt;|assistant|&gt;\n</summary>
internal sealed class ZephyrChatTemplate : ChatTemplate
{
    public override ChatTemplateKind Kind => ChatTemplateKind.Zephyr;

    protected override void Render(IReadOnlyList<ChatTurn> turns, Writer writer)
    {
        writer.Bos();
        Turns(turns, writer);
    }

    protected override void RenderContinuation(IReadOnlyList<ChatTurn> turns, Writer writer)
    {
        writer.Eos();
        writer.Text("\n");
        Turns(turns, writer);
    }

    private static void Turns(IReadOnlyList<ChatTurn> turns, Writer writer)
    {
        foreach (var turn in turns)
        {
            string role = turn.Role switch { ChatRole.System => "system", ChatRole.User or ChatRole.Tool => "user", _ => "assistant" };
            writer.Text($"<|{role}|>\n{Strip(turn.Content)}");
            writer.Eos();
            writer.Text("\n");
        }
        writer.Text("<|assistant|>\n");
    }
}
