namespace Gear.AI.Llama.Generation;

/// <summary>One step of a streamed generation: new text (possibly empty), the token, and at the end the summary.</summary>
/// <param name="Text">Text completed by this step.</param>
/// <param name="TokenId">The token generated, or null for the closing update.</param>
/// <param name="Summary">Set on the last update only.</param>
public sealed record GenerationUpdate(string Text, int? TokenId, GenerationSummary? Summary = null);
