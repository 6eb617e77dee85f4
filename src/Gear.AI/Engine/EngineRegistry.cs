namespace Gear.AI.Engine;

/// <summary>
/// The process's engines, one per loaded model: clients over the same model directory, device and chat template (or over
/// the same <see cref="Llama.LlamaRuntime"/> instance) share one engine, so their requests batch together and the weights
/// are loaded once. Reference-counted: the last client to leave stops the engine (and unloads a model it loaded).
/// </summary>
internal static class EngineRegistry
{
    private static readonly object Gate = new();
    private static readonly Dictionary<object, Entry> Engines = [];

    private sealed class Entry(GearEngine engine)
    {
        public GearEngine Engine { get; } = engine;
        public int Clients { get; set; }
    }

    /// <summary>The engine for <paramref name="key"/>, made by <paramref name="create"/> if there is none; the caller must <see cref="Release"/> it.</summary>
    public static GearEngine Acquire(object key, Func<GearEngine> create)
    {
        lock (Gate)
        {
            if (!Engines.TryGetValue(key, out var entry))
                Engines[key] = entry = new Entry(create());
            entry.Clients++;
            return entry.Engine;
        }
    }

    /// <summary>Gives back one client's hold on <paramref name="engine"/>; the last one stops it.</summary>
    public static void Release(GearEngine engine)
    {
        GearEngine? stop = null;
        lock (Gate)
        {
            foreach (var (key, entry) in Engines)
            {
                if (entry.Engine != engine)
                    continue;
                if (--entry.Clients == 0)
                {
                    Engines.Remove(key);
                    stop = engine;
                }
                break;
            }
        }
        stop?.Dispose();
    }

    /// <summary>Engines running now (tests).</summary>
    internal static int Count
    {
        get
        {
            lock (Gate)
                return Engines.Count;
        }
    }
}
