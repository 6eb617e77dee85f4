using System.Text;
using Gear.AI.Llama;
using Gear.AI.Llama.Chat;
using Gear.AI.Llama.Model;
using Gear.AI.Llama.Tokenization;
using Gear.AI.Llama.Weights;
using static TorchSharp.torch;

namespace Gear.Bench;

/// <summary>
/// A runtime of a model shape (its <c>config.json</c>, no weights) with random weights, for serving runs through the
/// public client: the tokenizer is gear-tiny's SentencePiece model grown to the shape's vocabulary (the extra pieces are
/// placeholders no text produces), so every id the random model picks decodes to text. For speed and memory only.
/// </summary>
internal static class ShapeRuntime
{
    public static LlamaRuntime Load(string shapeConfig, int contextTokens, string device, ScalarType dtype)
    {
        string shapeDirectory = Path.GetDirectoryName(Path.GetFullPath(shapeConfig))!;
        var config = LlamaConfig.Load(shapeDirectory);
        // Long enough for the run's prompts and answers (random weights have no trained context length).
        config = config with { MaxPositionEmbeddings = Math.Max(config.MaxPositionEmbeddings, contextTokens) };
        var tokenizer = GrownTokenizer(ModelLocator.Resolve("gear-tiny"), config.VocabSize);
        var target = TorchSharp.torch.device(device);
        var model = LlamaModel.FromWeights(config, LlamaWeights.Random(config, target, dtype), target, dtype);
        return LlamaRuntime.Create(shapeDirectory, model, tokenizer, ChatTemplate.For(tokenizer));
    }

    /// <summary>
    /// The SentencePiece model of <paramref name="modelDirectory"/> with placeholder pieces appended up to
    /// <paramref name="vocabSize"/>: in protobuf a repeated field may be continued anywhere, so the extra
    /// <c>ModelProto.pieces</c> entries (field 1: piece, score, type NORMAL) go at the end of the file.
    /// </summary>
    private static LlamaTextTokenizer GrownTokenizer(string modelDirectory, int vocabSize)
    {
        int have = CountPieces(modelDirectory);
        string directory = Directory.CreateTempSubdirectory("gear-shape-tokenizer-").FullName;
        using (var output = File.Create(Path.Combine(directory, "tokenizer.model")))
        {
            output.Write(File.ReadAllBytes(Path.Combine(modelDirectory, "tokenizer.model")));
            for (int id = have; id < vocabSize; id++)
            {
                var piece = Encoding.UTF8.GetBytes($"⟨{id}⟩");
                var entry = new MemoryStream();
                entry.WriteByte(0x0A);                                  // piece: field 1, length-delimited
                WriteVarint(entry, piece.Length);
                entry.Write(piece);
                entry.WriteByte(0x15);                                  // score: field 2, fixed32
                entry.Write(BitConverter.GetBytes(-1e6f));
                entry.WriteByte(0x18);                                  // type: field 3, varint (1 = NORMAL)
                entry.WriteByte(1);
                output.WriteByte(0x0A);                                 // ModelProto.pieces: field 1, length-delimited
                WriteVarint(output, (int)entry.Length);
                entry.WriteTo(output);
            }
        }
        foreach (var file in new[] { "tokenizer_config.json", "generation_config.json" })
            if (File.Exists(Path.Combine(modelDirectory, file)))
                File.Copy(Path.Combine(modelDirectory, file), Path.Combine(directory, file));
        try
        {
            return LlamaTextTokenizer.Load(directory);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>Pieces in the SentencePiece model.</summary>
    private static int CountPieces(string modelDirectory)
    {
        using var stream = File.OpenRead(Path.Combine(modelDirectory, "tokenizer.model"));
        var sp = Microsoft.ML.Tokenizers.LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
        return sp.Vocabulary.Count;
    }

    private static void WriteVarint(Stream stream, int value)
    {
        uint v = (uint)value;
        while (v >= 0x80)
        {
            stream.WriteByte((byte)(v | 0x80));
            v >>= 7;
        }
        stream.WriteByte((byte)v);
    }
}
