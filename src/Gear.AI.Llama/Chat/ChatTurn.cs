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

/// <summary>One message of a conversation as the template sees it.</summary>
/// <param name="Role">Who speaks.</param>
/// <param name="Content">What is said.</param>
public sealed record ChatTurn(ChatRole Role, string Content);
