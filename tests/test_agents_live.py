"""The added agents end to end: a real `tokentop watch --ndjson` shows an append to each
append-only format within 300 ms, and a Cline file rewritten whole with its new totals,
counted once. Plus the one table behind flags, `[roots]` and install recognition."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from test_cli import Watch
from tokentop.agents import AGENTS, ROOT_KINDS
from tokentop.config import ConfigError, parse_config
from tokentop.processes.installs import agent_install

LATENCY_S = 0.3


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms() -> int:
    return int(time.time() * 1000)


def pi_line(n: int) -> dict[str, Any]:
    usage = {"input": 10 * n, "output": 5 * n, "cacheRead": 0, "cacheWrite": 0}
    message = {"role": "assistant", "model": "claude-sonnet-4-5", "usage": usage,
               "timestamp": _ms() + n}  # fmt: skip
    return {"type": "message", "id": f"e{n}", "timestamp": _now(), "message": message}


def copilot_line(n: int) -> dict[str, Any]:
    data = {"model": "gpt-5", "content": "", "outputTokens": 15 * n}  # input: no text yet
    return {"type": "assistant.message", "timestamp": _now(), "data": data}


def qwen_line(n: int) -> dict[str, Any]:
    usage = {"promptTokenCount": 10 * n, "candidatesTokenCount": 5 * n}
    return {"type": "assistant", "uuid": f"u{n}", "sessionId": "s1", "timestamp": _now(),
            "cwd": "/w", "model": "qwen3-coder-plus", "usageMetadata": usage}  # fmt: skip


def kimi_line(n: int) -> dict[str, Any]:
    usage = {"inputOther": 10 * n, "output": 5 * n, "inputCacheRead": 0, "inputCacheCreation": 0}
    return {"type": "usage.record", "model": "kimi-k2", "usage": usage, "usageScope": "turn",
            "time": _ms()}  # fmt: skip


Format = tuple[str, str, str, dict[str, Any] | None, Callable[[int], dict[str, Any]]]
FORMATS: list[Format] = [
    ("pi", "sessions/--w--/2026-01-01T00-00-00-000Z_s1.jsonl", "s1",
     {"type": "session", "version": 3, "id": "s1", "timestamp": "2026-01-01T00:00:00.000Z",
      "cwd": "/w"}, pi_line),
    ("copilot", "session-state/s1/events.jsonl", "s1",
     {"type": "session.start", "timestamp": _now(), "data": {"sessionId": "s1"}}, copilot_line),
    ("qwen", "projects/p/chats/s1.jsonl", "s1", None, qwen_line),
    ("kimi", "sessions/wd/s1/agents/main/wire.jsonl", "s1", None, kimi_line),
]  # fmt: skip


def _write(path: Path, records: list[dict[str, Any]], mode: str = "a") -> None:
    with path.open(mode) as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("fmt", FORMATS, ids=[f[0] for f in FORMATS])
def test_an_append_shows_in_watch_within_300_ms(fmt: Format, tmp_path: Path) -> None:
    """One response (15 tokens) on disk, then a second one (30 more) appended: the watch
    line with the new total 45 comes within LATENCY_S of the write."""
    agent, relative, session, header, line = fmt
    root = tmp_path / agent
    path = root / relative
    path.parent.mkdir(parents=True)
    _write(path, [*([header] if header else []), line(1)], "w")
    watch = Watch(tmp_path, f"--{agent}-dir", str(root))
    try:
        first = watch.wait_for(lambda o: o.get("session_id") == session)
        assert first["tokens"]["total"] == 15 and first["agent"] == agent
        time.sleep(0.3)  # the watcher is settled: what is timed is the append alone
        written = time.monotonic()
        _write(path, [line(2)])
        grown = watch.wait_for(lambda o: o.get("tokens", {}).get("total") == 45, timeout=10)
        elapsed = time.monotonic() - written
        assert grown["session_id"] == session
        assert elapsed < LATENCY_S, f"{agent}: {elapsed:.3f} s"
    finally:
        watch.close()


def test_cline_rewrite_shows_new_totals_without_double_counting(tmp_path: Path) -> None:
    """The messages file holds one response (100 in incl. 60 cache reads, 10 out); Cline
    rewrites it whole with a second (200 in incl. 100 cache reads, 20 out): watch shows
    330 in all, the sum of the two responses, not the first file counted again."""
    folder = tmp_path / "cline/sessions/s1"
    folder.mkdir(parents=True)
    path = folder / "s1.messages.json"

    def message(n: int) -> dict[str, Any]:
        cache_read = {1: 60, 2: 100}[n]
        metrics = {"inputTokens": 100 * n, "outputTokens": 10 * n, "cacheReadTokens": cache_read,
                   "cacheWriteTokens": 0, "cost": 0.001 * n}  # fmt: skip
        return {"id": f"m{n}", "role": "assistant", "ts": _ms(), "metrics": metrics}

    path.write_text(json.dumps({"sessionId": "s1", "messages": [message(1)]}))
    watch = Watch(tmp_path, "--cline-dir", str(tmp_path / "cline"))
    try:
        first = watch.wait_for(lambda o: o.get("session_id") == "s1")
        assert first["tokens"]["total"] == 110
        time.sleep(0.3)
        path.write_text(json.dumps({"sessionId": "s1", "messages": [message(1), message(2)]}))
        both = watch.wait_for(lambda o: o.get("tokens", {}).get("total", 0) > 110)
        assert both["tokens"]["total"] == 110 + 220
        assert both["tokens"]["cache_read"] == 60 + 100 and both["responses"] == 2
    finally:
        watch.close()


def test_every_agent_has_a_flag_a_roots_key_and_a_source(tmp_path: Path) -> None:
    """Adding a row to `tokentop.agents` is enough for `--KEY-dir` and `[roots] KEY`."""
    for agent in AGENTS:
        assert agent.key in ROOT_KINDS
        parse_config(f'[roots]\n{agent.key} = ["{tmp_path}"]\n')
    with pytest.raises(ConfigError, match="known: claude"):
        parse_config('[roots]\nnot_an_agent = ["/tmp"]\n')


def _fake_install(tmp: Path, relative: str) -> str:
    path = tmp / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return str(path)


def test_installs_are_recognised_by_layout_never_by_name(tmp_path: Path) -> None:
    """Each added agent's npm entry script or native binary, where its package puts it, is
    that agent; the same name anywhere else, or a node whose argv only says the name, is
    not (a script named like the agent, an `exec -a` look-alike)."""
    node = "/usr/bin/node"
    entry = {
        "pi": "node_modules/@mariozechner/pi-coding-agent/dist/cli.js",
        "copilot": "node_modules/@github/copilot/npm-loader.js",
        "cline": "node_modules/cline/bin/cline",
        "kimi": "node_modules/@moonshot-ai/kimi-code/dist/main.mjs",
        "crush": "node_modules/@charmland/crush/run-crush.js",
        "kilo": "node_modules/@kilocode/cli/bin/kilo",
    }
    for agent, relative in entry.items():
        script = _fake_install(tmp_path, relative)
        assert agent_install(node, [node, script]) == agent
        lookalike = _fake_install(tmp_path / "elsewhere", f"{agent}/{Path(relative).name}")
        assert agent_install(node, [node, lookalike]) == ""
    native = {
        "copilot": "node_modules/@github/copilot-linux-x64/copilot",
        "cline": "node_modules/@cline/cli-linux-x64/bin/cline",
        "kilo": "node_modules/@kilocode/cli-linux-x64/bin/kilo",
        "goose": "homebrew/Cellar/block-goose-cli/1.9.0/bin/goose",
        "crush": "homebrew/Cellar/crush/0.9.0/bin/crush",
    }
    for agent, relative in native.items():
        exe = _fake_install(tmp_path, relative)
        assert agent_install(exe, [agent]) == agent
        assert agent_install(str(tmp_path / "bin" / agent), [agent]) == ""
    for name in ("pi", "copilot", "cline", "kimi", "goose", "crush", "kilo"):
        assert agent_install(node, [name]) == ""  # argv alone is no evidence
