using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Cuda;

/// <summary>
/// Matrix products through cuBLAS, called directly: the cuBLAS that the CUDA build of libtorch already loaded
/// (libcublas.so.N on Linux, cublas64_N.dll with TorchSharp-cuda-windows), found at run time and never bundled. One handle
/// per model and thread of tensor work, launching on the legacy default stream like TorchSharp and the fused kernels.
/// </summary>
internal sealed unsafe class Cublas : IDisposable
{
    private static readonly string[] Candidates = OperatingSystem.IsWindows()
        ? ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"]
        : ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"];

    private static readonly Lazy<Api?> Library = new(Load);
    private static string? s_unavailable;

    private const int OpN = 0, OpT = 1, Compute32F = 68, GemmDefault = -1;

    private readonly Api _api;
    private IntPtr _handle;

    private Cublas(Api api, IntPtr handle)
    {
        _api = api;
        _handle = handle;
    }

    /// <summary>Why cuBLAS cannot be used, or null (after <see cref="TryCreate"/>).</summary>
    public static string? UnavailableReason => s_unavailable;

    /// <summary>A handle in the current context (see <see cref="CudaDriver.CurrentContext"/>), or null when cuBLAS is not loaded.</summary>
    public static Cublas? TryCreate()
    {
        if (Library.Value is not { } api)
            return null;
        int status = api.Create(out var handle);
        if (status != 0)
        {
            s_unavailable = $"cublasCreate failed with status {status}.";
            return null;
        }
        Check(api.SetStream(handle, IntPtr.Zero), "cublasSetStream");
        return new Cublas(api, handle);
    }

    /// <summary>cuBLAS's data type code for a tensor dtype (float32, float16, bfloat16), or -1.</summary>
    public static int DataType(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => 0,
        ScalarType.Float16 => 2,
        ScalarType.BFloat16 => 14,
        _ => -1,
    };

    /// <summary>
    /// y [rows, N] = x [rows, K] · wᵀ, row-major and contiguous: w [N, K] is a linear layer's weight. Products and sums in
    /// float32; x and w of <paramref name="inputType"/>, y of <paramref name="outputType"/> (cuBLAS data type codes,
    /// <see cref="DataType"/>).
    /// </summary>
    public void Linear(IntPtr x, IntPtr w, int inputType, IntPtr y, int outputType, int rows, int n, int k)
    {
        float alpha = 1f, beta = 0f;
        // Column-major, yᵀ [N, rows] = w [N, K] · xᵀ [K, rows]: w is wᵀ of a K×N column-major matrix, x a K×rows one.
        Check(_api.GemmEx(_handle, OpT, OpN, n, rows, k, &alpha, w, inputType, k, x, inputType, k, &beta, y, outputType, n, Compute32F, GemmDefault),
            "cublasGemmEx");
    }

    public void Dispose()
    {
        if (_handle == IntPtr.Zero)
            return;
        _api.Destroy(_handle);
        _handle = IntPtr.Zero;
    }

    private static void Check(int status, string call)
    {
        if (status != 0)
            throw new GearException($"{call} failed with cuBLAS status {status}.");
    }

    private static Api? Load()
    {
        foreach (var name in Candidates)
        {
            if (!NativeLibrary.TryLoad(name, out var library))
                continue;
            if (NativeLibrary.TryGetExport(library, "cublasCreate_v2", out var create) && NativeLibrary.TryGetExport(library, "cublasDestroy_v2", out var destroy)
                && NativeLibrary.TryGetExport(library, "cublasSetStream_v2", out var stream) && NativeLibrary.TryGetExport(library, "cublasGemmEx", out var gemm))
                return new Api(create, destroy, stream, gemm);
        }
        s_unavailable = $"cuBLAS was not found ({string.Join(", ", Candidates)}); it comes with the CUDA build of libtorch.";
        return null;
    }

    /// <summary>The four entry points used.</summary>
    private sealed class Api(IntPtr create, IntPtr destroy, IntPtr setStream, IntPtr gemmEx)
    {
        private readonly delegate* unmanaged<IntPtr*, int> _create = (delegate* unmanaged<IntPtr*, int>)create;
        private readonly delegate* unmanaged<IntPtr, int> _destroy = (delegate* unmanaged<IntPtr, int>)destroy;
        private readonly delegate* unmanaged<IntPtr, IntPtr, int> _setStream = (delegate* unmanaged<IntPtr, IntPtr, int>)setStream;
        private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, void*, IntPtr, int, int, IntPtr, int, int, void*, IntPtr, int, int, int, int, int> _gemmEx =
            (delegate* unmanaged<IntPtr, int, int, int, int, int, void*, IntPtr, int, int, IntPtr, int, int, void*, IntPtr, int, int, int, int, int>)gemmEx;

        public int Create(out IntPtr handle)
        {
            IntPtr h;
            int status = _create(&h);
            handle = h;
            return status;
        }

        public int Destroy(IntPtr handle) => _destroy(handle);

        public int SetStream(IntPtr handle, IntPtr stream) => _setStream(handle, stream);

        public int GemmEx(IntPtr handle, int transA, int transB, int m, int n, int k, void* alpha, IntPtr a, int aType, int lda,
                          IntPtr b, int bType, int ldb, void* beta, IntPtr c, int cType, int ldc, int computeType, int algo) =>
            _gemmEx(handle, transA, transB, m, n, k, alpha, a, aType, lda, b, bType, ldb, beta, c, cType, ldc, computeType, algo);
    }
}
