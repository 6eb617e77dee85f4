namespace Gear.AI.Llama.Generation.Json;

/// <summary>
/// A string format generated exactly (JSON Schema's <c>format</c>): fixed-length segments, each a few alternatives of
/// one character set per position — enough for dates and UUIDs written the way .NET parses them. Days stop at 28, so
/// every date generated exists.
/// </summary>
internal sealed class StringFormat
{
    private readonly string[][] _sets;        // [position][alternative of its segment]: the characters allowed
    private readonly bool[] _starts;          // [position]: a segment starts here

    private StringFormat(string name, IEnumerable<string[][]> segments)
    {
        Name = name;
        var sets = new List<string[]>();
        var starts = new List<bool>();
        foreach (var alternatives in segments)
        {
            int length = alternatives[0].Length;
            for (int i = 0; i < length; i++)
            {
                sets.Add([.. alternatives.Select(a => Expand(a[i]))]);
                starts.Add(i == 0);
            }
        }
        _sets = [.. sets];
        _starts = [.. starts];
    }

    /// <summary>The format's name in JSON Schema.</summary>
    public string Name { get; }

    /// <summary>Characters (bytes, all ASCII) of every string of the format.</summary>
    public int Length => _sets.Length;

    public bool StartsSegment(int position) => _starts[position];

    /// <summary>Every alternative of the segment that starts at <paramref name="position"/>.</summary>
    public ulong AllAlternatives(int position) => (1UL << _sets[position].Length) - 1;

    /// <summary>The alternatives of <paramref name="alive"/> that allow <paramref name="b"/> at <paramref name="position"/>.</summary>
    public ulong Allowing(int position, ulong alive, byte b)
    {
        ulong result = 0;
        var sets = _sets[position];
        for (int a = 0; a < sets.Length; a++)
            if ((alive >> a & 1) != 0 && sets[a].Contains((char)b))
                result |= 1UL << a;
        return result;
    }

    /// <summary>The format named <paramref name="name"/>, or null when it is not one generated here.</summary>
    public static StringFormat? Named(string name) => name switch
    {
        "date" => Date,
        "date-time" => DateTime,
        "uuid" => Uuid,
        _ => null,
    };

    /// <summary>The formats generated here.</summary>
    public static IReadOnlyList<string> Supported { get; } = ["date", "date-time", "uuid"];

    private static string[][] Fixed(params string[] positions) => [positions];

    private static readonly string[][][] DateSegments =
    [
        Fixed("1-9", "0-9", "0-9", "0-9"), Fixed("-"),
        [["0", "1-9"], ["1", "0-2"]], Fixed("-"),
        [["0", "1-9"], ["1", "0-9"], ["2", "0-8"]],
    ];

    private static readonly StringFormat Date = new("date", DateSegments);

    private static readonly StringFormat DateTime = new("date-time",
    [
        .. DateSegments, Fixed("T"),
        [["0-1", "0-9"], ["2", "0-3"]], Fixed(":"), Fixed("0-5", "0-9"), Fixed(":"), Fixed("0-5", "0-9"), Fixed("Z"),
    ]);

    private static readonly StringFormat Uuid = new("uuid",
    [
        Fixed([.. Enumerable.Repeat("0-9a-f", 8)]), Fixed("-"), Fixed([.. Enumerable.Repeat("0-9a-f", 4)]), Fixed("-"),
        Fixed([.. Enumerable.Repeat("0-9a-f", 4)]), Fixed("-"), Fixed([.. Enumerable.Repeat("0-9a-f", 4)]), Fixed("-"),
        Fixed([.. Enumerable.Repeat("0-9a-f", 12)]),
    ]);

    /// <summary>"0-9a-f" → "0123456789abcdef"; other characters stand for themselves.</summary>
    private static string Expand(string set)
    {
        var chars = new List<char>();
        for (int i = 0; i < set.Length; i++)
        {
            if (i + 2 < set.Length && set[i + 1] == '-')
            {
                for (char c = set[i]; c <= set[i + 2]; c++)
                    chars.Add(c);
                i += 2;
            }
            else
            {
                chars.Add(set[i]);
            }
        }
        return new string([.. chars]);
    }
}
