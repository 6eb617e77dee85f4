namespace Gear.AI.Compression.Caching;

/// <summary>A sequence and the tokens a step appends to it (1 for decode, many for a prefill chunk).</summary>
/// <param name="Sequence">The sequence.</param>
/// <param name="NewTokens">Tokens this step appends.</param>
/// <param name="TokenIds">Their ids, when known (they index the pages for prefix reuse); null otherwise.</param>
public readonly record struct KvBatchItem(KvSequence Sequence, int NewTokens, IReadOnlyList<int>? TokenIds = null);
