using TorchSharp;
public class SmokeTests
{
    [Fact]
    public void Torch_Loads()
    {
        using var t = torch.ones(3, 3);
        Assert.Equal(9f, t.sum().item<float>());
    }
}
