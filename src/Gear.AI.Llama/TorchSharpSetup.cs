using TorchSharp;

namespace Gear.AI.Llama;

/// <summary>
/// Checks that TorchSharp can load its native libraries before the first model is built, and says what an application
/// must reference when it cannot (TorchSharp's own message names only the CPU package of the build's OS).
/// </summary>
internal static class TorchSharpSetup
{
    private static readonly Lazy<Exception?> s_failure = new(Probe);

    /// <exception cref="GearException">libtorch could not be loaded; the message says which package to add.</exception>
    public static void EnsureLoaded()
    {
        if (s_failure.Value is { } e)
            throw new GearException(
                "TorchSharp could not load libtorch, the native library Gear.AI runs the model on. Add one native package to the application: " +
                "libtorch-cpu-linux-x64, libtorch-cpu-win-x64 or libtorch-cpu-osx-arm64 (all version 2.10.0) for the CPU, or " +
                "TorchSharp-cuda-windows / TorchSharp-cuda-linux (0.107.0) for CUDA (README, Install). On Linux with an older libstdc++ " +
                "(Debian 12, Ubuntu 22.04) the Gear.AI packages' build step must have run: see README, Troubleshooting. " +
                $"TorchSharp said: {Innermost(e).Message}", e);
    }

    private static Exception? Probe()
    {
        try
        {
            torch.InitializeDeviceType(DeviceType.CPU);
            return null;
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or NotSupportedException or EntryPointNotFoundException or BadImageFormatException)
        {
            return e;
        }
    }

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is { } inner)
            e = inner;
        return e;
    }
}
