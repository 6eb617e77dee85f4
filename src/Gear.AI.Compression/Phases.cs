using System.Diagnostics;

namespace Gear.AI.Compression;

/// <summary>
/// Profiling points of decode attention and block compression, published as the <see cref="DiagnosticListener"/>
/// "Gear.AI.Phases": a profiler subscribes through <see cref="DiagnosticListener.AllListeners"/> and receives an event
/// named after each phase as it ends, on the thread that ran it (e.g. to synchronize the device and time the phase).
/// Nothing is done when no one listens.
/// </summary>
internal static class Phases
{
    /// <summary>The listener's name.</summary>
    public const string ListenerName = "Gear.AI.Phases";

    private static readonly DiagnosticListener Listener = new(ListenerName);

    /// <summary>Whether anyone listens (check before building a phase name).</summary>
    public static bool Enabled => Listener.IsEnabled();

    /// <summary>Reports the end of <paramref name="phase"/>.</summary>
    public static void End(string phase)
    {
        if (Listener.IsEnabled(phase))
            Listener.Write(phase, null);
    }
}
