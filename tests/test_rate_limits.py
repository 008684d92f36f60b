"""Codex's own usage windows (`rate_limits` in `token_count` events) reach `sessions --json`.

The rollout is the shared sample codex_053_rate_limit.jsonl (tests/fixtures/codex_samples):
two token_count events with rate_limits (one with `info: null`, rate limits only), an error
event and an app-server notification that are not token_count events.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tokentop.cli import main
from tokentop.engine.ledger import Ledger
from tokentop.model import LimitsSeen, LimitWindow, RateLimits, SessionKey
from tokentop.sources.codex import CodexFileParser, CodexSource

SAMPLE = Path(__file__).parent / "fixtures" / "codex_samples" / "agent-sessions"
RATE_LIMIT = SAMPLE / "codex_053_rate_limit.jsonl"


def codex_home(tmp_path: Path, *lines: bytes) -> Path:
    home = tmp_path / "codex"
    day = home / "sessions" / "2025" / "10" / "31"
    day.mkdir(parents=True)
    target = day / "rollout-2025-10-31T17-00-00-test.jsonl"
    shutil.copy(RATE_LIMIT, target)
    with target.open("ab") as fh:
        fh.writelines(line + b"\n" for line in lines)
    return home


def sessions_json(home: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["sessions", "--json", "--no-cache", "--codex-dir", str(home)]) == 0
    doc: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return doc


def test_the_samples_newest_windows_show_in_sessions_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    [session] = sessions_json(codex_home(tmp_path), capsys)
    assert session["rate_limits"] == {
        "observed_at": "2025-10-31T17:00:10.000Z",  # the info:null event, rate limits only
        "plan": None,
        "windows": [
            {"name": "primary", "used_percent": 1.0, "window_minutes": 300,
             "resets_at": "2025-10-31T22:37:03.000Z"},
            {"name": "secondary", "used_percent": 7.0, "window_minutes": 10080,
             "resets_at": "2025-11-06T19:45:53.000Z"},
        ],
    }  # fmt: skip
    assert session["tokens"]["total"] == 12273  # type: ignore[index]
    assert session["bad_lines"] == 0


def test_older_builds_reset_in_seconds_and_a_bad_object_is_one_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    older = (
        b'{"timestamp":"2025-10-31T17:01:00.000Z","type":"event_msg","payload":{"type":'
        b'"token_count","info":null,"rate_limits":{"primary":{"used_percent":42.5,'
        b'"window_minutes":300,"resets_in_seconds":600},"plan_type":"plus"}}}'
    )
    hostile = (
        b'{"timestamp":"2025-10-31T17:02:00.000Z","type":"event_msg","payload":{"type":'
        b'"token_count","info":{"total_token_usage":{"input_tokens":13000,'
        b'"cached_input_tokens":10880,"output_tokens":200,"reasoning_output_tokens":128}},'
        b'"rate_limits":{"primary":{"used_percent":"lots"}}}}'
    )
    [session] = sessions_json(codex_home(tmp_path, older, hostile), capsys)
    limits = session["rate_limits"]
    assert limits == {
        "observed_at": "2025-10-31T17:01:00.000Z",
        "plan": "plus",
        "windows": [{"name": "primary", "used_percent": 42.5, "window_minutes": 300,
                     "resets_at": "2025-10-31T17:11:00.000Z"}],
    }  # fmt: skip
    assert session["bad_lines"] == 1  # the unusable rate_limits ...
    assert session["tokens"]["total"] == 13200  # type: ignore[index]  # ... not its tokens


def test_a_replayed_older_observation_never_replaces_a_newer_one() -> None:
    key = SessionKey("codex", "s")
    newer = RateLimits(200.0, (LimitWindow("primary", 50.0, 300, 1000.0),))
    older = RateLimits(100.0, (LimitWindow("primary", 10.0, 300, 900.0),))
    ledger = Ledger(lambda *_: 0.0)
    ledger.apply([LimitsSeen(key, newer), LimitsSeen(key, older)])
    assert ledger.snapshot(300.0).sessions[0].limits == newer
    merged = Ledger(lambda *_: 0.0)
    merged.apply([LimitsSeen(key, older)])
    assert merged.merge(ledger.export())  # a parallel scan's view of the same session
    assert merged.snapshot(300.0).sessions[0].limits == newer


def test_huge_and_negative_shares_are_bounded() -> None:
    parser = CodexSource(homes=[]).new_parser(Path("/x/rollout-2025-10-31T17-00-00-h.jsonl"))
    assert isinstance(parser, CodexFileParser)
    line = (
        b'{"timestamp":"2025-10-31T17:00:00.000Z","type":"event_msg","payload":{"type":'
        b'"token_count","info":null,"rate_limits":{"primary":{"used_percent":1e300,'
        b'"resets_at":1e300},"secondary":{"used_percent":-5}}}}\n'
    )
    out: list[object] = []
    parser.feed(line, out)  # type: ignore[arg-type]
    [seen] = out
    assert isinstance(seen, LimitsSeen)
    assert [(w.used_pct, w.resets_at) for w in seen.limits.windows] == [(10_000.0, 0.0), (0.0, 0.0)]


def test_a_reset_time_past_what_a_datetime_holds_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """10000-01-01T23:59:59Z as Unix seconds: an aware datetime at -24:00 on the last day of
    9999 has that timestamp, but no UTC (or local) datetime holds it, so printing it
    crashed `sessions --json`."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    edge = (
        b'{"timestamp":"2025-10-31T17:02:00.000Z","type":"event_msg","payload":{"type":'
        b'"token_count","info":null,"rate_limits":{"primary":{"used_percent":3.0,'
        b'"window_minutes":300,"resets_at":253402387199}}}}'
    )
    [session] = sessions_json(codex_home(tmp_path, edge), capsys)
    limits = session["rate_limits"]
    assert isinstance(limits, dict)
    assert limits["windows"] == [
        {"name": "primary", "used_percent": 3.0, "window_minutes": 300, "resets_at": None}
    ]
