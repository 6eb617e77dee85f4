using System.Reflection;
using System.Runtime.InteropServices;

namespace Gear.AI.Compression.Cuda;

/// <summary>
/// The few CUDA driver API calls the fused decode kernels need (module load, function lookup, launch),
/// bound to the driver the GPU build of libtorch already uses: libcuda.so.1 on Linux, nvcuda.dll on Windows.
/// </summary>
internal static unsafe class CudaDriver
{
    private const string Library = "gear-cuda-driver";

    private static volatile bool s_initialized;

    static CudaDriver() => NativeLibrary.SetDllImportResolver(typeof(CudaDriver).Assembly, Resolve);

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (name != Library)
            return IntPtr.Zero;                                                    // everything else: default probing
        foreach (var candidate in OperatingSystem.IsWindows() ? new[] { "nvcuda.dll" } : ["libcuda.so.1", "libcuda.so"])
            if (NativeLibrary.TryLoad(candidate, assembly, path, out var handle))
                return handle;
        throw new DllNotFoundException("The CUDA driver (libcuda.so.1 / nvcuda.dll) was not found; install the NVIDIA driver.");
    }

    [DllImport(Library)] private static extern int cuInit(uint flags);
    [DllImport(Library)] private static extern int cuCtxGetCurrent(out IntPtr context);
    [DllImport(Library)] private static extern int cuCtxSetCurrent(IntPtr context);
    [DllImport(Library)] private static extern int cuDevicePrimaryCtxRetain(out IntPtr context, int device);
    [DllImport(Library)] private static extern int cuModuleLoadData(out IntPtr module, byte* image);
    [DllImport(Library)] private static extern int cuModuleGetFunction(out IntPtr function, IntPtr module, [MarshalAs(UnmanagedType.LPStr)] string name);
    [DllImport(Library)] private static extern int cuGetErrorString(int error, out IntPtr message);
    [DllImport(Library)] private static extern int cuProfilerStart();
    [DllImport(Library)] private static extern int cuProfilerStop();
    [DllImport(Library)] private static extern int cuMemGetInfo_v2(out nuint free, out nuint total);

    [DllImport(Library)] private static extern int cuStreamCreate(out IntPtr stream, uint flags);
    [DllImport(Library)] private static extern int cuEventCreate(out IntPtr e, uint flags);
    [DllImport(Library)] private static extern int cuEventRecord(IntPtr e, IntPtr stream);
    [DllImport(Library)] private static extern int cuStreamWaitEvent(IntPtr stream, IntPtr e, uint flags);
    [DllImport(Library)] private static extern int cuEventSynchronize(IntPtr e);
    [DllImport(Library)] private static extern int cuEventElapsedTime(out float milliseconds, IntPtr start, IntPtr end);
    [DllImport(Library)] private static extern int cuEventDestroy_v2(IntPtr e);
    [DllImport(Library)] private static extern int cuEventQuery(IntPtr e);

    [DllImport(Library)]
    private static extern int cuLaunchKernel(IntPtr function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
                                             uint sharedBytes, IntPtr stream, void** parameters, void** extra);

    /// <summary>The context current on this thread, made current from the device's primary context (the one PyTorch uses) if none is.</summary>
    public static IntPtr CurrentContext(int device)
    {
        if (!s_initialized)
        {
            Check(cuInit(0), "cuInit");
            s_initialized = true;
        }
        Check(cuCtxGetCurrent(out var context), "cuCtxGetCurrent");
        if (context == IntPtr.Zero)
        {
            Check(cuDevicePrimaryCtxRetain(out context, device), "cuDevicePrimaryCtxRetain");
            Check(cuCtxSetCurrent(context), "cuCtxSetCurrent");
        }
        return context;
    }

    /// <summary>Free and total bytes of the device whose context is current on this thread.</summary>
    public static (long Free, long Total) MemoryInfo(int device)
    {
        CurrentContext(device);
        Check(cuMemGetInfo_v2(out var free, out var total), "cuMemGetInfo");
        return ((long)free, (long)total);
    }

    /// <summary>
    /// Marks the start or end of a region for a profiler started with collection off (Nsight Compute's
    /// <c>--profile-from-start off</c>); the bench uses it to capture exactly one decode step.
    /// </summary>
    public static void Profiler(bool on) => Check(on ? cuProfilerStart() : cuProfilerStop(), on ? "cuProfilerStart" : "cuProfilerStop");

    /// <summary>Loads a PTX module (NUL-terminated text) into the current context.</summary>
    public static IntPtr LoadModule(byte[] ptx)
    {
        fixed (byte* image = ptx)
        {
            Check(cuModuleLoadData(out var module, image), "cuModuleLoadData");
            return module;
        }
    }

    public static IntPtr Function(IntPtr module, string name)
    {
        Check(cuModuleGetFunction(out var function, module, name), $"cuModuleGetFunction({name})");
        return function;
    }

    /// <summary>
    /// Launches on the legacy default stream, the one TorchSharp's operations run on, so it is ordered with them; or on
    /// <paramref name="stream"/> (see <see cref="SideStream"/>).
    /// </summary>
    public static void Launch(IntPtr function, (uint X, uint Y) grid, uint block, uint sharedBytes, void** parameters, IntPtr stream = default) =>
        Check(cuLaunchKernel(function, grid.X, grid.Y, 1, block, 1, 1, sharedBytes, stream, parameters, null), "cuLaunchKernel");

    /// <summary>
    /// A second stream of the current context for small kernels that may run beside a large one on the legacy default
    /// stream (a non-blocking stream: it orders with the default stream only through <see cref="Fork"/> and
    /// <see cref="Join"/>), with the two events that fork and join it.
    /// </summary>
    internal sealed record SideStream(IntPtr Stream, IntPtr Forked, IntPtr Done)
    {
        /// <summary>Creates the stream and its events in the current context.</summary>
        public static SideStream Create()
        {
            const uint NonBlocking = 1, DisableTiming = 2;
            Check(cuStreamCreate(out var stream, NonBlocking), "cuStreamCreate");
            Check(cuEventCreate(out var forked, DisableTiming), "cuEventCreate");
            Check(cuEventCreate(out var done, DisableTiming), "cuEventCreate");
            return new SideStream(stream, forked, done);
        }

        /// <summary>Work launched on the stream after this waits for everything queued on the default stream so far.</summary>
        public void Fork()
        {
            Check(cuEventRecord(Forked, IntPtr.Zero), "cuEventRecord");
            Check(cuStreamWaitEvent(Stream, Forked, 0), "cuStreamWaitEvent");
        }

        /// <summary>Work queued on the default stream after this waits for everything launched on the stream so far.</summary>
        public void Join()
        {
            Check(cuEventRecord(Done, Stream), "cuEventRecord");
            Check(cuStreamWaitEvent(IntPtr.Zero, Done, 0), "cuStreamWaitEvent");
        }
    }

    /// <summary>
    /// Device-side time between marks on the legacy default stream: <see cref="Mark"/> records a timing event (no
    /// synchronization), <see cref="Intervals"/> waits for the last one and returns the milliseconds between neighbours.
    /// The bench uses it to see which decode steps the device spent longer on, without changing how the host runs ahead.
    /// </summary>
    internal sealed class Timeline : IDisposable
    {
        private readonly List<IntPtr> _events = [];

        /// <summary>At each mark, how many earlier marks the device had not reached yet (how far the host ran ahead).</summary>
        public List<int> Pending { get; } = [];

        public void Mark()
        {
            int pending = 0;
            for (int i = _events.Count - 1; i >= 0 && cuEventQuery(_events[i]) != 0; i--)
                pending++;
            Pending.Add(pending);
            Check(cuEventCreate(out var e, 0), "cuEventCreate");
            _events.Add(e);
            Check(cuEventRecord(e, IntPtr.Zero), "cuEventRecord");
        }

        public double[] Intervals()
        {
            if (_events.Count < 2)
                return [];
            Check(cuEventSynchronize(_events[^1]), "cuEventSynchronize");
            var intervals = new double[_events.Count - 1];
            for (int i = 0; i < intervals.Length; i++)
            {
                Check(cuEventElapsedTime(out float ms, _events[i], _events[i + 1]), "cuEventElapsedTime");
                intervals[i] = ms;
            }
            return intervals;
        }

        public void Dispose()
        {
            foreach (var e in _events)
                cuEventDestroy_v2(e);
            _events.Clear();
        }
    }

    private static void Check(int result, string call)
    {
        if (result == 0)
            return;
        string message = cuGetErrorString(result, out var text) == 0 && text != IntPtr.Zero ? Marshal.PtrToStringAnsi(text) ?? "" : "";
        throw new GearException($"CUDA driver call {call} failed with error {result} ({message}).");
    }
}
