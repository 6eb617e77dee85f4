namespace Gear.AI.Compression.Caching;

/// <summary>
/// Pages by the token ids they hold and the page before them, so a new sequence can start from the longest cached
/// prefix of any other sequence, live or idle. A trie over pages: an entry is (parent page, the page's n_b token ids);
/// looking a prompt up walks from the root one page at a time. Pages nobody references stay indexed ("parked", least
/// recently used first) until their slots are wanted; evicting or freeing a page unindexes what hangs below it.
/// </summary>
internal sealed class PrefixIndex
{
    private sealed class Entry(PageId page, int parent, int[] tokens, ulong key)
    {
        public PageId Page { get; } = page;
        public int Parent { get; } = parent;           // PageId.Value of the page before, -1 at the start
        public int[] Tokens { get; } = tokens;
        public ulong Key { get; } = key;
        public List<PageId> Children { get; } = [];
        public LinkedListNode<PageId>? Parked { get; set; }
    }

    private readonly Dictionary<ulong, Entry> _byKey = [];
    private readonly Dictionary<int, Entry> _byPage = [];
    private readonly Dictionary<int, LinkedList<PageId>> _parked = [];   // per arena, least recently parked first

    public int Count => _byPage.Count;

    public int ParkedCount => _parked.Values.Sum(l => l.Count);

    public bool Contains(PageId page) => _byPage.ContainsKey(page.Value);

    /// <summary>
    /// Indexes <paramref name="page"/> as holding <paramref name="tokens"/> after <paramref name="parent"/> (null: the
    /// sequence's first page). Skipped when the parent is not indexed (nothing could reach it) or another page already
    /// holds the same tokens there.
    /// </summary>
    public void Register(PageId page, PageId? parent, ReadOnlySpan<int> tokens)
    {
        if (_byPage.ContainsKey(page.Value) || (parent is { } p && !_byPage.ContainsKey(p.Value)))
            return;
        int parentValue = parent?.Value ?? -1;
        ulong key = Key(parentValue, tokens);
        if (_byKey.ContainsKey(key))
            return;
        var entry = new Entry(page, parentValue, tokens.ToArray(), key);
        _byKey[key] = entry;
        _byPage[page.Value] = entry;
        if (parent is { } q)
            _byPage[q.Value].Children.Add(page);
    }

    /// <summary>The page holding <paramref name="tokens"/> after <paramref name="parent"/>, if indexed.</summary>
    public bool TryFind(PageId? parent, ReadOnlySpan<int> tokens, out PageId page)
    {
        int parentValue = parent?.Value ?? -1;
        if (_byKey.TryGetValue(Key(parentValue, tokens), out var entry) && entry.Parent == parentValue && tokens.SequenceEqual(entry.Tokens))
        {
            page = entry.Page;
            return true;
        }
        page = default;
        return false;
    }

    /// <summary>Marks an indexed page as referenced by nobody: it becomes the most recently parked of its arena.</summary>
    public void Park(PageId page)
    {
        var entry = _byPage[page.Value];
        if (!_parked.TryGetValue(page.Arena, out var list))
            _parked[page.Arena] = list = new LinkedList<PageId>();
        entry.Parked = list.AddLast(page);
    }

    /// <summary>Takes a parked page back into use.</summary>
    public void Unpark(PageId page)
    {
        if (_byPage.TryGetValue(page.Value, out var entry) && entry.Parked is { } node)
        {
            node.List!.Remove(node);
            entry.Parked = null;
        }
    }

    public bool IsParked(PageId page) => _byPage.TryGetValue(page.Value, out var entry) && entry.Parked is not null;

    /// <summary>The least recently parked page of <paramref name="arena"/>, if any.</summary>
    public PageId? OldestParked(int arena) => _parked.TryGetValue(arena, out var list) && list.First is { } first ? first.Value : null;

    /// <summary>The least recently parked page of any arena, if any.</summary>
    public PageId? OldestParked() => _parked.Values.Where(l => l.First is not null).Select(l => l.First!.Value).Cast<PageId?>().FirstOrDefault();

    /// <summary>
    /// Removes <paramref name="page"/> and everything indexed below it; returns the removed pages that were parked
    /// (nobody references them: the caller frees them).
    /// </summary>
    public List<PageId> Remove(PageId page)
    {
        var freed = new List<PageId>();
        RemoveTree(page, freed);
        return freed;
    }

    private void RemoveTree(PageId page, List<PageId> freed)
    {
        if (!_byPage.Remove(page.Value, out var entry))
            return;
        _byKey.Remove(entry.Key);
        if (entry.Parent >= 0 && _byPage.TryGetValue(entry.Parent, out var parent))
            parent.Children.Remove(page);
        if (entry.Parked is { } node)
        {
            node.List!.Remove(node);
            freed.Add(page);
        }
        foreach (var child in entry.Children.ToArray())
            RemoveTree(child, freed);
    }

    /// <summary>FNV-1a over the parent id and the token ids (entries are verified on lookup, so a collision only costs a miss).</summary>
    private static ulong Key(int parent, ReadOnlySpan<int> tokens)
    {
        ulong h = 14695981039346656037UL;
        h = (h ^ (uint)parent) * 1099511628211UL;
        foreach (int t in tokens)
            h = (h ^ (uint)t) * 1099511628211UL;
        return h;
    }
}
