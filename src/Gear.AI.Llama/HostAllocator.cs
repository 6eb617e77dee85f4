using System.Runtime.InteropServices;

namespace Gear.AI.Llama;

/// <summary>
/// The C allocator under libtorch's CPU tensors. glibc hands blocks above its mmap threshold (128 KiB, growing up to
/// 32 MiB) to the system on free and trims the heap's top, so a prompt chunk's activations are faulted in, zeroed by
/// the kernel and given back again on every chunk and layer. Keeping them in the process (threshold at its 32 MiB
/// maximum, no trimming, the heap grown 256 MiB at a time) is what <see cref="Model.ModelLoadOptions.KeepFreedHostMemory"/>
/// turns on: prefill on the CPU ran about 1.6 × faster on the 2-core machine the benchmarks name.
/// </summary>
internal static partial class HostAllocator
{
    private const int TrimThreshold = -1, TopPad = -2, MmapThreshold = -3;
    private static readonly Lazy<bool> s_kept = new(Keep);

    /// <summary>Keeps freed memory in the process (once per process); false where the C library is not glibc's.</summary>
    public static bool KeepFreedMemory() => s_kept.Value;

    private static bool Keep()
    {
        if (!OperatingSystem.IsLinux())
            return false;
        try
        {
            // mallopt returns 1 when it took the value, 0 when it refused it (e.g. a threshold above glibc's maximum).
            return (mallopt(MmapThreshold, 32 << 20) & mallopt(TrimThreshold, int.MaxValue) & mallopt(TopPad, 256 << 20)) == 1;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            return false;                                                      // musl and other C libraries without mallopt
        }
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int mallopt(int parameter, int value);
}
