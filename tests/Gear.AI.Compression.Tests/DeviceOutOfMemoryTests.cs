using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Gear.AI.Compression.Tests;

/// <summary>
/// libtorch's out-of-memory errors become a <see cref="DeviceOutOfMemoryException"/> that names the device, the bytes
/// asked for and (for CUDA) the bytes free; anything else passes through unchanged. The engine's handling of one in
/// the middle of a request is checked on the GPU machine (gpu-selftest's out_of_memory_mid_request row).
/// </summary>
public class DeviceOutOfMemoryTests
{
    [Fact]
    public void HostAllocationTooLargeForTheMachine_BecomesDeviceOutOfMemory_WithTheBytesAskedFor()
    {
        const long petabyte = 1L << 50;                                              // far beyond any CI machine's memory and swap
        var error = Assert.ThrowsAny<ExternalException>(() => empty(petabyte, dtype: ScalarType.Byte));
        Assert.True(DeviceOutOfMemoryException.IsOutOfMemory(error), error.Message);

        var translated = Assert.IsType<DeviceOutOfMemoryException>(DeviceOutOfMemoryException.Translate(error, "cpu"));
        Assert.Equal("cpu", translated.Device);
        Assert.Equal(petabyte, translated.RequestedBytes);
        Assert.Same(error, translated.InnerException);
        Assert.Contains("1,125,899,906,842,624 bytes", translated.Message);
        Assert.Contains("MaxPrefillTokensPerStep", translated.Message);
    }

    [Fact]
    public void CudaMessage_GivesTheBytesAskedFor_Free_AndTotal()
    {
        // The caching allocator's message, as PyTorch 2.x words it.
        var error = new ExternalException(
            "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.19 GiB of which 3.06 MiB is free. " +
            "Including non-PyTorch memory, this process has 79.17 GiB memory in use. Of the allocated memory 78.50 GiB is allocated by " +
            "PyTorch, and 100.44 MiB is reserved by PyTorch but unallocated.");

        var translated = Assert.IsType<DeviceOutOfMemoryException>(DeviceOutOfMemoryException.Translate(error, "cuda:0"));

        Assert.Equal(20L << 20, translated.RequestedBytes);
        Assert.Equal((long)Math.Round(3.06 * (1 << 20)), translated.FreeBytes);
        Assert.Equal((long)Math.Round(79.19 * (1L << 30)), translated.TotalBytes);
        Assert.StartsWith("The device cuda:0 ran out of memory: an allocation of 20.00 MiB (20,971,520 bytes) did not fit with 3.06 MiB", translated.Message);
        Assert.IsAssignableFrom<GearException>(translated);
    }

    [Fact]
    public void OtherErrors_PassThroughUnchanged()
    {
        var shape = Assert.ThrowsAny<ExternalException>(() =>
        {
            using var a = zeros(2, 3);
            using var b = a.reshape(7);
        });
        Assert.False(DeviceOutOfMemoryException.IsOutOfMemory(shape));
        Assert.Same(shape, DeviceOutOfMemoryException.Translate(shape, "cpu"));

        var managed = new InvalidOperationException("out of memory in a message that is not libtorch's");
        Assert.Same(managed, DeviceOutOfMemoryException.Translate(managed, "cpu"));
    }
}
