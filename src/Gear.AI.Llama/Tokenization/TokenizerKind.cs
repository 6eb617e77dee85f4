namespace Gear.AI.Llama.Tokenization;

/// <summary>Tokenizer families.</summary>
public enum TokenizerKind
{
    /// <summary>SentencePiece BPE with byte fallback (Llama 2, TinyLlama).</summary>
    SentencePiece,

    /// <summary>Byte-level BPE in tiktoken form (Llama 3).</summary>
    Tiktoken,
}
