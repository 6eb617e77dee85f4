using System.Runtime.InteropServices;

namespace Gear.Bench;

/// <summary>
/// GPU memory in use, read from the device through NVML (no CUDA context needed). TorchSharp has no
/// allocator statistics; PyTorch's caching allocator keeps what it reserved, so "used" after a run is
/// the run's peak reservation.
/// </summary>
internal static partial class DeviceMemory
{
    [StructLayout(LayoutKind.Sequential)]
    private struct NvmlMemory
    {
        public ulong Total;
        public ulong Free;
        public ulong Used;
    }

    [LibraryImport("libnvidia-ml.so.1", EntryPoint = "nvmlInit_v2")]
    private static partial int Init();

    [LibraryImport("libnvidia-ml.so.1", EntryPoint = "nvmlDeviceGetHandleByIndex_v2")]
    private static partial int GetHandle(uint index, out IntPtr device);

    [LibraryImport("libnvidia-ml.so.1", EntryPoint = "nvmlDeviceGetMemoryInfo")]
    private static partial int GetMemoryInfo(IntPtr device, out NvmlMemory memory);

    private static IntPtr s_device;

    /// <summary>Bytes in use on GPU 0, or -1 when NVML is not there.</summary>
    public static long UsedBytes()
    {
        try
        {
            if (s_device == IntPtr.Zero && (Init() != 0 || GetHandle(0, out s_device) != 0))
                return -1;
            return GetMemoryInfo(s_device, out var m) == 0 ? (long)m.Used : -1;
        }
        catch (DllNotFoundException)
        {
            return -1;
        }
    }
}
