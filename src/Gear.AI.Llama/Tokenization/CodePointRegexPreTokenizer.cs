using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Gear.AI.Llama.Tokenization;

/// <summary>
/// Splits text with a pre-tokenization pattern matched on whole code points, as the reference tokenizers (Rust and
/// JavaScript regex engines) do. .NET's regex sees UTF-16 code units, where each half of a surrogate pair is neither a
/// letter nor a digit: "𐀛i" would split after 𐀛 and "𝟙123" would count 𝟙 as no digit. So each character outside the
/// Basic Multilingual Plane is matched as one stand-in character of its class — a letter, a digit, or neither — and the
/// matches are mapped back to the original offsets. Text without surrogates is matched as it is.
/// </summary>
internal sealed class CodePointRegexPreTokenizer(Regex pattern) : PreTokenizer
{
    /// <summary>Stand-ins: none can take part in the pattern's contractions ('s, 't, …) or be whitespace.</summary>
    private const char Letter = 'ª', Digit = '0', Other = '¤';

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) =>
        string.IsNullOrEmpty(text) ? [] : Split(text);

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) =>
        text.IsEmpty ? [] : Split(text.ToString());

    private List<(int Offset, int Length)> Split(string text)
    {
        var spans = new List<(int, int)>();
        if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0)
        {
            foreach (var match in pattern.EnumerateMatches(text))
                spans.Add((match.Index, match.Length));
            return spans;
        }
        var stand = new char[text.Length];
        var start = new int[text.Length + 1];     // original offset of each stand-in character, and the end
        int n = 0;
        for (int i = 0; i < text.Length; n++)
        {
            start[n] = i;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                stand[n] = CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1])) switch
                {
                    UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                        or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Letter,
                    UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Digit,
                    _ => Other,
                };
                i += 2;
            }
            else
            {
                stand[n] = text[i];
                i++;
            }
        }
        start[n] = text.Length;
        foreach (var match in pattern.EnumerateMatches(stand.AsSpan(0, n)))
            spans.Add((start[match.Index], start[match.Index + match.Length] - start[match.Index]));
        return spans;
    }
}
