using System.Text.Json;
using Gear.AI.Compression;
using Microsoft.Extensions.AI;

namespace Gear.AI.Tests;

public sealed class RequestPropertiesTests
{
    [Fact]
    public void Read_EveryProperty_FromClrValuesAndJson()
    {
        var read = RequestProperties.Read(new ChatOptions
        {
            AdditionalProperties = new()
            {
                ["gear.cache"] = "kivi", ["gear.bits"] = 4L, ["gear.group_size"] = "32", ["gear.outlier_ratio"] = 0.02f,
                ["gear.prompt_rank"] = JsonSerializer.SerializeToElement(3), ["gear.decode_rank"] = 1, ["gear.buffer_length"] = 64,
                ["gear.repetition_penalty"] = "1.1", ["gear.raw"] = JsonSerializer.SerializeToElement(true), ["gear.ignore_eos"] = "true",
                ["other.key"] = "not ours",
            },
        });
        var cache = read.Cache(new GearOptions());
        Assert.Equal((CacheKind.Kivi, 4, 32, 0.02, 3, 1, 64), (cache.Kind, cache.Bits, cache.GroupSize, cache.OutlierRatio, cache.PromptRank, cache.DecodeRank, cache.BufferLength), new NearTuple());
        Assert.Equal(1.1, read.RepetitionPenalty, 6);
        Assert.True(read.Raw);
        Assert.True(read.IgnoreEndOfSequence);
    }

    [Fact]
    public void Read_NoGearProperties_LeavesTheDefaults()
    {
        var defaults = new GearOptions { Bits = 2 };
        var read = RequestProperties.Read(new ChatOptions { AdditionalProperties = new() { ["x"] = 1 } });
        Assert.Same(defaults, read.Cache(defaults));
        Assert.Equal((1.0, false, false), (read.RepetitionPenalty, read.Raw, read.IgnoreEndOfSequence));
    }

    [Fact]
    public void Read_UnknownProperty_NamesEveryOneGearReads()
    {
        var e = Assert.Throws<ArgumentException>(() => RequestProperties.Read(new ChatOptions { AdditionalProperties = new() { ["gear.bitz"] = 2 } }));
        Assert.Contains("gear.bitz", e.Message);
        foreach (var name in RequestProperties.Names)
            Assert.Contains(name, e.Message);
    }

    [Theory]
    [InlineData("gear.bits", "two", "integer")]
    [InlineData("gear.raw", "yes", "true or false")]
    [InlineData("gear.outlier_ratio", "much", "number")]
    public void Read_WrongType_SaysWhatIsExpected(string key, string value, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => RequestProperties.Read(new ChatOptions { AdditionalProperties = new() { [key] = value } }));
        Assert.Contains(key, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Cache_OutOfRange_IsAnArgumentErrorNamingTheSetting()
    {
        var read = RequestProperties.Read(new ChatOptions { AdditionalProperties = new() { ["gear.bits"] = 12 } });
        var e = Assert.Throws<ArgumentException>(() => read.Cache(new GearOptions()));
        Assert.Contains("AdditionalProperties", e.Message);
    }

    /// <summary>Tuples equal with the outlier ratio compared as a float32 value (0.02f is not 0.02).</summary>
    private sealed class NearTuple : IEqualityComparer<(CacheKind, int, int, double, int, int, int)>
    {
        public bool Equals((CacheKind, int, int, double, int, int, int) a, (CacheKind, int, int, double, int, int, int) b) =>
            a with { Item4 = 0 } == b with { Item4 = 0 } && Math.Abs(a.Item4 - b.Item4) < 1e-6;

        public int GetHashCode((CacheKind, int, int, double, int, int, int) obj) => 0;
    }
}
