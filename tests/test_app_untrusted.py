"""The app never lets a transcript's text drive the terminal: OSC 52 / OSC 2 sequences, bidi
overrides and Rich markup in a cwd, model, branch, tool name or file path show escaped, in the
rows, the detail screen, notifications and the rendered screen itself."""

from __future__ import annotations

import io

import msgspec
from rich.console import Console
from textual.widgets import Static

from tokentop.clock import FakeClock
from tokentop.config import Config
from tokentop.model import ModelUsage, RecentTool, SessionSnapshot, ToolStat
from tokentop.ui.app import make_app
from tokentop.ui.screens.detail import SessionDetail
from tokentop.ui.widgets.session_table import cell_text
from ui_fakes import FakeEngine, FakeProcesses, FakeRef, ledger, make_session

OSC52_CWD = "/tmp/\x1b]52;c;cHduZWQ=\x07x"
OSC2_MODEL = "claude-\x1b]2;PWNED\x07[/bold]sonnet"
RAW = ("\x1b", "\x07", "\u202e")


def hostile_session() -> SessionSnapshot:
    base = make_session("evil-1", cwd=OSC52_CWD, model=OSC2_MODEL)
    tool = "Bash\x1b[2J\u202e"
    return msgspec.structs.replace(
        base,
        branch="main\u202egnp.exe",
        tools=(ToolStat(tool, 3, 1),),
        recent_tools=(RecentTool(base.last_ts - 5, tool, "ab\x1b12", True),),
        files=("/home/dev/\x1b]2;t\x07.jsonl",),
        models=(ModelUsage(OSC2_MODEL, base.tokens, 1.0, 3),),
    )


def text_of(widget: Static) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


async def test_rows_detail_and_notifications_show_escapes() -> None:
    session = hostile_session()
    procs = FakeProcesses({"evil-1": FakeRef(4242, 1.0, ("claude", "\x1b]2;x\x07"), "hook", True)})
    app = make_app(
        FakeEngine(ledger((session,))),
        config=Config(),
        clock=FakeClock(),
        controller=procs,
        mapper=procs,
    )
    async with app.run_test(size=(150, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.main_table
        [row] = [table.shown[key] for key in table.order]
        assert cell_text(row, "project") == "\\x1b]52;c;cHduZWQ=\\x07x"
        assert cell_text(row, "models").startswith("claude-\\x1b]2;PWNED\\x07[/bold]sonnet")
        main_svg = app.export_screenshot()
        assert "x1b]52;c;" in main_svg and not any(raw in main_svg for raw in RAW)
        app.notify("budget: \x1b]2;PWNED\x07 [bold]x[/]", title="t\u202e")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SessionDetail)
        title = text_of(screen.query_one("#detail-title", Static))
        assert "/tmp/\\x1b]52;c;cHduZWQ=\\x07x (main\\u202egnp.exe)" in title
        models = text_of(screen.query_one("#detail-models", Static))
        assert "\\x1b]2;PWNED\\x07[/bold]sonnet" in models  # shown, not read as markup
        tools = text_of(screen.query_one("#detail-tools", Static))
        assert "Bash\\x1b[2J\\u202e" in tools
        files = text_of(screen.query_one("#detail-files", Static))
        assert "\\x1b]2;t\\x07.jsonl" in files
        assert "\\x1b]2;x\\x07" in str(screen.process_text)
        svg = app.export_screenshot()
        assert "PWNED" in svg and not any(raw in svg for raw in RAW)
        notes = list(app._notifications)
        assert [n.message for n in notes] == ["budget: \\x1b]2;PWNED\\x07 [bold]x[/]"]
        assert notes[0].title == "t\\u202e" and not notes[0].markup


def test_history_rows_and_the_summary_screen_text_are_escaped() -> None:
    from tokentop.render.markdown import summary_markdown
    from tokentop.ui.views.history_rows import history_row
    from ui_fakes import NOW, summary_of

    summary = summary_of(hostile_session())
    row = history_row(summary, NOW)
    assert row.project == "\\x1b]52;c;cHduZWQ=\\x07x"
    assert row.models.startswith("claude-\\x1b]2;PWNED\\x07[/bold]sonnet")
    text = summary_markdown(summary, heading="#")
    assert not any(raw in text for raw in RAW) and "\\u202egnp.exe" in text
