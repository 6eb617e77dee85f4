using Gear.AI.Llama.Chat;
using Gear.AI.Llama.Generation;
using Gear.AI.Llama.Model;
using Gear.AI.Llama.Tokenization;

namespace Gear.AI.Llama;

/// <summary>
/// Everything a model directory provides, loaded together: the network, its tokenizer and its chat
/// template. Read-only and shareable; per-conversation state lives in caches.
/// </summary>
public sealed class LlamaRuntime : IDisposable
{
    private LlamaRuntime(string directory, LlamaModel model, LlamaTextTokenizer tokenizer, ChatTemplate template)
    {
        Directory = directory;
        Model = model;
        Tokenizer = tokenizer;
        Template = template;
        Generator = new TextGenerator(model, tokenizer);
    }

    /// <summary>The model directory.</summary>
    public string Directory { get; }

    /// <summary>The model id (the directory's name).</summary>
    public string ModelId => Path.GetFileName(Directory.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));

    /// <summary>The network.</summary>
    public LlamaModel Model { get; }

    /// <summary>Text ↔ ids.</summary>
    public LlamaTextTokenizer Tokenizer { get; }

    /// <summary>The prompt format.</summary>
    public ChatTemplate Template { get; }

    /// <summary>Generation over <see cref="Model"/>.</summary>
    public TextGenerator Generator { get; }

    /// <summary>Loads model, tokenizer and template from <paramref name="directory"/>.</summary>
    /// <param name="directory">A Hugging Face model directory.</param>
    /// <param name="options">Device, compute dtype, progress.</param>
    /// <param name="template">Prompt format; detected from tokenizer_config.json when null.</param>
    /// <exception cref="ModelLoadException">A file is missing or malformed.</exception>
    public static LlamaRuntime Load(string directory, ModelLoadOptions? options = null, ChatTemplateKind? template = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        if (!System.IO.Directory.Exists(directory))
            throw new ModelLoadException(directory, "model directory not found.");
        var tokenizer = LlamaTextTokenizer.Load(directory);
        var model = LlamaModel.Load(directory, options);
        return new LlamaRuntime(Path.GetFullPath(directory), model, tokenizer, template is { } kind ? ChatTemplate.Create(kind, tokenizer.ChatTemplateSource) : ChatTemplate.For(tokenizer));
    }

    /// <summary>
    /// A runtime over a network already built (for instance from weights held in memory, or a model shape with random
    /// weights for load tests) with the tokenizer and template given. The runtime owns <paramref name="model"/>.
    /// </summary>
    /// <param name="directory">What identifies the model (its name is <see cref="ModelId"/>).</param>
    /// <param name="model">The network.</param>
    /// <param name="tokenizer">Its tokenizer.</param>
    /// <param name="template">Its prompt format.</param>
    public static LlamaRuntime Create(string directory, LlamaModel model, LlamaTextTokenizer tokenizer, ChatTemplate template)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(template);
        return new LlamaRuntime(Path.GetFullPath(directory), model, tokenizer, template);
    }

    /// <summary>
    /// BOS followed by <paramref name="text"/> as a raw, template-free prompt: special-token text in it (such as
    /// "&lt;|eot_id|&gt;") stands for the control token, for callers who build a model's prompt format themselves. Never
    /// pass text from outside here.
    /// </summary>
    public IReadOnlyList<int> EncodeRaw(string text)
    {
        var ids = new List<int>();
        if (Tokenizer.BosId is int bos)
            ids.Add(bos);
        ids.AddRange(Tokenizer.EncodeWithSpecialTokens(text));
        return ids;
    }

    /// <inheritdoc />
    public void Dispose() => Model.Dispose();
}
