using static TorchSharp.torch;

namespace Gear.AI.Compression.Caching;

/// <summary>
/// One layer's rows of a decode step in device memory the caller owns, for <see cref="KvBatch.AttendOnDevice"/>: queries
/// [S, Hq, D], the new keys and values [S, Hkv, D] and the attention output [S, Hq, D], contiguous, all of
/// <paramref name="Type"/>.
/// </summary>
internal readonly record struct DeviceRows(IntPtr Queries, IntPtr Keys, IntPtr Values, IntPtr Output, ScalarType Type, int QueryHeads);
