using System.Text;
using Gear.AI.Llama.Model;
using Gear.AI.Llama.Tokenization;
using Gear.AI.Llama.Weights;

namespace Gear.AI.Llama.Tests;

/// <summary>Broken files end in a <see cref="ModelLoadException"/> naming the file and the problem.</summary>
public sealed class MalformedCheckpointTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("gear-malformed-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A copy of stories260K in a temp dir, with the single safetensors file replaced by <paramref name="bytes"/>.</summary>
    private string ModelWith(byte[]? safetensors = null, string? config = null, bool tokenizer = true)
    {
        foreach (var file in Directory.GetFiles(TestModels.StoriesDir))
            File.Copy(file, Path.Combine(_dir, Path.GetFileName(file)), overwrite: true);
        if (safetensors is not null)
            File.WriteAllBytes(Path.Combine(_dir, "model.safetensors"), safetensors);
        if (config is not null)
            File.WriteAllText(Path.Combine(_dir, "config.json"), config);
        if (!tokenizer)
            File.Delete(Path.Combine(_dir, "tokenizer.model"));
        return _dir;
    }

    private static byte[] Original => File.ReadAllBytes(Path.Combine(TestModels.StoriesDir, "model.safetensors"));

    private static byte[] WithHeader(string header, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        return [.. BitConverter.GetBytes((ulong)h.Length), .. h, .. data];
    }

    private static string HeaderOf(byte[] file) => Encoding.UTF8.GetString(file, 8, (int)BitConverter.ToUInt64(file, 0));

    private static byte[] DataOf(byte[] file) => file[(8 + (int)BitConverter.ToUInt64(file, 0))..];

    private ModelLoadException Fails(string dir) => Assert.Throws<ModelLoadException>(() => LlamaModel.Load(dir));

    [Fact]
    public void Load_TruncatedFile_SaysTruncated()
    {
        var e = Fails(ModelWith(Original[..(Original.Length / 2)]));
        Assert.EndsWith("model.safetensors", e.FilePath);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void Load_FileShorterThanLengthPrefix_SaysTruncated() =>
        Assert.Contains("truncated", Fails(ModelWith([1, 2, 3])).Message);

    [Fact]
    public void Load_HeaderLengthBeyondFile_SaysSo()
    {
        var bytes = Original;
        BitConverter.GetBytes((ulong)bytes.Length).CopyTo(bytes, 0);
        Assert.Contains("runs past the end of the file", Fails(ModelWith(bytes)).Message);
    }

    [Fact]
    public void Load_HugeHeaderLength_RejectedByFormatLimit()
    {
        var bytes = Original;
        BitConverter.GetBytes(ulong.MaxValue - 5).CopyTo(bytes, 0);
        Assert.Contains("limit", Fails(ModelWith(bytes)).Message);
    }

    [Fact]
    public void Load_HeaderNotJson_SaysSo() =>
        Assert.Contains("not valid JSON", Fails(ModelWith(WithHeader("{\"a\": [1,", DataOf(Original)))).Message);

    [Fact]
    public void Load_DataOffsetsOutOfRange_SaysSo()
    {
        string header = HeaderOf(Original).Replace("\"data_offsets\":[0,", "\"data_offsets\":[999999999,");
        var bytes = WithHeader(header, DataOf(Original));
        var e = Fails(ModelWith(bytes));
        Assert.True(e.Message.Contains("outside") || e.Message.Contains("end before"), e.Message);
    }

    [Fact]
    public void Load_OverlappingTensors_SaysOverlap()
    {
        var file = SafetensorsFile.Open(Path.Combine(TestModels.StoriesDir, "model.safetensors"));
        var a = file.Entries["model.norm.weight"];
        var b = file.Entries["model.layers.0.input_layernorm.weight"];
        string header = $"{{\"x\":{{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[0,256]}},\"y\":{{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[128,384]}}}}";
        var e = Fails(ModelWith(WithHeader(header, new byte[512])));
        Assert.Contains("overlap", e.Message);
        Assert.True(a.Length > 0 && b.Length > 0);
    }

    [Fact]
    public void Load_ShapeOverflow_Rejected()
    {
        string header = "{\"x\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],\"data_offsets\":[0,4]}}";
        Assert.Contains("overflows", Fails(ModelWith(WithHeader(header, new byte[4]))).Message);
    }

    [Fact]
    public void Load_ShapeNotMatchingOffsets_SaysBytes()
    {
        string header = "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}";
        Assert.Contains("needs 12 bytes", Fails(ModelWith(WithHeader(header, new byte[8]))).Message);
    }

    [Fact]
    public void Load_WrongDtype_NamesTensor()
    {
        string header = HeaderOf(Original);
        int at = header.IndexOf("\"model.norm.weight\"", StringComparison.Ordinal);
        int dtype = header.IndexOf("\"F32\"", at, StringComparison.Ordinal);
        header = header[..dtype] + "\"I32\"" + header[(dtype + 5)..];
        var e = Fails(ModelWith(WithHeader(header, DataOf(Original))));
        Assert.Contains("model.norm.weight", e.Message);
        Assert.Contains("I32", e.Message);
    }

    [Fact]
    public void Load_ShapeNotMatchingConfig_NamesBoth()
    {
        string config = File.ReadAllText(Path.Combine(TestModels.StoriesDir, "config.json")).Replace("\"intermediate_size\": 172", "\"intermediate_size\": 170");
        var e = Fails(ModelWith(config: config));
        Assert.Contains("mlp", e.Message);
        Assert.Contains("config.json implies", e.Message);
    }

    [Fact]
    public void Load_MissingTensor_NamesIt()
    {
        string config = File.ReadAllText(Path.Combine(TestModels.StoriesDir, "config.json")).Replace("\"num_hidden_layers\": 5", "\"num_hidden_layers\": 6");
        Assert.Contains("'model.layers.5.", Fails(ModelWith(config: config)).Message);
    }

    [Fact]
    public void Load_SurpriseTensor_NamesIt()
    {
        string config = File.ReadAllText(Path.Combine(TestModels.StoriesDir, "config.json")).Replace("\"num_hidden_layers\": 5", "\"num_hidden_layers\": 4");
        Assert.Contains("unexpected tensor 'model.layers.4.", Fails(ModelWith(config: config)).Message);
    }

    [Theory]
    [InlineData("\"hidden_size\": 64,", "", "required field 'hidden_size' is missing")]
    [InlineData("\"hidden_size\": 64", "\"hidden_size\": \"wide\"", "field 'hidden_size' must be an integer")]
    [InlineData("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3", "multiple of num_key_value_heads")]
    [InlineData("\"vocab_size\": 512", "\"vocab_size\": -1", "must be a positive integer")]
    [InlineData("\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2}", "'yarn' is not supported")]
    public void LoadConfig_InvalidField_NamesIt(string find, string replace, string message)
    {
        string config = File.ReadAllText(Path.Combine(TestModels.StoriesDir, "config.json")).Replace(find, replace);
        var e = Assert.Throws<ModelLoadException>(() => LlamaConfig.Load(ModelWith(config: config)));
        Assert.EndsWith("config.json", e.FilePath);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void LoadConfig_Missing_SaysWhereToPoint()
    {
        File.Delete(Path.Combine(ModelWith(), "config.json"));
        Assert.Contains("config.json not found", Assert.Throws<ModelLoadException>(() => LlamaConfig.Load(_dir)).Message);
    }

    [Fact]
    public void LoadTokenizer_Missing_SaysSo() =>
        Assert.Contains("no tokenizer.model or tokenizer.json", Assert.Throws<ModelLoadException>(() => LlamaTextTokenizer.Load(ModelWith(tokenizer: false))).Message);

    [Fact]
    public void LoadTokenizer_Garbage_SaysNotValid()
    {
        File.WriteAllBytes(Path.Combine(ModelWith(), "tokenizer.model"), [0xFF, 0x00, 0x13, 0x37, 0x42]);
        Assert.Contains("not a valid SentencePiece model", Assert.Throws<ModelLoadException>(() => LlamaTextTokenizer.Load(_dir)).Message);
    }

    [Fact]
    public void LoadSharded_IndexNamesMissingShard_NamesFile()
    {
        foreach (var file in Directory.GetFiles(TestModels.GearTinyDir))
            File.Copy(file, Path.Combine(_dir, Path.GetFileName(file)), overwrite: true);
        File.Delete(Path.Combine(_dir, "model-00002-of-00003.safetensors"));
        var e = Assert.Throws<ModelLoadException>(() => LlamaModel.Load(_dir));
        Assert.EndsWith("model-00002-of-00003.safetensors", e.FilePath);
    }
}

public class LoadProgressTests
{
    private sealed class Recorder : IProgress<Weights.ModelLoadProgress>
    {
        public List<Weights.ModelLoadProgress> Reports { get; } = [];
        public void Report(Weights.ModelLoadProgress value) => Reports.Add(value);
    }

    [Fact]
    public void Load_ShardedCheckpoint_ReportsEveryTensorUpToTheTotal()
    {
        var recorder = new Recorder();
        using var model = Model.LlamaModel.Load(TestModels.GearTinyDir, new Model.ModelLoadOptions { Progress = recorder });
        Assert.NotEmpty(recorder.Reports);
        var last = recorder.Reports[^1];
        Assert.Equal(last.TensorsTotal, last.TensorsLoaded);
        Assert.Equal(last.BytesTotal, last.BytesLoaded);
        Assert.Equal(25_175_808, last.BytesTotal); // model.safetensors.index.json metadata total_size
        Assert.True(recorder.Reports.Select(r => r.BytesLoaded).SequenceEqual(recorder.Reports.Select(r => r.BytesLoaded).Order()));
    }
}
