"""Three recurring jobs run 30 times each over the last three weeks, in real git repositories.

- `site`: Claude Code, the same prompt every run but for its date and run number (a job by
  fingerprint); it commits every run. In the third week every run costs about twice as much.
- `research`: Codex, a scan with its date in the prompt (a job by fingerprint); it commits
  on even runs only, the others are theater.
- `Nightly report`: OpenClaw cron, from its documented layout (`cron/jobs.json`, the run log
  `cron/runs/<jobId>.jsonl`, isolated sessions whose first prompt is `[cron:<id> <name>]`);
  three runs fail, one of them before any response (a run with no transcript).

Each run is a compact transcript (a prompt and a few responses) written with the run's own
timestamps, and the commits it makes are dated inside its window. `expected` holds what a
report must find: runs, failures, costs (priced here from the same table, or OpenClaw's own
cost), commits and the first run of the third week of `site`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tokentop.model import TokenCounts
from tokentop.pricing import PriceTable

DAY = 86400.0
RUNS = 30
SPACING = 0.7 * DAY
RUN_S = 600.0
CLAUDE_MODEL = "claude-sonnet-4-5-20250929"
CODEX_MODEL = "gpt-5-codex"
CRON_ID = "7f3c2a10-5b1e-4d2a-9c8e-2b6f4e1d0a99"
FAILED_RUNS = {4: True, 13: True, 26: False}
"""Nightly report's failed runs: run index -> whether it spent anything before failing."""


@dataclass
class Expected:
    runs: int = 0
    failed: int = 0
    costs: list[float] = field(default_factory=list)
    commits: int = 0
    sessions: list[str] = field(default_factory=list)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def git(repo: Path, *args: str, when: float | None = None) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Dev", "GIT_COMMITTER_NAME": "Dev"}
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "dev@example.com"
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(when)} +0000"
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def make_repo(repo: Path, first: float) -> None:
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "dev@example.com")
    (repo / "README.md").write_text("# job\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "start", when=first - DAY)


def commit(repo: Path, when: float, n: int) -> None:
    (repo / f"work_{n}.txt").write_text(f"run {n}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", f"run {n}", when=when)


def sid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128)))


def write_lines(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))


class JobHistory:
    """Writes the three jobs under `root`; `now` is the report's time."""

    def __init__(self, root: Path, now: float) -> None:
        self.root = root
        self.now = now
        self.start = now - 21 * DAY
        self.claude = root / "claude"
        self.codex = root / "codex"
        self.openclaw = root / "openclaw"
        self.table = PriceTable.default()
        self.expected: dict[str, Expected] = {}
        self.first_worse = ""
        """The session of site's first run in the third week."""

    def at(self, i: int, offset_h: float) -> float:
        return self.start + (i + 0.5) * SPACING + offset_h * 3600

    def write(self) -> None:
        self.site()
        self.research()
        self.nightly()

    # -- site: Claude Code ------------------------------------------------------------------

    def site(self) -> None:
        repo = self.root / "repos" / "site"
        make_repo(repo, self.start)
        rng, exp = random.Random(1), self.expected.setdefault("site", Expected())
        for i in range(RUNS):
            t0 = self.at(i, 1.0)
            worse = t0 >= self.now - 7 * DAY
            session = sid(rng)
            day = datetime.fromtimestamp(t0, UTC).strftime("%Y-%m-%d")
            prompt = (
                f"Pick one task from ROADMAP.md for {day}, build it, commit it, report. Run {i}"
            )
            records: list[dict[str, object]] = [self._claude_user(session, str(repo), t0, prompt)]
            cost = 0.0
            for r in range(4):
                scale = (2.0 if worse else 1.0) * rng.uniform(0.9, 1.1)
                tokens = TokenCounts(
                    input=int(40 * scale), output=int(900 * scale), cache_read=int(20_000 * scale)
                )
                records.append(
                    self._claude_reply(session, str(repo), t0 + 60 * (r + 1), tokens, rng)
                )
                cost += self.table.cost(CLAUDE_MODEL, tokens) or 0.0
            write_lines(self.claude / "projects" / "-repos-site" / f"{session}.jsonl", records)
            commit(repo, t0 + 290, i)
            exp.runs, exp.commits = exp.runs + 1, exp.commits + 1
            exp.costs.append(cost)
            exp.sessions.append(f"claude:{session}")
            if worse and not self.first_worse:
                self.first_worse = f"claude:{session}"

    @staticmethod
    def _claude_user(session: str, cwd: str, ts: float, text: str) -> dict[str, object]:
        return {"type": "user", "sessionId": session, "cwd": cwd, "timestamp": iso(ts),
                "message": {"role": "user", "content": text}, "uuid": f"u-{session}"}  # fmt: skip

    @staticmethod
    def _claude_reply(
        session: str, cwd: str, ts: float, t: TokenCounts, rng: random.Random
    ) -> dict[str, object]:
        usage = {
            "input_tokens": t.input,
            "output_tokens": t.output,
            "cache_read_input_tokens": t.cache_read,
            "cache_creation_input_tokens": 0,
        }
        message = {
            "id": f"msg_{rng.getrandbits(64):x}",
            "model": CLAUDE_MODEL,
            "role": "assistant",
            "content": [{"type": "text", "text": "done"}],
            "usage": usage,
        }
        return {"type": "assistant", "sessionId": session, "cwd": cwd, "timestamp": iso(ts),
                "requestId": f"req_{rng.getrandbits(64):x}", "message": message}  # fmt: skip

    # -- research: Codex --------------------------------------------------------------------

    def research(self) -> None:
        repo = self.root / "repos" / "research"
        make_repo(repo, self.start)
        rng, exp = random.Random(2), self.expected.setdefault("research", Expected())
        for i in range(RUNS):
            t0 = self.at(i, 2.0)
            session = sid(rng)
            day = datetime.fromtimestamp(t0, UTC)
            prompt = f"Research scan {day:%Y-%m-%d}: summarise the 12 newest papers on agents"
            records: list[dict[str, object]] = [
                {"timestamp": iso(t0), "type": "session_meta",
                 "payload": {"id": session, "cwd": str(repo), "timestamp": iso(t0)}},
                {"timestamp": iso(t0), "type": "turn_context",
                 "payload": {"model": CODEX_MODEL, "cwd": str(repo)}},
                {"timestamp": iso(t0), "type": "event_msg",
                 "payload": {"type": "user_message", "message": prompt}},
            ]  # fmt: skip
            total = [0, 0, 0, 0]
            cost = 0.0
            for r in range(3):
                step = [int(9000 * rng.uniform(0.95, 1.05)), 6000, 700, 100]
                total = [a + b for a, b in zip(total, step, strict=True)]
                usage = dict(zip(("input_tokens", "cached_input_tokens", "output_tokens",
                                  "reasoning_output_tokens"), total, strict=True))  # fmt: skip
                records.append(
                    {"timestamp": iso(t0 + 60 * (r + 1)), "type": "event_msg",
                     "payload": {"type": "token_count", "info": {"total_token_usage": usage}}}
                )  # fmt: skip
                tokens = TokenCounts(
                    step[0] - step[1], step[2] - step[3], step[1], reasoning=step[3]
                )
                cost += self.table.cost(CODEX_MODEL, tokens) or 0.0
            name = f"rollout-{day:%Y-%m-%dT%H-%M-%S}-{session}.jsonl"
            write_lines(self.codex / "sessions" / f"{day:%Y/%m/%d}" / name, records)
            if i % 2 == 0:
                commit(repo, t0 + 200, i)
                exp.commits += 1
            exp.runs += 1
            exp.costs.append(cost)
            exp.sessions.append(f"codex:{session}")

    # -- Nightly report: OpenClaw cron ------------------------------------------------------

    def nightly(self) -> None:
        repo = self.root / "repos" / "reports"
        make_repo(repo, self.start)
        rng, exp = random.Random(3), self.expected.setdefault("Nightly report", Expected())
        cron = self.openclaw / "cron"
        jobs = {"version": 1, "jobs": [
            {"id": CRON_ID, "name": "Nightly report", "enabled": True,
             "schedule": {"kind": "cron", "expr": "0 3 * * *"}, "sessionTarget": "isolated",
             "payload": {"kind": "agentTurn", "message": "Write the daily report."}},
        ]}  # fmt: skip
        write_lines(cron / "jobs.json", [jobs])
        log: list[dict[str, object]] = []
        for i in range(RUNS):
            t0 = self.at(i, 3.0)
            session = sid(rng)
            failed = i in FAILED_RUNS
            spent = not failed or FAILED_RUNS[i]
            cost = self._openclaw_session(session, str(repo), t0, rng) if spent else 0.0
            status = "error" if failed else "ok"
            log.append({"ts": int((t0 + RUN_S) * 1000), "jobId": CRON_ID, "action": "finished",
                        "status": status, "summary": "report written" if not failed else None,
                        "error": "model timeout" if failed else None, "sessionId": session,
                        "sessionKey": f"agent:main:cron:{CRON_ID}:run:{session}",
                        "runAtMs": int(t0 * 1000), "durationMs": int(RUN_S * 1000)})  # fmt: skip
            if not failed:
                commit(repo, t0 + 300, i)
                exp.commits += 1
            exp.runs += 1
            exp.failed += failed
            exp.costs.append(cost)
            exp.sessions.append(f"openclaw:{session}" if spent else "")
        write_lines(cron / "runs" / f"{CRON_ID}.jsonl", log)

    def _openclaw_session(self, session: str, cwd: str, t0: float, rng: random.Random) -> float:
        prompt = f"[cron:{CRON_ID} Nightly report] Write the daily report."
        records: list[dict[str, object]] = [
            {"type": "session", "version": 3, "id": session, "timestamp": iso(t0), "cwd": cwd},
            {"type": "message", "id": f"m{rng.getrandbits(32):x}", "timestamp": iso(t0),
             "message": {"role": "user", "content": [{"type": "text", "text": prompt}]}},
        ]  # fmt: skip
        cost = 0.0
        for r in range(3):
            total = round(0.004 * rng.uniform(0.9, 1.1), 6)
            usage = {"input": 300, "output": 500, "cacheRead": 8000, "cacheWrite": 0,
                     "totalTokens": 8800, "cost": {"total": total}}  # fmt: skip
            records.append(
                {"type": "message", "id": f"m{rng.getrandbits(32):x}",
                 "timestamp": iso(t0 + 60 * (r + 1)),
                 "message": {"role": "assistant", "model": "claude-haiku-4-5", "usage": usage,
                             "content": [{"type": "text", "text": "ok"}]}}
            )  # fmt: skip
            cost += total
        write_lines(self.openclaw / "agents" / "main" / "sessions" / f"{session}.jsonl", records)
        return cost

    def args(self) -> list[str]:
        return [
            "--claude-dir", str(self.claude), "--codex-dir", str(self.codex),
            "--openclaw-dir", str(self.openclaw), "--db", str(self.root / "t.db"),
        ]  # fmt: skip
