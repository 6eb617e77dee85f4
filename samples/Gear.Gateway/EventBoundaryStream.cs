namespace Gear.Gateway;

/// <summary>
/// The response body as YARP writes it, remembering whether what went out so far ends between two server-sent events
/// (nothing written, or a blank line last), where an error event can still be added cleanly.
/// </summary>
internal sealed class EventBoundaryStream(Stream inner) : Stream
{
    private byte _last1 = (byte)'\n', _last2 = (byte)'\n';

    /// <summary>True when nothing was written or the output ends with "\n\n".</summary>
    public bool AtEventBoundary => _last1 == '\n' && _last2 == '\n';

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count)
    {
        inner.Write(buffer, offset, count);
        Track(buffer.AsSpan(offset, count));
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        await inner.WriteAsync(buffer, cancellationToken);
        Track(buffer.Span);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    private void Track(ReadOnlySpan<byte> written)
    {
        if (written.Length >= 2)
            (_last2, _last1) = (written[^2], written[^1]);
        else if (written.Length == 1)
            (_last2, _last1) = (_last1, written[0]);
    }
}
