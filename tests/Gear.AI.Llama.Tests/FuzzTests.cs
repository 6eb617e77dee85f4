using System.Diagnostics;
using System.Text;
using Gear.AI.Llama.Model;
using Gear.AI.Llama.Tokenization;
using Gear.AI.Llama.Weights;

namespace Gear.AI.Llama.Tests;

/// <summary>
/// Seeded random mutations of real checkpoint files: every case either loads or ends in a
/// <see cref="ModelLoadException"/> that names the file — never another exception type, a crash or a hang.
/// </summary>
public sealed class FuzzTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("gear-fuzz-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly byte[] Safetensors = File.ReadAllBytes(Path.Combine(TestModels.StoriesDir, "model.safetensors"));
    private static readonly string Config = File.ReadAllText(Path.Combine(TestModels.StoriesDir, "config.json"));
    private static readonly byte[] Tokenizer = File.ReadAllBytes(Path.Combine(TestModels.StoriesDir, "tokenizer.model"));

    /// <summary>One random edit: flip, overwrite, insert, delete, truncate, or splice interesting values.</summary>
    private static byte[] Mutate(byte[] input, Random rng, int focusLength)
    {
        var bytes = new List<byte>(input);
        int edits = rng.Next(1, 4);
        for (int e = 0; e < edits && bytes.Count > 0; e++)
        {
            int at = rng.Next(Math.Min(bytes.Count, focusLength));
            switch (rng.Next(7))
            {
                case 0: bytes[at] ^= (byte)(1 << rng.Next(8)); break;
                case 1: bytes[at] = (byte)rng.Next(256); break;
                case 2: bytes.Insert(at, (byte)rng.Next(256)); break;
                case 3: bytes.RemoveAt(at); break;
                case 4: bytes.RemoveRange(at, bytes.Count - at); break;
                case 5:
                    var digits = Encoding.ASCII.GetBytes(rng.Next(4) switch { 0 => "-1", 1 => "99999999999999999999", 2 => "4294967296", _ => "0" });
                    bytes.InsertRange(at, digits);
                    break;
                default:
                    var token = Encoding.ASCII.GetBytes(rng.Next(5) switch { 0 => "\"", 1 => "{", 2 => "]", 3 => ",", _ => "null" });
                    bytes.InsertRange(at, token);
                    break;
            }
        }
        return [.. bytes];
    }

    private static void Expect(Action load, int seed, string what)
    {
        try
        {
            load();
        }
        catch (ModelLoadException e)
        {
            Assert.False(string.IsNullOrWhiteSpace(e.FilePath), $"{what} case {seed}: no file named");
        }
        catch (Exception e)
        {
            Assert.Fail($"{what} case {seed}: {e.GetType().Name}: {e.Message}");
        }
    }

    [Fact]
    public void SafetensorsHeaderAndBody_3000Mutations_LoadOrModelLoadException()
    {
        string path = Path.Combine(_dir, "model.safetensors");
        int headerEnd = 8 + (int)BitConverter.ToUInt64(Safetensors, 0);
        var clock = Stopwatch.StartNew();
        for (int seed = 0; seed < 3000; seed++)
        {
            var rng = new Random(seed);
            // Mostly the length prefix and header; sometimes anywhere (body bytes, truncation).
            File.WriteAllBytes(path, Mutate(Safetensors, rng, rng.Next(4) == 0 ? Safetensors.Length : headerEnd));
            Expect(() =>
            {
                var file = SafetensorsFile.Open(path);
                foreach (var entry in file.Entries.Values)
                    file.Read(entry).Dispose();
            }, seed, "safetensors");
        }
        // A guard against a case that never ends, not a speed test: ~20 s alone, over 60 s beside the other test classes.
        Assert.True(clock.Elapsed < TimeSpan.FromMinutes(4), $"3000 cases took {clock.Elapsed}");
    }

    [Fact]
    public void ConfigJson_2000Mutations_ParseOrModelLoadException()
    {
        var original = Encoding.UTF8.GetBytes(Config);
        for (int seed = 0; seed < 2000; seed++)
        {
            var text = Encoding.UTF8.GetString(Mutate(original, new Random(seed), original.Length));
            Expect(() => LlamaConfig.Parse(text, "config.json"), seed, "config");
        }
    }

    [Fact]
    public void TokenizerModel_500Mutations_LoadOrModelLoadException()
    {
        foreach (var file in new[] { "tokenizer_config.json" })
            File.Copy(Path.Combine(TestModels.StoriesDir, file), Path.Combine(_dir, file), true);
        string path = Path.Combine(_dir, "tokenizer.model");
        for (int seed = 0; seed < 500; seed++)
        {
            File.WriteAllBytes(path, Mutate(Tokenizer, new Random(seed), Tokenizer.Length));
            Expect(() =>
            {
                var tokenizer = LlamaTextTokenizer.Load(_dir);
                tokenizer.Decode(tokenizer.Encode("Once upon a time"));
            }, seed, "tokenizer");
        }
    }

    [Fact]
    public void WholeModel_200MutatedHeadersAndConfigs_LoadOrModelLoadException()
    {
        foreach (var file in Directory.GetFiles(TestModels.StoriesDir))
            File.Copy(file, Path.Combine(_dir, Path.GetFileName(file)), true);
        int headerEnd = 8 + (int)BitConverter.ToUInt64(Safetensors, 0);
        var config = Encoding.UTF8.GetBytes(Config);
        for (int seed = 0; seed < 200; seed++)
        {
            var rng = new Random(10_000 + seed);
            File.WriteAllBytes(Path.Combine(_dir, "model.safetensors"), seed % 2 == 0 ? Mutate(Safetensors, rng, headerEnd) : Safetensors);
            File.WriteAllBytes(Path.Combine(_dir, "config.json"), seed % 2 == 1 ? Mutate(config, rng, config.Length) : config);
            Expect(() => LlamaModel.Load(_dir).Dispose(), seed, "model");
        }
    }
}
