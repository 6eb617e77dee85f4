using System.Runtime.CompilerServices;
using System.Text;
using Gear.AI.Llama.Tokenization;
using Microsoft.ML.Tokenizers;

namespace Gear.AI.Llama.Generation.Json;

/// <summary>
/// Every ordinary token of a tokenizer as the bytes it adds to the text, sorted, with what a search of the vocabulary
/// needs: the length each token shares with the one before it (so tokens with a common prefix are matched once), and
/// which tokens are plain string text of whole characters (allowed together inside a free string without being walked
/// one by one).
/// Control tokens have no bytes here. Built once per tokenizer.
/// </summary>
internal sealed class TokenVocabulary
{
    private static readonly ConditionalWeakTable<LlamaTextTokenizer, TokenVocabulary> Cache = new();

    private TokenVocabulary(byte[]?[] bytes)
    {
        Size = bytes.Length;
        var ids = Enumerable.Range(0, bytes.Length).Where(i => bytes[i] is { Length: > 0 }).ToArray();
        System.Array.Sort(ids, (a, b) => bytes[a]!.AsSpan().SequenceCompareTo(bytes[b]));
        Sorted = ids;
        Bytes = bytes;
        Shared = SharedPrefixes(ids);
        Plain = new bool[bytes.Length];
        PlainCharacters = new int[bytes.Length];
        var special = new List<int>();
        foreach (int id in ids)
        {
            var b = bytes[id]!;
            if (b.All(StringFrame.IsPlain) && System.Text.Unicode.Utf8.IsValid(b))
            {
                Plain[id] = true;
                // Characters as a string frame counts them; a four-byte character makes the token unfit for bounded strings.
                PlainCharacters[id] = b.Any(x => x >= 0xF0) ? -1 : b.Count(x => (x & 0xC0) != 0x80);
            }
            else
            {
                special.Add(id);
            }
        }
        NotPlain = special.ToArray();
        NotPlainShared = SharedPrefixes(NotPlain);
    }

    /// <summary>[k]: bytes token <paramref name="order"/>[k] shares with the one before it.</summary>
    private int[] SharedPrefixes(int[] order)
    {
        var shared = new int[order.Length];
        for (int k = 1; k < order.Length; k++)
            shared[k] = Bytes[order[k - 1]]!.AsSpan().CommonPrefixLength(Bytes[order[k]]);
        return shared;
    }

    /// <summary>Ids of the vocabulary (the model's vocab size may be larger; ids past it are never allowed).</summary>
    public int Size { get; }

    /// <summary>[id]: the bytes the token adds, or null for control tokens.</summary>
    public byte[]?[] Bytes { get; }

    /// <summary>Ids of the ordinary tokens, their bytes in ascending order.</summary>
    public int[] Sorted { get; }

    /// <summary>[k]: bytes Sorted[k] shares with Sorted[k − 1].</summary>
    public int[] Shared { get; }

    /// <summary>[id]: every byte is plain string text.</summary>
    public bool[] Plain { get; }

    /// <summary>[id]: characters of a <see cref="Plain"/> token (−1: it holds a four-byte character, which bounded strings refuse).</summary>
    public int[] PlainCharacters { get; }

    /// <summary>The ordinary tokens that are not <see cref="Plain"/>, sorted like <see cref="Sorted"/>, and their shared lengths.</summary>
    public int[] NotPlain { get; }

    public int[] NotPlainShared { get; }

    /// <summary>The vocabulary of <paramref name="tokenizer"/>, built on first use.</summary>
    public static TokenVocabulary Of(LlamaTextTokenizer tokenizer) => Cache.GetValue(tokenizer, Build);

    private static TokenVocabulary Build(LlamaTextTokenizer tokenizer)
    {
        switch (tokenizer.Inner)
        {
            case TiktokenTokenizer when tokenizer.Pieces is { } pieces:
            {
                int size = Math.Max(pieces.Keys.DefaultIfEmpty(-1).Max(), tokenizer.SpecialTokens.Values.DefaultIfEmpty(-1).Max()) + 1;
                var bytes = new byte[]?[size];
                foreach (var (id, piece) in pieces)
                    if (!tokenizer.IsSpecial(id))
                        bytes[id] = piece;
                return new TokenVocabulary(bytes);
            }
            case SentencePieceTokenizer sentencePiece:
            {
                var bytes = new byte[]?[sentencePiece.Vocabulary.Values.Max() + 1];
                foreach (var (piece, id) in sentencePiece.Vocabulary)
                    if (!tokenizer.IsSpecial(id))
                        bytes[id] = PieceBytes(piece, sentencePiece.ByteFallback);
                return new TokenVocabulary(bytes);
            }
            default:
                throw new NotSupportedException($"Constrained output needs each token's bytes; {tokenizer.Inner.GetType().Name} does not give them.");
        }
    }

    /// <summary>A SentencePiece piece as text bytes: ▁ is a space, &lt;0xAB&gt; the byte AB (byte fallback), &lt;…&gt; others are control pieces.</summary>
    private static byte[]? PieceBytes(string piece, bool byteFallback)
    {
        if (byteFallback && piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
            return [b];
        if (piece.Length > 2 && piece[0] == '<' && piece[^1] == '>')
            return null;                                                                       // <unk>, <s>, </s>, <pad>
        return Encoding.UTF8.GetBytes(piece.Replace('\u2581', ' '));
    }
}
