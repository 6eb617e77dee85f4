using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Gear.AI.Compression.Cuda;

namespace Gear.AI;

/// <summary>
/// The device (a GPU, or the host for CPU models) could not give a tensor the memory it asked for. The work that asked
/// for it stopped and gave back what it held; the model and its other sequences go on.
/// </summary>
public sealed partial class DeviceOutOfMemoryException : GearException
{
    /// <summary>Creates the exception with the sizes involved (null where the device did not say).</summary>
    public DeviceOutOfMemoryException(string device, long? requestedBytes, long? freeBytes, long? totalBytes, Exception? innerException = null)
        : base(Describe(device, requestedBytes, freeBytes, totalBytes), innerException)
    {
        Device = device;
        RequestedBytes = requestedBytes;
        FreeBytes = freeBytes;
        TotalBytes = totalBytes;
    }

    /// <summary>The device that ran out, e.g. <c>cuda:0</c> or <c>cpu</c>.</summary>
    public string Device { get; }

    /// <summary>The allocation that did not fit, in bytes.</summary>
    public long? RequestedBytes { get; }

    /// <summary>Bytes free on the device when it failed.</summary>
    public long? FreeBytes { get; }

    /// <summary>The device's memory, in bytes.</summary>
    public long? TotalBytes { get; }

    /// <summary>Whether <paramref name="error"/> is libtorch reporting that an allocation failed (CUDA or host).</summary>
    public static bool IsOutOfMemory(Exception error) =>
        error is DeviceOutOfMemoryException ||
        error is ExternalException && (error.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase) ||
                                       error.Message.Contains("DefaultCPUAllocator", StringComparison.Ordinal));

    /// <summary>
    /// <paramref name="error"/> as a <see cref="DeviceOutOfMemoryException"/> when it is libtorch's out-of-memory error,
    /// with the sizes its message gives (for CUDA, the device's free memory from the driver where the message has none);
    /// otherwise <paramref name="error"/> itself.
    /// </summary>
    public static Exception Translate(Exception error, string device)
    {
        ArgumentNullException.ThrowIfNull(error);
        if (error is DeviceOutOfMemoryException || !IsOutOfMemory(error))
            return error;
        string message = error.Message;
        long? requested = Size(RequestedPattern().Match(message));
        var capacity = CapacityPattern().Match(message);
        long? total = capacity.Success ? Size(capacity.Groups["total"].Value, capacity.Groups["totalUnit"].Value) : null;
        long? free = capacity.Success ? Size(capacity.Groups["free"].Value, capacity.Groups["freeUnit"].Value) : null;
        if (free is null && device.StartsWith("cuda", StringComparison.Ordinal))
        {
            try
            {
                int index = device.IndexOf(':') is int colon and > 0 ? int.Parse(device[(colon + 1)..], CultureInfo.InvariantCulture) : 0;
                (free, total) = CudaDriver.MemoryInfo(index);
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or GearException or FormatException or OverflowException)
            {
                // The driver's figures are a courtesy; the error stands without them.
            }
        }
        return new DeviceOutOfMemoryException(device, requested, free, total, error);
    }

    private static string Describe(string device, long? requested, long? free, long? total)
    {
        string asked = requested is { } r ? $"an allocation of {Bytes(r)}" : "an allocation";
        string room = (free, total) switch
        {
            ({ } f, { } t) => $" with {Bytes(f)} free of {Bytes(t)}",
            ({ } f, null) => $" with {Bytes(f)} free",
            _ => "",
        };
        return $"The device {device} ran out of memory: {asked} did not fit{room}. The request that needed it was stopped and its memory " +
               "given back; other requests go on. Leave more room beside the cache (a smaller GearChatClientOptions.CacheBudgetBytes), " +
               "feed fewer prompt tokens per step (MaxPrefillTokensPerStep), run fewer sequences at once (MaxConcurrentSequences), " +
               "use a compressed cache kind or fewer bits, or send a shorter prompt.";
    }

    private static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.00} GiB ({bytes:N0} bytes)",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.00} MiB ({bytes:N0} bytes)",
        _ => $"{bytes:N0} bytes",
    };

    private static long? Size(Match match) => match.Success ? Size(match.Groups["size"].Value, match.Groups["unit"].Value) : null;

    private static long? Size(string number, string unit)
    {
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
            return null;
        double scale = unit switch
        {
            "KiB" => 1L << 10,
            "MiB" => 1L << 20,
            "GiB" => 1L << 30,
            "TiB" => 1L << 40,
            _ => 1,
        };
        return (long)Math.Round(value * scale);
    }

    // CUDA: "Tried to allocate 20.00 MiB."; host: "you tried to allocate 1125899906842624 bytes."
    [GeneratedRegex(@"[Tt]ried to allocate (?<size>[0-9.]+) ?(?<unit>bytes|B|KiB|MiB|GiB|TiB)")]
    private static partial Regex RequestedPattern();

    // CUDA: "GPU 0 has a total capacity of 79.19 GiB of which 3.06 MiB is free."
    [GeneratedRegex(@"total capacity of (?<total>[0-9.]+) ?(?<totalUnit>bytes|B|KiB|MiB|GiB|TiB) of which (?<free>[0-9.]+) ?(?<freeUnit>bytes|B|KiB|MiB|GiB|TiB) is free")]
    private static partial Regex CapacityPattern();
}
