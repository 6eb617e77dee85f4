using System.Text;

/// <summary>
/// The chat's input line on a terminal: the cursor moves with ←/→, Home/End (Ctrl+A/Ctrl+E); Backspace and Delete
/// remove; ↑/↓ walk back and forth through the lines entered before; Enter ends the line; Ctrl+D on an empty line ends
/// the input. Keys come from <c>readKey</c> and the redrawn line goes to <c>write</c>, so the editing is testable
/// without a terminal.
/// </summary>
internal sealed class LineEditor(Func<ConsoleKeyInfo> readKey, Action<string> write)
{
    private readonly List<string> _history = [];

    /// <summary>The lines entered so far, oldest first (empty lines are not kept).</summary>
    public IReadOnlyList<string> History => _history;

    /// <summary>Reads one line after <paramref name="prompt"/>; null at Ctrl+D on an empty line.</summary>
    public string? ReadLine(string prompt)
    {
        var line = new StringBuilder();
        int cursor = 0, shown = 0, recalled = _history.Count;
        string draft = "";
        write(prompt);
        void Redraw()
        {
            // Back to the line's start, the text, blanks over what a longer line left, then back to the cursor.
            var s = new StringBuilder("\r").Append(prompt).Append(line);
            int pad = Math.Max(0, shown - line.Length);
            s.Append(' ', pad).Append('\b', pad + line.Length - cursor);
            write(s.ToString());
            shown = line.Length;
        }
        void Replace(string text)
        {
            line.Clear().Append(text);
            cursor = line.Length;
            Redraw();
        }
        while (true)
        {
            var key = readKey();
            bool ctrl = (key.Modifiers & ConsoleModifiers.Control) != 0;
            switch (key.Key)
            {
                case ConsoleKey.Enter:
                    write(Environment.NewLine);
                    string text = line.ToString();
                    if (text.Length > 0 && (_history.Count == 0 || _history[^1] != text))
                        _history.Add(text);
                    return text;
                case ConsoleKey.D when ctrl:
                    if (line.Length == 0)
                    {
                        write(Environment.NewLine);
                        return null;
                    }
                    break;
                case ConsoleKey.A when ctrl:
                case ConsoleKey.Home:
                    cursor = 0;
                    Redraw();
                    break;
                case ConsoleKey.E when ctrl:
                case ConsoleKey.End:
                    cursor = line.Length;
                    Redraw();
                    break;
                case ConsoleKey.LeftArrow when cursor > 0:
                    cursor--;
                    Redraw();
                    break;
                case ConsoleKey.RightArrow when cursor < line.Length:
                    cursor++;
                    Redraw();
                    break;
                case ConsoleKey.Backspace when cursor > 0:
                    line.Remove(--cursor, 1);
                    Redraw();
                    break;
                case ConsoleKey.Delete when cursor < line.Length:
                    line.Remove(cursor, 1);
                    Redraw();
                    break;
                case ConsoleKey.UpArrow when recalled > 0:
                    if (recalled == _history.Count)
                        draft = line.ToString();
                    Replace(_history[--recalled]);
                    break;
                case ConsoleKey.DownArrow when recalled < _history.Count:
                    recalled++;
                    Replace(recalled == _history.Count ? draft : _history[recalled]);
                    break;
                default:
                    if (!char.IsControl(key.KeyChar))
                    {
                        line.Insert(cursor++, key.KeyChar);
                        Redraw();
                    }
                    break;
            }
        }
    }
}
