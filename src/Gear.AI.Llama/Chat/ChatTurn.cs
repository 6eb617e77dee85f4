namespace Gear.AI.Llama.Chat;

/// <summary>One message of a conversation as the template sees it.</summary>
/// <param name="Role">Who speaks.</param>
/// <param name="Content">What is said.</param>
public sealed record ChatTurn(ChatRole Role, string Content);
