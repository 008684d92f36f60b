"""Reconciliation of transcripts against proxy logs: by session id (through the CLI's
`sessions --json`), by time window + model + cwd, and no match when ambiguous."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from source_helpers import engine_for, write
from tokentop import cli
from tokentop.history.reconcile import model_family, reconcile
from tokentop.model import SessionKey, TokenCounts
from tokentop.sources.generic import GenericJsonlSource

SID = "5f0c2a9e-1b7d-4c3e-9a8f-0123456789ab"
T0 = 1_777_629_600.0


def claude_line(n: int, tokens: tuple[int, int, int], ts: float) -> str:
    i, o, cache = tokens
    usage = {"input_tokens": i, "output_tokens": o, "cache_read_input_tokens": cache}
    message = {"id": f"msg_{n}", "model": "claude-sonnet-4-5-20250929", "usage": usage}
    stamp = f"2026-05-01T10:00:{int(ts - T0):02d}.000Z"
    record = {"type": "assistant", "sessionId": SID, "cwd": "/work/app", "uuid": f"u{n}"}
    return json.dumps({**record, "timestamp": stamp, "message": message})


def proxy_line(n: int, prompt: int, completion: int, cached: int, cost: float) -> str:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    return json.dumps(
        {
            "id": f"call-{n}",
            "status": "success",
            "model": "anthropic/claude-sonnet-4-5-20250929",
            "custom_llm_provider": "anthropic",
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "response_cost": cost,
            "startTime": T0 + n,
            "endTime": T0 + n + 1,
            "trace_id": SID,
            "tokentop_session_id": SID,
            "response": {"usage": usage},
        }
    )


def test_transcript_and_proxy_disagree_in_sessions_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The transcript records two responses (100+2000 cached in, 50 out; 120+2100 cached in,
    60 out). The proxy saw those two plus a retry the transcript never logged (130 prompt,
    10 out): delta = +130 input, +10 output, +1 response."""
    claude = tmp_path / "claude"
    lines = [claude_line(1, (100, 50, 2000), T0 + 1), claude_line(2, (120, 60, 2100), T0 + 3)]
    write(claude / "projects/-work-app" / f"{SID}.jsonl", "\n".join(lines) + "\n")
    calls = [
        proxy_line(1, 2100, 50, 2000, 0.002),
        proxy_line(2, 2220, 60, 2100, 0.002),
        proxy_line(3, 130, 10, 0, 0.001),
    ]
    log = write(tmp_path / "proxy.jsonl", "\n".join(calls) + "\n")
    args = ["sessions", "--json", "--no-cache", "--claude-dir", str(claude)]
    assert cli.main([*args, "--proxy-log", str(log)]) == 0
    rows = {f"{r['agent']}:{r['session_id']}": r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {f"claude:{SID}", f"litellm:{SID}"}
    rec = rows[f"claude:{SID}"]["reconciliation"]
    assert rec == rows[f"litellm:{SID}"]["reconciliation"]
    assert rec["matched_by"] == "session_id"
    assert rec["transcript_tokens"]["total"] == 100 + 50 + 2000 + 120 + 60 + 2100
    assert rec["proxy_tokens"]["total"] == 2100 + 50 + 2220 + 60 + 130 + 10
    delta = rec["delta_tokens"]
    assert (delta["input"], delta["output"], delta["cache_read"], delta["total"]) == (
        130,
        10,
        0,
        140,
    )
    assert (rec["transcript_responses"], rec["proxy_responses"]) == (2, 3)
    assert rec["proxy_cost_usd"] == pytest.approx(0.005)
    assert rec["delta_cost_usd"] == pytest.approx(0.005 - rec["transcript_cost_usd"])


def generic(tmp_path: Path, rows: list[dict[str, Any]]) -> list[Any]:
    log = write(tmp_path / "g.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    engine = engine_for(GenericJsonlSource([log]))
    engine.scan()
    return list(reconcile(engine.snapshot(), window_s=60))


def row(agent: str, sid: str, ts: float, model: str, n: int, cwd: str = "") -> dict[str, Any]:
    return {"agent": agent, "session": sid, "timestamp": ts, "model": model, "cwd": cwd,
            "input_tokens": n, "id": f"{agent}-{sid}-{ts}"}  # fmt: skip


def test_time_window_model_and_cwd_match(tmp_path: Path) -> None:
    """Different ids, but the proxy's calls fall inside the transcript's activity and the
    model family is the same (provider prefix and date suffix ignored)."""
    pairs = generic(
        tmp_path,
        [
            row("claude", "t1", T0, "claude-sonnet-4-5-20250929", 100, "/work/app"),
            row("claude", "t1", T0 + 600, "claude-sonnet-4-5-20250929", 100, "/work/app"),
            row("litellm", "key:abc", T0 + 30, "anthropic/claude-sonnet-4-5", 150),
            row("litellm", "key:abc", T0 + 620, "anthropic/claude-sonnet-4-5", 90),
            row("codex", "c9", T0 + 5000, "gpt-5", 7, "/elsewhere"),
        ],
    )
    (pair,) = pairs
    assert (pair.transcript, pair.proxy, pair.matched_by) == (
        SessionKey("claude", "t1"),
        SessionKey("litellm", "key:abc"),
        "time_window",
    )
    assert pair.delta_tokens == TokenCounts(input=40)


def test_ambiguous_or_mismatched_sessions_are_not_paired(tmp_path: Path) -> None:
    pairs = generic(
        tmp_path,
        [
            row("claude", "a", T0, "claude-sonnet-4-5", 10),
            row("claude", "b", T0 + 10, "claude-sonnet-4-5", 10),
            row("claude", "a", T0 + 300, "claude-sonnet-4-5", 10),
            row("claude", "b", T0 + 300, "claude-sonnet-4-5", 10),
            row("litellm", "shared-key", T0 + 100, "claude-sonnet-4-5", 25),  # fits a and b
            row("codex", "x", T0 + 9000, "gpt-5", 5),
            row("litellm", "other", T0 + 9001, "claude-opus-4-1", 5),  # right time, other model
        ],
    )
    assert pairs == []


def test_model_family() -> None:
    assert model_family("anthropic/claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert model_family("Claude-Sonnet-4-5@20250929") == "claude-sonnet-4-5"
    assert model_family("gpt-4o-2024-08-06") == "gpt-4o"
    assert model_family("openrouter/openai/gpt-5") == "gpt-5"
