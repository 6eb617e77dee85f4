namespace Gear.AI.Llama.Generation;

/// <summary>
/// Holds back streamed text that might be the start of a stop sequence, and cuts the text exactly
/// before the first stop sequence.
/// </summary>
internal sealed class StopSequenceFilter(IReadOnlyList<string> stops)
{
    private string _pending = string.Empty;

    /// <summary>Whether a stop sequence was seen.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Adds text; returns what can be emitted now.</summary>
    public string Push(string text)
    {
        if (Stopped)
            return string.Empty;
        _pending += text;
        if (stops.Count == 0)
            return Take(_pending.Length);
        int cut = -1;
        foreach (var stop in stops)
        {
            int at = _pending.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || at < cut))
                cut = at;
        }
        if (cut >= 0)
        {
            Stopped = true;
            string result = _pending[..cut];
            _pending = string.Empty;
            return result;
        }
        // Keep the longest tail that is a prefix of some stop sequence.
        int hold = 0;
        foreach (var stop in stops)
        {
            for (int len = Math.Min(stop.Length - 1, _pending.Length); len > hold; len--)
            {
                if (_pending.AsSpan(_pending.Length - len).SequenceEqual(stop.AsSpan(0, len)))
                {
                    hold = len;
                    break;
                }
            }
        }
        return Take(_pending.Length - hold);
    }

    /// <summary>Releases held text at the end of generation.</summary>
    public string Flush() => Stopped ? string.Empty : Take(_pending.Length);

    private string Take(int count)
    {
        string result = _pending[..count];
        _pending = _pending[count..];
        return result;
    }
}
