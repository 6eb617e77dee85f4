using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>Raw access to the memory of contiguous tensors (the fused kernels), and copies to a device that do not wait for it.</summary>
internal static unsafe class TensorMemory
{
    // The export TorchSharp's own TensorAccessor reads: the address of the tensor's first element
    // (storage offset included). TorchSharp has already loaded the library by the time a tensor exists.
    [DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_data(IntPtr handle);

    /// <summary>The first element of <paramref name="tensor"/>, which must be a contiguous CPU tensor of <typeparamref name="T"/>-sized elements.</summary>
    public static T* Pointer<T>(Tensor tensor) where T : unmanaged
    {
        if (tensor.ElementSize != sizeof(T))
            throw new InvalidOperationException($"Expected {sizeof(T)}-byte elements, got {tensor.dtype}.");
        return (T*)Address(tensor);
    }

    /// <summary>The address of a contiguous tensor's first element on its own device (a device pointer for CUDA tensors).</summary>
    /// <param name="tensor">The tensor.</param>
    /// <param name="contiguous">True when the caller knows the tensor is contiguous (made by <c>empty</c>, or checked): skips the check's native call.</param>
    public static IntPtr DeviceAddress(Tensor tensor, bool contiguous = false)
    {
        if (!contiguous && !tensor.is_contiguous())
            throw new InvalidOperationException($"Expected a contiguous tensor, got {tensor.dtype} [{string.Join(", ", tensor.shape)}].");
        return THSTensor_data(tensor.Handle);
    }

    /// <summary>
    /// A copy of the CPU tensor <paramref name="cpu"/> on <paramref name="device"/>. To CUDA it goes through pinned memory
    /// without blocking: a plain copy from pageable memory waits for every kernel queued before it, and a decode step's
    /// compressions made three such copies a layer, so the host could not queue the next layer's work ahead of the
    /// device (PyTorch's pinned-memory cache keeps the staging block until the copy has run).
    /// </summary>
    public static Tensor ToDevice(Tensor cpu, Device device)
    {
        if (device.type != DeviceType.CUDA)
            return cpu.to(device);
        using var pinned = cpu.pin_memory();
        return pinned.to(device, non_blocking: true);
    }

    /// <summary>The first element of a contiguous CPU tensor of any element type.</summary>
    public static void* Address(Tensor tensor)
    {
        if (tensor.device_type != DeviceType.CPU || !tensor.is_contiguous())
            throw new InvalidOperationException($"Expected a contiguous CPU tensor, got {tensor.dtype} on {tensor.device}.");
        return (void*)THSTensor_data(tensor.Handle);
    }

    /// <summary>
    /// The first element of a CPU tensor [H, rows, D] whose rows are dense (a narrow of a larger buffer, or contiguous):
    /// row t of slice h at h·stride(0) + t·D elements.
    /// </summary>
    public static void* RowsAddress(Tensor tensor)
    {
        if (tensor.device_type != DeviceType.CPU || tensor.dim() != 3 || tensor.stride(2) != 1 || (tensor.shape[1] > 1 && tensor.stride(1) != tensor.shape[2]))
            throw new InvalidOperationException($"Expected a CPU tensor [H, rows, D] with dense rows, got {tensor.dtype} [{string.Join(", ", tensor.shape)}] on {tensor.device}.");
        return (void*)THSTensor_data(tensor.Handle);
    }

    /// <summary>
    /// Packed keys and values [N, H, D] on the CPU whose rows of D are dense (views of a projection, any strides above):
    /// where row (t, h) of each starts, for writes without tensor operations.
    /// </summary>
    internal readonly struct PackedRows(byte* keys, byte* values, long keyStride0, long keyStride1, long valueStride0, long valueStride1, ScalarType type)
    {
        /// <summary>The rows of <paramref name="keys"/> and <paramref name="values"/>, or null when they are not CPU float tensors with dense rows.</summary>
        public static PackedRows? Of(Tensor keys, Tensor values)
        {
            if (keys.device_type != DeviceType.CPU || values.device_type != DeviceType.CPU || keys.dtype != values.dtype
                || keys.dtype is not (ScalarType.Float32 or ScalarType.Float16))
                return null;
            var ks = keys.stride();
            var vs = values.stride();
            if (ks[2] != 1 || vs[2] != 1)
                return null;
            return new PackedRows((byte*)THSTensor_data(keys.Handle), (byte*)THSTensor_data(values.Handle), ks[0], ks[1], vs[0], vs[1], keys.dtype);
        }

        public ScalarType Type => type;

        private int ElementSize => type == ScalarType.Float32 ? 4 : 2;

        public byte* Key(long t, long h) => keys + (t * keyStride0 + h * keyStride1) * ElementSize;

        public byte* Value(long t, long h) => values + (t * valueStride0 + h * valueStride1) * ElementSize;
    }
}
