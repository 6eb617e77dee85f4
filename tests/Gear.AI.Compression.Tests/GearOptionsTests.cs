namespace Gear.AI.Compression.Tests;

public class GearOptionsTests
{
    public static TheoryData<GearOptions, string> BadOptions() => new()
    {
        { new GearOptions { Bits = 0 }, "Bits" },
        { new GearOptions { Bits = 9 }, "Bits" },
        { new GearOptions { GroupSize = 0 }, "GroupSize" },
        { new GearOptions { OutlierRatio = -0.1 }, "OutlierRatio" },
        { new GearOptions { OutlierRatio = double.NaN }, "OutlierRatio" },
        { new GearOptions { PromptRank = -1 }, "PromptRank" },
        { new GearOptions { DecodeRank = -1 }, "DecodeRank" },
        { new GearOptions { PowerIterations = -1 }, "PowerIterations" },
        { new GearOptions { BufferLength = 96 }, "BufferLength" },
        { new GearOptions { Kind = (CacheKind)42 }, "Kind" },
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public void Validate_OutOfRange_ThrowsNamingOptionAndRange(GearOptions options, string name)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => options.Validate());
        Assert.Equal(name, ex.ParamName);
        Assert.Contains(name, ex.Message);
    }

    [Fact]
    public void Defaults_FollowThePaper()
    {
        var o = new GearOptions().Validate();
        Assert.Equal((CacheKind.Gear, 4, 64, 0.02, 4, 2, 3, 64),
            (o.Kind, o.Bits, o.GroupSize, o.OutlierRatio, o.PromptRank, o.DecodeRank, o.PowerIterations, o.BufferLength));
    }
}
