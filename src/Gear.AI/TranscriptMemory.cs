using Gear.AI.Llama.Chat;

namespace Gear.AI;

/// <summary>
/// The exact token ids of recent answers: the prompt as rendered and the reply as generated, by the turns that asked and
/// the reply's text. A request that continues one of them (its turns, then that reply as an assistant message, then new
/// turns) is rendered as those ids plus the template's continuation, so the conversation's cached history stays a prefix
/// of the new prompt even where the reply's text would encode to other ids. Bounded; least recently used first out.
/// </summary>
internal sealed class TranscriptMemory(int capacity = 512)
{
    private sealed record Entry(ChatTurn[] Turns, int[] Ids, LinkedListNode<ulong> Node);

    private readonly Dictionary<ulong, Entry> _entries = [];
    private readonly LinkedList<ulong> _order = new();

    /// <summary>Remembers that <paramref name="turns"/> were answered with <paramref name="reply"/>, the whole exchange being <paramref name="ids"/>.</summary>
    public void Remember(IReadOnlyList<ChatTurn> turns, string reply, IReadOnlyList<int> ids)
    {
        ChatTurn[] key = [.. turns, new ChatTurn(ChatRole.Assistant, reply)];
        ulong hash = Hash(key, key.Length);
        if (_entries.Remove(hash, out var old))
            _order.Remove(old.Node);
        _entries[hash] = new Entry(key, [.. ids], _order.AddLast(hash));
        while (_entries.Count > capacity)
        {
            _entries.Remove(_order.First!.Value);
            _order.RemoveFirst();
        }
    }

    /// <summary>
    /// The ids of the longest remembered exchange that <paramref name="turns"/> start with (it ends with an assistant turn),
    /// and how many turns it covers; null when none is remembered or nothing follows it.
    /// </summary>
    public (int[] Ids, int Turns)? Find(IReadOnlyList<ChatTurn> turns)
    {
        for (int k = turns.Count - 2; k >= 0; k--)
        {
            if (turns[k].Role != ChatRole.Assistant)
                continue;
            if (_entries.TryGetValue(Hash(turns, k + 1), out var entry) && entry.Turns.Length == k + 1 && entry.Turns.SequenceEqual(turns.Take(k + 1)))
            {
                _order.Remove(entry.Node);
                _order.AddLast(entry.Node);
                return (entry.Ids, k + 1);
            }
        }
        return null;
    }

    private static ulong Hash(IReadOnlyList<ChatTurn> turns, int count)
    {
        ulong h = 14695981039346656037UL;
        for (int i = 0; i < count; i++)
        {
            h = (h ^ (ulong)turns[i].Role) * 1099511628211UL;
            foreach (char c in turns[i].Content)
                h = (h ^ c) * 1099511628211UL;
            h = (h ^ 0xFFFF) * 1099511628211UL;
        }
        return h;
    }
}
