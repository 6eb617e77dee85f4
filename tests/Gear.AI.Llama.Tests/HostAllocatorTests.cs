using Gear.AI.Llama;

namespace Gear.AI.Llama.Tests;

public sealed class HostAllocatorTests
{
    [Fact]
    public void KeepFreedMemory_IsTakenByGlibcOnLinux()
    {
        // The CI and dev machines are glibc Linux: every mallopt value must be accepted (a threshold above glibc's
        // maximum, or a wrong parameter code, is refused and would leave prefill paying page faults again).
        Assert.Equal(OperatingSystem.IsLinux(), HostAllocator.KeepFreedMemory());
    }
}
