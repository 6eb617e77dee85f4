namespace Gear.AI.Llama.Chat;

/// <summary>Who speaks in a turn.</summary>
public enum ChatRole
{
    /// <summary>Instructions for the assistant.</summary>
    System,

    /// <summary>The person.</summary>
    User,

    /// <summary>The model.</summary>
    Assistant,

    /// <summary>A tool's result.</summary>
    Tool,
}
