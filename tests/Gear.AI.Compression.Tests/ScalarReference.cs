namespace Gear.AI.Compression.Tests;

/// <summary>The quantizer written as plain loops over a [rows, n, D] array: the formula in DESIGN.md.</summary>
internal static class ScalarReference
{
    /// <summary>Quantize then dequantize x (row-major [rows, n, D]) with groups along tokens (per-channel) or features (per-token).</summary>
    public static float[] QuantizeDequantize(float[] x, int rows, int n, int d, int bits, int groupSize, QuantAxis axis)
    {
        var result = new float[x.Length];
        int levels = (1 << bits) - 1;
        int g = axis == QuantAxis.PerToken ? Math.Min(groupSize, d) : groupSize;
        for (int r = 0; r < rows; r++)
        {
            int outer = axis == QuantAxis.PerChannel ? d : n;  // one vector per channel or per token
            int length = axis == QuantAxis.PerChannel ? n : d;
            for (int o = 0; o < outer; o++)
            {
                for (int start = 0; start < length; start += g)
                {
                    int end = Math.Min(start + g, length);
                    int Index(int i) => axis == QuantAxis.PerChannel ? (r * n + i) * d + o : (r * n + o) * d + i;
                    float min = float.PositiveInfinity, max = float.NegativeInfinity;
                    for (int i = start; i < end; i++)
                    {
                        min = Math.Min(min, x[Index(i)]);
                        max = Math.Max(max, x[Index(i)]);
                    }
                    float scale = (float)(Half)((max - min) / levels);
                    float zero = (float)(Half)min;
                    for (int i = start; i < end; i++)
                    {
                        float code = scale > 0 ? Math.Clamp(MathF.Round((x[Index(i)] - zero) / scale), 0, levels) : 0;
                        result[Index(i)] = code * scale + zero;
                    }
                }
            }
        }
        return result;
    }
}
