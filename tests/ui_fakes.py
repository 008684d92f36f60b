"""Fixed data and fakes for the app tests: sessions, an engine serving them, a process controller.

The fake engine has exactly the methods of tokentop.engine.engine.Engine that the app uses, so the
snapshot tests are deterministic; the Pilot tests that follow real files use the real engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from tokentop.clock import FakeClock
from tokentop.config import Config
from tokentop.history.git_output import Commit, GitValue
from tokentop.history.store import Store
from tokentop.history.summary import SessionSummary, build_summary
from tokentop.model import (
    FileHealth,
    LedgerSnapshot,
    ModelUsage,
    RecentTool,
    SessionKey,
    SessionSnapshot,
    TokenCounts,
    ToolStat,
)

NOW = FakeClock().now()


def make_session(
    sid: str,
    *,
    agent: str = "claude",
    cwd: str = "/home/dev/src/webshop",
    model: str = "claude-sonnet-4-5",
    tokens: TokenCounts | None = None,
    cost: float = 1.0,
    tpm: float = 0.0,
    usd_h: float = 0.0,
    ago: float = 30.0,
    unpriced: tuple[str, ...] = (),
    series: tuple[int, ...] = (),
    bad_lines: int = 0,
    today: int | None = None,
    estimated: bool = False,
) -> SessionSnapshot:
    """A session whose last activity was `ago` seconds before the fake clock's start.

    By default it spent everything today when it was active within 12 hours, else nothing.
    """
    tokens = tokens or TokenCounts(input=1_000, output=20_000, cache_read=400_000)
    if today is None:
        today = tokens.total if ago < 12 * 3600 else 0
    path = f"/home/dev/.claude/projects/-home-dev-src-{cwd.rsplit('/', 1)[-1]}/{sid}.jsonl"
    return SessionSnapshot(
        key=SessionKey(agent, sid),
        cwd=cwd,
        branch="main",
        first_ts=NOW - ago - 3600,
        last_ts=NOW - ago,
        last_response_ts=NOW - ago,
        tokens=tokens,
        cost_usd=cost,
        unpriced_models=unpriced,
        models=(ModelUsage(model, tokens, None if unpriced else cost, 42),),
        model_timeline=((NOW - ago - 3600, model),),
        responses=42,
        tokens_per_min=tpm,
        usd_per_hour=usd_h,
        burn_series=series,
        tool_calls=17,
        tool_errors=2,
        tools=(ToolStat("Bash", 10, 2), ToolStat("Edit", 7, 0)),
        recent_tools=(
            RecentTool(NOW - ago - 60, "Bash", "ab12cd34", True),
            RecentTool(NOW - ago - 20, "Edit", "ef56ab78", False),
        ),
        files=(path,),
        bad_lines=bad_lines,
        estimated=estimated,
        tokens_today=today,
        cost_today=cost * today / tokens.total if tokens.total else 0.0,
    )


def sample_sessions() -> tuple[SessionSnapshot, ...]:
    """Four sessions covering live/idle/ended, unpriced cost and parse errors."""
    return (
        make_session(
            "a1b2c3d4-steady",
            tpm=12_500,
            usd_h=3.4,
            cost=2.1,
            series=(9000, 11000, 12000, 15000, 12500, 8000, 14000, 12500),
        ),
        make_session(
            "e5f6-looping",
            cwd="/home/dev/src/api-gateway",
            tokens=TokenCounts(input=5_000, output=90_000, cache_read=2_100_000),
            cost=4.3,
            tpm=30_000,
            usd_h=9.9,
            series=(20000, 25000, 30000, 31000, 29000, 30000),
            bad_lines=3,
        ),
        make_session(
            "rollout-7788",
            agent="codex",
            cwd="/home/dev/src/ml-pipeline",
            model="gpt-5-codex-preview",
            cost=0.0,
            unpriced=("gpt-5-codex-preview",),
            ago=900,
        ),
        make_session("old-0001", cwd="/home/dev/notes", cost=0.42, ago=86_000),
    )


def sample_files() -> tuple[FileHealth, ...]:
    return (
        FileHealth(
            "/home/dev/.claude/projects/-home-dev-src-api-gateway/e5f6-looping.jsonl",
            "claude",
            123_456,
            812,
            3,
            "line 77: truncated JSON",
        ),
        FileHealth("/home/dev/.codex/sessions/rollout-7788.jsonl", "codex", 5_000, 40, 0),
    )


def ledger(sessions: Sequence[SessionSnapshot], version: int = 1) -> LedgerSnapshot:
    files = sample_files()
    return LedgerSnapshot(NOW, tuple(sessions), files, sum(f.bad_lines for f in files), version)


@dataclass
class FakeEngine:
    """Serves a fixed snapshot; `publish` plays the engine thread calling its listeners.

    Like the real engine after its scan, `start` hands the current snapshot to the listeners;
    unlike it, nothing comes every `tick_s` (a test publishes when it wants a judgement)."""

    current: LedgerSnapshot
    listeners: list[Callable[[LedgerSnapshot], None]] = field(default_factory=list)
    started: bool = False
    stopped: bool = False
    tick_s: float = 1.0

    def start(self) -> None:
        self.started = True
        self.publish(self.current)

    def stop(self) -> None:
        self.stopped = True

    def snapshot(self) -> LedgerSnapshot:
        return self.current

    def add_listener(self, fn: Callable[[LedgerSnapshot], None]) -> None:
        self.listeners.append(fn)

    def publish(self, snap: LedgerSnapshot) -> None:
        """Deliver a snapshot from another thread, as the real engine does."""
        self.current = snap
        thread = threading.Thread(target=lambda: [fn(snap) for fn in self.listeners])
        thread.start()
        thread.join()


@dataclass(frozen=True)
class FakeRef:
    pid: int
    create_time: float
    cmdline: tuple[str, ...]
    how: str
    confident: bool


@dataclass(frozen=True)
class FakeResult:
    ok: bool
    message: str


@dataclass
class FakeProcesses:
    """Maps session ids to fake processes and records every action asked of it."""

    refs: dict[str, FakeRef] = field(default_factory=dict)
    calls: list[tuple[str, int, str, str]] = field(default_factory=list)

    def processes_for(self, session: SessionSnapshot) -> FakeRef | None:
        return self.refs.get(session.key.session_id)

    def _act(self, verb: str, ref: FakeRef, reason: str, origin: str) -> FakeResult:
        self.calls.append((verb, ref.pid, reason, origin))
        return FakeResult(True, f"{verb} pid {ref.pid}: done")

    def pause(self, ref: FakeRef, reason: str, origin: str, *, session: str = "") -> FakeResult:
        return self._act("pause", ref, reason, origin)

    def resume(self, ref: FakeRef, reason: str, origin: str, *, session: str = "") -> FakeResult:
        return self._act("resume", ref, reason, origin)

    def terminate(self, ref: FakeRef, reason: str, origin: str, *, session: str = "") -> FakeResult:
        return self._act("terminate", ref, reason, origin)

    def kill(self, ref: FakeRef, reason: str, origin: str, *, session: str = "") -> FakeResult:
        return self._act("kill", ref, reason, origin)


# -- recorded history ------------------------------------------------------------------------


def summary_of(session: SessionSnapshot, git_value: GitValue | None = None) -> SessionSummary:
    return build_summary(session, now=NOW, reason="idle", config=Config(), git=git_value)


def stored_history(path: Path) -> Store:
    """Three recorded sessions: one with two commits, one without, one estimated."""
    store = Store(path)
    shop = make_session("aaaa-shop", cost=3.0, ago=7200)
    commits = (fake_commit("c1"), fake_commit("c2"))
    two = GitValue("ok", "leverage", commits=commits, files_changed=1, lines_added=6,
                   lines_removed=2, usd_per_commit=1.5)  # fmt: skip
    store.record_summary(summary_of(shop, two))
    gateway = make_session("bbbb-gate", cwd="/home/dev/src/api-gateway", cost=9.0, ago=5000)
    store.record_summary(summary_of(gateway, GitValue("ok", "theater")))
    notes = make_session("cccc-notes", cwd="/home/dev/notes", cost=0.5, ago=3000, estimated=True)
    store.record_summary(summary_of(notes))
    return store


def fake_commit(sha: str) -> Commit:
    return Commit(sha * 20, NOW - 7500, f"commit {sha}", ("a.py",), 3, 1)


def stored_jobs(path: Path) -> Store:
    """Two weeks of a nightly job (same cwd and first prompt), three runs a week, dearer in
    the last week; and two runs of `tokentop run --job deploy`, one failed."""
    from tokentop.history.store import JobTag

    store = Store(path)
    for n, (days, cost) in enumerate(
        ((12, 1.0), (10, 1.1), (8, 0.9), (6, 2.0), (4, 2.2), (2, 2.1))
    ):
        session = make_session(f"night-{n}", cwd="/home/dev/src/site", cost=cost, ago=days * 86400)
        commits = tuple(fake_commit(f"n{n}") for _ in range(n % 2))
        git_value = GitValue("ok", "leverage" if commits else "theater", commits=commits)
        summary = msgspec.structs.replace(
            summary_of(session, git_value),
            prompt="build the next task for <date>",
            prompt_key="k-night",
        )
        store.record_summary(summary)
    for n, ok in enumerate(("ok", "error")):
        session = make_session(f"deploy-{n}", cwd="/home/dev/src/api", cost=0.3, ago=(3 - n) * 3600)
        store.record_summary(summary_of(session, GitValue("ok", "theater")))
        store.set_job(session.key, JobTag("deploy", "run", ok))
    return store


def windows_fixture(root: Path) -> tuple[tuple[SessionSnapshot, ...], Path]:
    """Sessions whose windows the header shows, and the status line's state file: a Claude
    session with a real transcript (responses over the last 50 minutes: an active block), a
    Codex session that recorded its rate limits 5 minutes ago, and Claude's official windows
    heard 2 minutes ago (the weekly one past the warn share)."""
    import json

    from tokentop.history.official import StatusState, write_state
    from tokentop.model import LimitWindow, RateLimits

    transcript = root / "claude" / "projects" / "-home-dev-src-webshop" / "a1b2c3d4-win.jsonl"
    transcript.parent.mkdir(parents=True)
    lines = []
    for n in range(6):
        at = NOW - 3000 + n * 600
        usage = {"input_tokens": 50, "output_tokens": 1200, "cache_read_input_tokens": 60_000,
                 "cache_creation_input_tokens": 4_000}  # fmt: skip
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))
        lines.append({"type": "assistant", "sessionId": "a1b2c3d4-win", "timestamp": stamp,
                      "message": {"id": f"msg_w{n}", "model": "claude-sonnet-4-5-20250929",
                                  "usage": usage, "content": []}})  # fmt: skip
    transcript.write_text("".join(json.dumps(x) + "\n" for x in lines))
    claude = msgspec.structs.replace(
        make_session("a1b2c3d4-win", cost=2.0, tpm=900.0, usd_h=2.4, ago=60),
        files=(str(transcript),),
    )
    codex_limits = RateLimits(NOW - 300, (
        LimitWindow("primary", 12.0, 300, NOW + 3 * 3600),
        LimitWindow("secondary", 47.0, 10080, NOW + 4 * 86400),
    ), "plus")  # fmt: skip
    codex = msgspec.structs.replace(
        make_session("e5f6-codex", agent="codex", cwd="/home/dev/src/ml", model="gpt-5-codex",
                     cost=0.9, ago=300),
        limits=codex_limits,
    )  # fmt: skip
    official = root / "state" / "statusline.json"
    heard = RateLimits(NOW - 120, (
        LimitWindow("five_hour", 42.5, 300, NOW + 2 * 3600),
        LimitWindow("seven_day", 81.0, 10080, NOW + 3 * 86400),
    ), "claude.ai")  # fmt: skip
    write_state(StatusState(claude=heard), official)
    return (claude, codex), official
