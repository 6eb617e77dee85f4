namespace Gear.AI.Llama.Chat;

/// <summary>Which prompt format a model was trained on.</summary>
public enum ChatTemplateKind
{
    /// <summary>Base models: the messages' text joined by blank lines after BOS (our bundled models).</summary>
    Plain,

    /// <summary>Llama 2 chat: <c>[INST]</c>, <c>&lt;&lt;SYS&gt;&gt;</c>.</summary>
    Llama2,

    /// <summary>Llama 3 / 3.1 / 3.2: header tokens and <c>&lt;|eot_id|&gt;</c>.</summary>
    Llama3,

    /// <summary>Zephyr / TinyLlama chat: <c>&lt;|user|&gt;</c> … <c>&lt;/s&gt;</c>.</summary>
    Zephyr,
}
