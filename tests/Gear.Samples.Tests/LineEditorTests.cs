using System.Text;

namespace Gear.Samples.Tests;

/// <summary>Gear.Chat's input line: editing keys and history, driven by synthetic keys.</summary>
public class LineEditorTests
{
    private static ConsoleKeyInfo Char(char c) => new(c, c switch { >= 'a' and <= 'z' => ConsoleKey.A + (c - 'a'), ' ' => ConsoleKey.Spacebar, _ => ConsoleKey.Oem1 }, false, false, false);

    private static ConsoleKeyInfo Key(ConsoleKey key, bool ctrl = false) => new('\0', key, false, false, ctrl);

    private static IEnumerable<ConsoleKeyInfo> Type(string text) => text.Select(Char);

    private static (LineEditor Editor, StringBuilder Screen, Queue<ConsoleKeyInfo> Keys) Editor()
    {
        var keys = new Queue<ConsoleKeyInfo>();
        var screen = new StringBuilder();
        return (new LineEditor(keys.Dequeue, s => screen.Append(s)), screen, keys);
    }

    [Fact]
    public void Editing_MovesInsertsAndDeletes()
    {
        var (editor, _, keys) = Editor();
        foreach (var k in Type("helo world").Concat([Key(ConsoleKey.Home), Key(ConsoleKey.RightArrow), Key(ConsoleKey.RightArrow), Key(ConsoleKey.RightArrow)])
                     .Concat(Type("l")).Concat([Key(ConsoleKey.End), Key(ConsoleKey.Backspace), Key(ConsoleKey.A, ctrl: true), Key(ConsoleKey.Delete), Key(ConsoleKey.Enter)]))
            keys.Enqueue(k);
        Assert.Equal("ello worl", editor.ReadLine("> "));
    }

    [Fact]
    public void History_RecallsEarlierLines_AndKeepsTheDraft()
    {
        var (editor, _, keys) = Editor();
        foreach (var k in Type("first").Append(Key(ConsoleKey.Enter)).Concat(Type("second")).Append(Key(ConsoleKey.Enter)))
            keys.Enqueue(k);
        Assert.Equal("first", editor.ReadLine("> "));
        Assert.Equal("second", editor.ReadLine("> "));

        foreach (var k in Type("dra").Concat([Key(ConsoleKey.UpArrow), Key(ConsoleKey.UpArrow), Key(ConsoleKey.UpArrow), Key(ConsoleKey.DownArrow), Key(ConsoleKey.Enter)]))
            keys.Enqueue(k);
        Assert.Equal("second", editor.ReadLine("> "));                                      // up, up (stops at the oldest), down
        foreach (var k in new[] { Key(ConsoleKey.UpArrow), Key(ConsoleKey.DownArrow) }.Concat(Type("x")).Append(Key(ConsoleKey.Enter)))
            keys.Enqueue(k);
        Assert.Equal("x", editor.ReadLine("> "));                                           // down past the newest: the (empty) draft
        Assert.Equal(["first", "second", "x"], editor.History);
    }

    [Fact]
    public void CtrlD_OnAnEmptyLine_EndsTheInput_ElsewhereDoesNothing()
    {
        var (editor, screen, keys) = Editor();
        foreach (var k in Type("ab").Concat([Key(ConsoleKey.D, ctrl: true), Key(ConsoleKey.Enter), Key(ConsoleKey.D, ctrl: true)]))
            keys.Enqueue(k);
        Assert.Equal("ab", editor.ReadLine("> "));
        Assert.Null(editor.ReadLine("> "));
        Assert.StartsWith("> ", screen.ToString());
    }

    [Fact]
    public void Redraw_ClearsWhatALongerLineLeft()
    {
        var (editor, screen, keys) = Editor();
        foreach (var k in Type("long line").Append(Key(ConsoleKey.Enter)).Concat(Type("ab")).Append(Key(ConsoleKey.UpArrow)).Append(Key(ConsoleKey.DownArrow)).Append(Key(ConsoleKey.Enter)))
            keys.Enqueue(k);
        editor.ReadLine("> ");
        screen.Clear();
        Assert.Equal("ab", editor.ReadLine("> "));
        // Back from "long line" to "ab": the redraw writes the prompt and "ab", then blanks over the 7 characters left.
        Assert.Contains("\r> ab       ", screen.ToString());
    }
}
