"""The benchmarked tools, the corpora they read, and how to pull token totals from their output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Totals = dict[str, int]
KINDS = ("input", "output", "cache_read", "cache_write")

CORPUS_SPECS = {"s200": (200, 7), "s1000": (1000, 11), "s5000": (5000, 11)}
"""name -> (sessions, seed): 173 MB, 859 MB and 4.3 GB with the shared generator."""
DEFAULT_CORPORA = ("s1000",)
"""What `run.py` measures unless told: the corpus of issue #23's table."""


@dataclass(frozen=True)
class Corpus:
    """A generated CLAUDE_CONFIG_DIR tree and the de-duplicated totals it must add up to."""

    name: str
    path: Path
    expected: Totals
    size_bytes: int


@dataclass(frozen=True)
class Tool:
    """How to run one tool on one corpus and read its totals back."""

    name: str
    argv: Callable[[Corpus], list[str]]
    env: Callable[[Corpus], dict[str, str]] = field(default=lambda c: {})
    totals: Callable[[Any], Totals] = field(default=lambda doc: {})
    prime: Callable[[Corpus], None] | None = None
    """Called before the timed runs (e.g. to reset a cache); the tool then runs once untimed."""
    before: Callable[[Corpus], None] | None = None
    """Called before every run, untimed (e.g. to change one file, or empty a HOME)."""
    ok_codes: tuple[int, ...] = (0,)
    """Exit statuses that still come with a complete report."""


def ensure_corpus(name: str, root: Path, generator: Path) -> Corpus:
    """Return the cached corpus, generating it first if expected.json is missing."""
    sessions, seed = CORPUS_SPECS[name]
    path = root / f"claude-s{sessions}-seed{seed}"
    if not (path / "expected.json").is_file():
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        print(f"generating {name} corpus in {path} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, str(generator), str(partial), "--sessions", str(sessions)]
        subprocess.run([*cmd, "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
        partial.rename(path)
    expected = json.loads((path / "expected.json").read_text())["totals"]
    size = sum(p.stat().st_size for p in path.rglob("*.jsonl"))
    return Corpus(name, path, {k: int(expected[k]) for k in KINDS}, size)


def warm_page_cache(corpus: Corpus) -> None:
    """Read every transcript once so no tool pays for the first cold disk read."""
    for path in sorted(corpus.path.rglob("*.jsonl")):
        with path.open("rb") as f:
            while f.read(1 << 22):
                pass


def isolated_env(scratch: Path) -> dict[str, str]:
    """The parent environment with HOME, XDG dirs and agent roots moved into scratch.

    No tool may read the user's real transcripts or touch the user's caches.
    """
    # PYTHONDONTWRITEBYTECODE (set on some CI images) would make every tokentop run compile
    # its modules from source, which no installed copy does.
    dropped = ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    dirs = {
        "HOME": "home",
        "XDG_CACHE_HOME": "xdg/cache",
        "XDG_CONFIG_HOME": "xdg/config",
        "XDG_DATA_HOME": "xdg/data",
        "XDG_STATE_HOME": "xdg/state",
        "CODEX_HOME": "empty-codex",
    }
    for var, sub in dirs.items():
        (scratch / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(scratch / sub)
    env.update({"TZ": "UTC", "NO_COLOR": "1"})
    return env


def differences(got: Totals, want: Totals) -> Totals:
    """got - want on every kind got reports; a bare "total" is checked against the sum."""
    if set(got) == {"total"}:
        want = {"total": sum(want[k] for k in KINDS)}
    return {k: got[k] - want[k] for k in got if k in want and got[k] != want[k]}


def tokentop_totals(doc: Any) -> Totals:
    """Sum the `tokens` objects of a `tokentop sessions --json` array."""
    sessions = doc["sessions"] if isinstance(doc, dict) else doc
    return {k: sum(int(s["tokens"][k]) for s in sessions) for k in KINDS}


def ccusage_totals(doc: Any) -> Totals:
    """Sum ccusage's per-session token fields (not its own `totals`, to check both agree)."""
    names = {
        "input": "inputTokens",
        "output": "outputTokens",
        "cache_read": "cacheReadTokens",
        "cache_write": "cacheCreationTokens",
    }
    return {k: sum(int(s[v]) for s in doc["sessions"]) for k, v in names.items()}


def monitor_totals(doc: Any) -> Totals:
    """claude-monitor's JSON gives only an all-history total, not totals by kind."""
    return {"total": int(doc["local_history"]["total_tokens"])}


def ccusage_native(peers: Path) -> Path:
    """The platform binary that ccusage's node launcher would spawn."""
    found = sorted((peers / "ccusage/node_modules/@ccusage").glob("ccusage-*/bin/ccusage"))
    return found[0] if found else peers / "ccusage/node_modules/@ccusage/missing/bin/ccusage"


def monitor_exe(peers: Path) -> Path:
    return peers / "claude-monitor-venv/bin/claude-monitor"


def tokscale_dir(peers: Path) -> Path:
    return peers / "tokscale"


def tokscale_version(peers: Path) -> str:
    try:
        meta = json.loads((tokscale_dir(peers) / "node_modules/tokscale/package.json").read_text())
    except (OSError, ValueError):
        return "not available"
    return f"{meta.get('version', '?')} (bun, in {tokscale_dir(peers)})"


def tokscale_totals(doc: Any) -> Totals:
    """tokscale's `models --json` totals. It keeps the first streamed copy of a response,
    so its output (and so its total) is below the exact figure on these corpora."""
    names = {
        "input": "totalInput",
        "output": "totalOutput",
        "cache_read": "totalCacheRead",
        "cache_write": "totalCacheWrite",
    }
    return {k: int(doc[v]) for k, v in names.items()}


def report_totals(doc: Any) -> Totals:
    """`tokentop report --format json` gives one token total over every session."""
    return {"total": int(doc["total"]["tokens"])}


def linked_copy(corpus: Corpus, dst: Path) -> Path:
    """`corpus` hard-linked into `dst` (same inodes, so the same warm page cache), except one
    transcript, copied: the one `touch_one_file` appends to. The other tools never see it."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(corpus.path, dst, copy_function=os.link)
    path = min(dst.rglob("*.jsonl"))
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    return path


def touch_one_file(path: Path) -> None:
    """Append to a transcript a copy of its last response line: the file changed (a restart
    reads and dedupes it), the totals did not (the copy repeats its ids)."""
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - (1 << 20)))
        lines = fh.read().splitlines()
    copy = next(line for line in reversed(lines) if b'"type":"assistant"' in line)
    with path.open("ab") as fh:
        fh.write(copy + b"\n")


def seed_tokscale(home: Path, peers: Path) -> None:
    """tokscale offline: its price caches, fresh, in its own HOME (never a user's)."""
    import time

    cache = home / ".cache" / "tokscale"
    cache.mkdir(parents=True, exist_ok=True)
    prices = json.loads((tokscale_dir(peers) / "model_prices.json").read_text())
    now = int(time.time())
    (cache / "pricing-litellm.json").write_text(json.dumps({"timestamp": now, "data": prices}))
    (cache / "pricing-openrouter.json").write_text(json.dumps({"timestamp": now, "data": {}}))


def build_tools(tokentop: list[str], peers: Path, scratch: Path) -> dict[str, Tool]:
    """All benchmarked tools, keyed by the name used in --tools and the report."""
    cache_root = scratch / "tokentop-cache"

    def tt_cold(c: Corpus) -> list[str]:
        return [*tokentop, "sessions", "--json", "--no-cache", "--claude-dir", str(c.path)]

    def tt_warm(c: Corpus) -> list[str]:
        cache = str(cache_root / c.name)
        return [*tokentop, "sessions", "--json", "--claude-dir", str(c.path), "--cache-dir", cache]

    def reset_cache(c: Corpus) -> None:
        shutil.rmtree(cache_root / c.name, ignore_errors=True)

    def ccusage(launcher: Path) -> Callable[[Corpus], list[str]]:
        return lambda c: [str(launcher), "claude", "session", "--json", "--offline"]

    def claude_dir(c: Corpus) -> dict[str, str]:
        return {"CLAUDE_CONFIG_DIR": str(c.path)}

    def monitor(c: Corpus) -> list[str]:
        exe = str(monitor_exe(peers))
        view = ["--view", "daily", "--once", "--output", "json"]
        return [exe, *view, "--no-api", "--no-warehouse", "--data-paths", str(c.path)]

    npm = peers / "ccusage/node_modules/.bin/ccusage"
    tokscale_home = scratch / "tokscale-home"
    report_home = scratch / "report-home"

    def tokscale(c: Corpus) -> list[str]:
        bun = tokscale_dir(peers) / "node_modules/.bin/bun"
        script = tokscale_dir(peers) / "node_modules/tokscale/bin.js"
        return [str(bun), str(script), "models", "--json", "--claude", "--no-spinner"]

    def tokscale_env(c: Corpus) -> dict[str, str]:
        return {"HOME": str(tokscale_home), "XDG_CACHE_HOME": str(tokscale_home / ".cache")}

    def tokscale_prime(c: Corpus) -> None:
        """It reads ~/.claude/projects only: HOME/.claude is the corpus."""
        shutil.rmtree(tokscale_home, ignore_errors=True)
        tokscale_home.mkdir(parents=True)
        (tokscale_home / ".claude").symlink_to(c.path)
        seed_tokscale(tokscale_home, peers)

    def tt_report(c: Corpus) -> list[str]:
        return [*tokentop, "report", "--format", "json", "--claude-dir", str(c.path)]

    def report_env(c: Corpus) -> dict[str, str]:
        dirs = {"HOME": "", "XDG_CACHE_HOME": "c", "XDG_DATA_HOME": "d", "XDG_CONFIG_HOME": "cfg"}
        return {var: str(report_home / sub) for var, sub in dirs.items()}

    def fresh_home(c: Corpus) -> None:
        shutil.rmtree(report_home, ignore_errors=True)
        report_home.mkdir(parents=True)

    restart_root = scratch / "restart-corpus"

    def tt_restart(c: Corpus) -> list[str]:
        cache = str(cache_root / f"{c.name}-restart")
        args = ["--claude-dir", str(restart_root / c.name), "--cache-dir", cache]
        return [*tokentop, "sessions", "--json", *args]

    def restart_prime(c: Corpus) -> None:
        shutil.rmtree(cache_root / f"{c.name}-restart", ignore_errors=True)
        linked_copy(c, restart_root / c.name)

    def touch(c: Corpus) -> None:
        touch_one_file(min((restart_root / c.name).rglob("*.jsonl")))

    tools = [
        Tool("tokentop-cold", tt_cold, totals=tokentop_totals),
        Tool("tokentop-warm", tt_warm, totals=tokentop_totals, prime=reset_cache),
        # One file changed since the cache was saved: the restart reads its new bytes.
        Tool(
            "tokentop-restart",
            tt_restart,
            totals=tokentop_totals,
            prime=restart_prime,
            before=touch,
        ),
        # The first `report` on a fresh HOME: the scan, the cache's save, every summary.
        Tool("tokentop-report", tt_report, report_env, report_totals, before=fresh_home),
        Tool("ccusage", ccusage(ccusage_native(peers)), claude_dir, ccusage_totals),
        Tool("ccusage-npm", ccusage(npm), claude_dir, ccusage_totals),
        Tool("tokscale", tokscale, tokscale_env, tokscale_totals, prime=tokscale_prime),
        # 20 is claude-monitor's "no_active_session": no message in its current 5-hour
        # window, which a corpus older than that has; the history totals are still complete.
        Tool("claude-monitor", monitor, totals=monitor_totals, ok_codes=(0, 20)),
    ]
    return {t.name: t for t in tools}
