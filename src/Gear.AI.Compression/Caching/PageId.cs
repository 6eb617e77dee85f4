namespace Gear.AI.Compression.Caching;

/// <summary>
/// One page of a <see cref="PagePool"/>: the same slot in every layer of one of the pool's arenas (pages of one low-rank
/// rank). Packed in 32 bits as block tables hold it on a device: the arena in the top bits, the slot below.
/// </summary>
internal readonly record struct PageId
{
    private const int SlotBits = 27;
    private const int SlotMask = (1 << SlotBits) - 1;

    internal PageId(int arena, int slot)
    {
        if ((uint)arena > 15 || (uint)slot > SlotMask)
            throw new ArgumentOutOfRangeException(nameof(slot), $"Page ({arena}, {slot}) is outside the pool's address space.");
        Value = arena << SlotBits | slot;
    }

    /// <summary>The packed id.</summary>
    public int Value { get; }

    /// <summary>The arena (page format) the page lives in.</summary>
    internal int Arena => Value >>> SlotBits;

    /// <summary>The slot within its arena.</summary>
    internal int Slot => Value & SlotMask;

    /// <inheritdoc />
    public override string ToString() => $"page {Arena}:{Slot}";
}
