namespace Gear.AI.Compression.Tests;

/// <summary>Cartesian products as xunit theory data.</summary>
internal static class Combinations
{
    public static TheoryData<T1, T2> Of<T1, T2>(IEnumerable<T1> a, IEnumerable<T2> b)
    {
        var data = new TheoryData<T1, T2>();
        foreach (var x in a)
            foreach (var y in b)
                data.Add(x, y);
        return data;
    }

    public static TheoryData<T1, T2, T3> Of<T1, T2, T3>(IEnumerable<T1> a, IEnumerable<T2> b, IEnumerable<T3> c)
    {
        var data = new TheoryData<T1, T2, T3>();
        foreach (var x in a)
            foreach (var y in b)
                foreach (var z in c)
                    data.Add(x, y, z);
        return data;
    }
}
