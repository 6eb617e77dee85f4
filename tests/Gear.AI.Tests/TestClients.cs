using Gear.AI.Compression;
using Gear.AI.Llama;

namespace Gear.AI.Tests;

/// <summary>One loaded runtime per model for the whole run; each test makes its own client over it.</summary>
internal static class TestClients
{
    private static readonly Lazy<LlamaRuntime> s_stories = new(() => LlamaRuntime.Load(ModelLocator.Resolve("stories260K")));

    private static readonly Lazy<LlamaRuntime> s_gearTiny = new(() => LlamaRuntime.Load(ModelLocator.Resolve("gear-tiny")));

    public static LlamaRuntime Stories => s_stories.Value;

    public static LlamaRuntime GearTiny => s_gearTiny.Value;

    /// <summary>The checkout's root (the folder with Gear.AI.sln).</summary>
    public static string RepoRoot => Gear.Tests.Shared.Checkout.Root;

    public static GearChatClient Create(Action<GearChatClientOptions>? configure = null)
    {
        var options = new GearChatClientOptions { Model = Stories.Directory, Cache = CacheKind.Gear, Bits = 4 };
        configure?.Invoke(options);
        return new GearChatClient(Stories, options);
    }
}
