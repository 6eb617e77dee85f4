using System.Text;

namespace Gear.AI.Compression.Tests;

/// <summary>The build step of build/Gear.AI.TorchSharpLinux.targets, read back from the output.</summary>
public class TorchSharpLinuxCompatTests
{
    [Fact]
    public void OutputShim_GlibcxxVersion3432_IsMarkedWeak()
    {
        if (!OperatingSystem.IsLinux())
            return; // the step does nothing elsewhere
        var shims = Directory.GetFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories);
        Assert.NotEmpty(shims);
        foreach (var path in shims)
        {
            var flags = VersionNeedFlags(File.ReadAllBytes(path), "GLIBCXX_3.4.32");
            if (flags is null)
                continue; // a shim built against an older libstdc++ needs no step
            Assert.True((flags.Value & 0x2) != 0, $"{path}: GLIBCXX_3.4.32 is not weak (flags {flags})");
        }
    }

    /// <summary>vna_flags of the version need entry named <paramref name="name"/>, or null.</summary>
    private static ushort? VersionNeedFlags(byte[] elf, string name)
    {
        long shoff = BitConverter.ToInt64(elf, 0x28);
        int size = BitConverter.ToUInt16(elf, 0x3A), count = BitConverter.ToUInt16(elf, 0x3C);
        for (int s = 0; s < count; s++)
        {
            int sh = (int)(shoff + s * size);
            if (BitConverter.ToUInt32(elf, sh + 4) != 0x6ffffffe)
                continue;
            int section = (int)BitConverter.ToInt64(elf, sh + 0x18);
            int strings = (int)BitConverter.ToInt64(elf, (int)(shoff + BitConverter.ToUInt32(elf, sh + 0x28) * size) + 0x18);
            for (int vn = section; ; )
            {
                int aux = vn + (int)BitConverter.ToUInt32(elf, vn + 8);
                for (int a = 0; a < BitConverter.ToUInt16(elf, vn + 2); a++)
                {
                    int nameAt = strings + (int)BitConverter.ToUInt32(elf, aux + 8);
                    int end = Array.IndexOf(elf, (byte)0, nameAt);
                    if (Encoding.ASCII.GetString(elf, nameAt, end - nameAt) == name)
                        return BitConverter.ToUInt16(elf, aux + 4);
                    aux += (int)BitConverter.ToUInt32(elf, aux + 12);
                }
                uint next = BitConverter.ToUInt32(elf, vn + 12);
                if (next == 0)
                    break;
                vn += (int)next;
            }
        }
        return null;
    }
}
