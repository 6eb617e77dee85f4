using Gear.AI.Llama.Model;

namespace Gear.AI.Llama.Tests;

/// <summary>The bundled models, loaded once per test run (read-only, shared by tests).</summary>
internal static class TestModels
{
    private static readonly Lazy<LlamaModel> s_stories = new(() => LlamaModel.Load(StoriesDir));
    private static readonly Lazy<LlamaModel> s_gearTiny = new(() => LlamaModel.Load(GearTinyDir));

    public static string StoriesDir => ModelLocator.Resolve("stories260K");
    public static string GearTinyDir => ModelLocator.Resolve("gear-tiny");
    public static string FixturesDir => Path.Combine(RepoRoot, "tests", "fixtures");
    public static string RepoRoot => Path.GetFullPath(Path.Combine(ModelLocator.Resolve("stories260K"), "..", ".."));

    public static LlamaModel Stories => s_stories.Value;
    public static LlamaModel GearTiny => s_gearTiny.Value;

    public static float[] ReadFloats(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var result = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, result, 0, bytes.Length);
        return result;
    }
}
