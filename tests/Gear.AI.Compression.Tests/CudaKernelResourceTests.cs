using System.Security.Cryptography;
using System.Text;
using Gear.AI.Compression.Cuda;

namespace Gear.AI.Compression.Tests;

/// <summary>
/// The CUDA kernels run only on the GPU machine (gpu-selftest checks them against the tensor path there);
/// here CI checks that the shipped PTX is the build of the shipped source and declares every kernel C# launches.
/// </summary>
public class CudaKernelResourceTests
{
    private static string Ptx() => Encoding.ASCII.GetString(CudaKernels.Ptx()).TrimEnd('\0');

    [Fact]
    public void EmbeddedPtx_DeclaresEveryEntryPoint()
    {
        string ptx = Ptx();
        Assert.Contains(".target", ptx);
        foreach (string name in CudaKernels.EntryPoints)
            Assert.Contains($".entry {name}(", ptx);
    }

    [Fact]
    public void EmbeddedPtx_IsBuiltFromTheShippedSource()
    {
        // Cuda/gear_decode.ptx.sha256 records the hash of the .cu the PTX was compiled from; rebuild both together.
        string folder = Path.Combine(RepoRoot(), "src", "Gear.AI.Compression", "Cuda");
        string source = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(folder, "gear_decode.cu"))));
        string recorded = File.ReadAllText(Path.Combine(folder, "gear_decode.ptx.sha256")).Split(' ')[0].Trim();
        Assert.Equal(recorded, source);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Gear.AI.sln")))
                return dir.FullName;
        throw new DirectoryNotFoundException("Gear.AI.sln not found above the test output.");
    }
}
