"""`tokentop statusline` on Claude Code's documented status-line JSON, and its installation.

tests/fixtures/statusline/claude-code-status.json has the documented fields (session_id,
cost.total_cost_usd, context_window, rate_limits.five_hour / seven_day with used_percentage
and resets_at in Unix seconds) and the others Claude Code sends beside them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokentop.commands.hook_install import install
from tokentop.commands.statusline import handle
from tokentop.history.official import read_state, state_path

FIXTURE = Path(__file__).parent / "fixtures" / "statusline" / "claude-code-status.json"
NOW = 1_796_570_400.0  # 2026-12-06 15:20 UTC; the fixture's 5-hour window resets at 17:40


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for kind in ("STATE", "CONFIG", "DATA", "CACHE"):
        monkeypatch.setenv(f"XDG_{kind}_HOME", str(tmp_path / kind.lower()))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    return tmp_path


def call(raw: bytes, now: float) -> str:
    out = io.StringIO()
    assert handle(raw, out, now) == 0
    return out.getvalue()


def status(**changes: object) -> bytes:
    doc = json.loads(FIXTURE.read_text())
    doc.update(changes)
    return json.dumps(doc).encode()


def test_the_documented_input_gives_one_line_and_records_the_windows(dirs: Path) -> None:
    config = dirs / "config" / "tokentop" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[budgets]\nusd = 0.5\n")
    line = call(FIXTURE.read_bytes(), NOW)
    assert line == (
        "tokentop 45.7k tok · $0.06 · -/h · 11% of $0.50 · 5h 42% ↻17:40 · 7d 12% ↻Fri 15:00\n"
    )
    state = read_state(state_path())
    assert state.claude is not None and state.claude.observed_at == NOW
    windows = [(w.name, w.used_pct, w.window_min, w.resets_at) for w in state.claude.windows]
    assert windows == [
        ("five_hour", 42.5, 300, 1_796_578_800.0),
        ("seven_day", 12.0, 10080, 1_797_001_200.0),
    ]
    assert state.claude_session == "73cc9f9a-2775-4418-beec-bc36b62a1c6f"
    later = status(cost={"total_cost_usd": 0.156266149999999994}, rate_limits=None)
    line = call(later, NOW + 60)  # $0.10 in a minute; no windows this time: the last stay
    assert " · $6.00/h · 31% of $0.50" in line and "5h" not in line
    assert read_state(state_path()).claude == state.claude


def test_warm_it_runs_under_100_ms_and_never_loads_the_config(dirs: Path) -> None:
    """Whole process, after one call has cached the session's budget."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    argv = [sys.executable, "-m", "tokentop.commands.statusline"]
    raw = FIXTURE.read_bytes()
    subprocess.run(argv, input=raw, env=env, capture_output=True, check=True)  # cold
    took = []
    for _ in range(7):
        start = time.perf_counter()
        done = subprocess.run(argv, input=raw, env=env, capture_output=True, check=True)
        took.append(time.perf_counter() - start)
        assert done.stdout.startswith(b"tokentop 45.7k tok")
    assert min(took) < 0.1, took
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], input=raw, env=env, capture_output=True
    )
    imported = traced.stderr.decode()
    for heavy in ("tokentop.config", "sqlite3", "tokentop.engine", "textual", "tokentop.policy"):
        assert f" {heavy}\n" not in imported, heavy


def test_hostile_input_still_prints_a_line(dirs: Path) -> None:
    assert call(b"x" * (2 << 20), NOW) == "tokentop: status input too large\n"
    assert call(b"{not json", NOW) == "tokentop: unreadable status input\n"
    wild = status(
        cost={"total_cost_usd": -5},
        context_window={"total_input_tokens": 1e300, "total_output_tokens": -1},
        rate_limits={"five_hour": {"used_percentage": 1e300, "resets_at": 1e300}},
        session_id="\x1b]52;c;aGk=\x07",
    )
    line = call(wild, NOW)
    assert line.startswith("tokentop 1000T tok · $0.00") and "5h 10000%" in line
    assert "↻" not in line  # a reset no datetime holds is unknown, as in Codex's windows
    edge = {"five_hour": {"used_percentage": 5, "resets_at": 253402387199}}  # 10000-01-01Z
    assert "↻" not in call(status(rate_limits=edge), NOW)
    assert "\x1b" not in line
    assert call(b"[]", NOW) == "tokentop: unreadable status input\n"


def test_hook_install_offers_the_status_line_with_its_own_diff_and_backup(
    tmp_path: Path,
) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text('{"model": "opus"}\n')
    out, asked = io.StringIO(), []

    def ask(question: str) -> str:
        asked.append(question)
        return "y"

    line = "/py -m tokentop.commands.statusline"
    assert install(settings, command="/py -m tokentop.commands.hook", ask=ask, out=out,
                   statusline=line) == 0  # fmt: skip
    shown = out.getvalue()
    assert f"+++ {settings} (with the status line)" in shown and '+  "statusLine": {' in shown
    assert len(asked) == 2 and "Installed tokentop's status line" in shown
    assert json.loads(settings.read_text())["statusLine"] == {
        "type": "command", "command": line, "padding": 0,
    }  # fmt: skip
    assert len(list(tmp_path.glob("settings.json.tokentop-backup-*"))) == 2
    again = io.StringIO()
    assert install(settings, command="/py -m tokentop.commands.hook", ask=ask, out=again,
                   statusline=line) == 0  # fmt: skip
    assert "status line is already installed" in again.getvalue() and len(asked) == 2


def test_a_status_line_of_the_users_own_is_replaced_only_when_asked_by_name(
    tmp_path: Path,
) -> None:
    settings = tmp_path / "settings.json"
    mine = {"statusLine": {"type": "command", "command": "~/bin/my-line.sh"}}
    settings.write_text(json.dumps(mine))
    hook, line = "/py -m tokentop.commands.hook", "/py -m tokentop.commands.statusline"
    out = io.StringIO()
    assert install(settings, command=hook, yes=True, out=out, statusline=line) == 0
    assert json.loads(settings.read_text())["statusLine"] == mine["statusLine"]
    assert "Your own status line is kept" in out.getvalue()
    asked: list[str] = []
    assert install(settings, command=hook, ask=lambda q: asked.append(q) or "n",
                   out=io.StringIO(), statusline=line) == 0  # fmt: skip
    assert asked and "my-line.sh" in asked[-1] and "Replace your status line" in asked[-1]
    assert json.loads(settings.read_text())["statusLine"] == mine["statusLine"]
