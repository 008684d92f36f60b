#!/usr/bin/env python3
"""Benchmark tokentop against ccusage and claude-monitor on generated Claude Code corpora.

Run by hand (never in CI): `python bench/run.py`.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from hook import HookResult, print_hook, run_hook
from live import LiveOptions, LiveResult, run_live
from measure import RunResult, measure
from report import HOOK_MAX_MS, print_live, print_table
from tools import (
    CORPUS_SPECS,
    DEFAULT_CORPORA,
    Corpus,
    Tool,
    Totals,
    build_tools,
    ccusage_native,
    differences,
    ensure_corpus,
    isolated_env,
    monitor_exe,
    tokscale_version,
    warm_page_cache,
)

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_GENERATOR = BENCH_DIR.parent.parent / "shared/bench/gen_claude_corpus.py"


@dataclass
class Summary:
    """All timed runs of one tool on one corpus, and the totals its output gave."""

    tool: str
    corpus: str
    walls: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    totals: list[Totals] = field(default_factory=list)
    """One per run, the untimed priming run included: a correct tool repeats itself."""
    kept: list[str] = field(default_factory=list)
    """Copies of outputs whose totals were wrong or changed, for inspection."""
    error: str | None = None

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def peak_rss_mb(self) -> float:
        return statistics.median(self.rss) / 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3, help="timed runs per tool and corpus")
    ap.add_argument(
        "--corpora", nargs="+", choices=list(CORPUS_SPECS), default=list(DEFAULT_CORPORA)
    )
    ap.add_argument("--corpus-dir", type=Path, default=Path("/tmp/tokentop-bench"))
    ap.add_argument("--generator", type=Path, default=DEFAULT_GENERATOR)
    ap.add_argument("--tools", nargs="+", help="subset of tools (default: all)")
    ap.add_argument("--peers-dir", type=Path, default=default_peers_dir())
    ap.add_argument("--tokentop", help="tokentop executable (default: next to this Python)")
    ap.add_argument(
        "--baseline", help="another tokentop executable (e.g. main's) run as baseline-* tools"
    )
    ap.add_argument("--live-writes", type=int, default=30, help="responses appended (0 = skip)")
    ap.add_argument("--live-interval", type=float, default=0.25, help="seconds between appends")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--hook-calls", type=int, default=10, help="warm hook calls timed (0 = skip)")
    ap.add_argument("--json-out", type=Path, help="also write all raw figures here")
    return ap.parse_args(argv)


def default_peers_dir() -> Path:
    return Path(os.environ.get("TOKENTOP_BENCH_PEERS", BENCH_DIR / ".peers"))


def tokentop_command(explicit: str | None) -> list[str]:
    """The console script of the running venv, so `python bench/run.py` needs no activation."""
    if explicit:
        return [explicit]
    beside = Path(sys.executable).parent / "tokentop"
    return [str(beside)] if beside.exists() else [shutil.which("tokentop") or "tokentop"]


def run_once(tool: Tool, corpus: Corpus, env: dict[str, str], out: Path) -> RunResult | str:
    """One run; a string explains why the tool is not available."""
    try:
        result = measure(tool.argv(corpus), env | tool.env(corpus), out)
    except OSError as exc:
        return f"not available: {exc}"
    if result.returncode not in tool.ok_codes:
        last = result.stderr_tail.strip().splitlines()
        return f"not available: exit {result.returncode}: {last[-1][:160] if last else ''}"
    return result


def read_totals(tool: Tool, result: RunResult) -> Totals | str:
    try:
        return tool.totals(json.loads(result.stdout_path.read_bytes()))
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable output: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Bench:
    """What every run of one corpus shares."""

    corpus: Corpus
    env: dict[str, str]
    scratch: Path
    keep_dir: Path


def bench_corpus(tools: list[Tool], bench: Bench, reps: int) -> list[Summary]:
    """Interleave the tools rep by rep, so drift on a shared machine hits all of them alike."""
    summaries = {t.name: Summary(t.name, bench.corpus.name) for t in tools}
    for tool in tools:
        if tool.prime is not None:
            tool.prime(bench.corpus)
            summary = summaries[tool.name]
            record(summary, tool, bench, timed=False)
    for rep in range(reps):
        for tool in tools:
            summary = summaries[tool.name]
            if summary.error is None:
                print(f"  {bench.corpus.name} rep {rep + 1}/{reps}: {tool.name}", file=sys.stderr)
                record(summary, tool, bench, timed=True)
    return list(summaries.values())


def record(summary: Summary, tool: Tool, bench: Bench, *, timed: bool) -> None:
    """Run once and file the figures; keep the output if its totals look wrong."""
    out = bench.scratch / f"{tool.name}-{bench.corpus.name}.json"
    if tool.before is not None:
        tool.before(bench.corpus)
    result = run_once(tool, bench.corpus, bench.env, out)
    totals = result if isinstance(result, str) else read_totals(tool, result)
    if isinstance(totals, str) or isinstance(result, str):
        summary.error = totals if isinstance(totals, str) else str(result)
        return
    summary.totals.append(totals)
    ours = tool.name.startswith(("tokentop", "baseline"))
    wrong = differences(totals, bench.corpus.expected) and ours
    if wrong or totals != summary.totals[0]:
        bench.keep_dir.mkdir(parents=True, exist_ok=True)
        kept = bench.keep_dir / f"{tool.name}-{bench.corpus.name}-{len(summary.totals)}.json"
        shutil.copyfile(result.stdout_path, kept)
        summary.kept.append(str(kept))
    if timed:
        summary.walls.append(result.wall_s)
        summary.rss.append(result.peak_rss)


def all_tools(tokentop: list[str], args: argparse.Namespace, scratch: Path) -> dict[str, Tool]:
    """The tools, and with --baseline its tokentop-* ones again as baseline-* (own scratch)."""
    tools = build_tools(tokentop, args.peers_dir, scratch)
    if args.baseline:
        base = build_tools([args.baseline], args.peers_dir, scratch / "baseline")
        for name, tool in base.items():
            if name.startswith("tokentop-"):
                renamed = "baseline-" + name.removeprefix("tokentop-")
                tools[renamed] = replace(tool, name=renamed)
    return tools


def select_tools(all_tools: dict[str, Tool], names: list[str] | None) -> list[Tool]:
    unknown = sorted(set(names or []) - set(all_tools))
    if unknown:
        raise SystemExit(f"unknown tools {unknown}; choose from {sorted(all_tools)}")
    return [all_tools[n] for n in names] if names else list(all_tools.values())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    tokentop = tokentop_command(args.tokentop)
    print_environment(tokentop, args.peers_dir)
    precompile_tokentop()
    corpora = [ensure_corpus(n, args.corpus_dir, args.generator) for n in args.corpora]
    with tempfile.TemporaryDirectory(prefix="tokentop-bench-") as tmp:
        scratch = Path(tmp)
        tools = select_tools(all_tools(tokentop, args, scratch), args.tools)
        summaries: list[Summary] = []
        env, keep_dir = isolated_env(scratch), args.corpus_dir / "kept"
        for corpus in corpora:
            warm_page_cache(corpus)
            summaries += bench_corpus(tools, Bench(corpus, env, scratch, keep_dir), args.reps)
        live = live_path(tokentop, scratch, args)
        hook = hook_path(isolated_env(scratch / "hook"), args)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_table(corpora, summaries)
    if live is not None:
        print_live(live)
    if hook is not None:
        print_hook(hook, HOOK_MAX_MS)
    if args.json_out:
        dump(args.json_out, corpora, summaries, live, hook)
    return 0


def precompile_tokentop() -> None:
    """Write tokentop's bytecode, as `pip install` does for a regular install, so no timed
    run pays for compiling (an editable install otherwise writes it on its first run)."""
    spec = importlib.util.find_spec("tokentop")
    if spec is None or spec.origin is None:
        return
    package = str(Path(spec.origin).parent)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=False)
    print(f"bytecode compiled in {package}")


def print_environment(tokentop: list[str], peers: Path) -> None:
    """Versions, cores and load, since every figure depends on them."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"cores {os.cpu_count()}, load average before: {load}; git {git_rev()}")
    print(f"tokentop: {version([*tokentop, '--version'])} ({' '.join(tokentop)})")
    print(f"ccusage: {version([str(ccusage_native(peers)), '--version'])} (peers in {peers})")
    print(f"claude-monitor: {version([str(monitor_exe(peers)), '--version'])}")
    print(f"tokscale: {tokscale_version(peers)}")


def version(argv: list[str]) -> str:
    """The first line of `--version`, or why there is none."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not available ({exc})"
    lines = done.stdout.strip().splitlines()
    return lines[0] if done.returncode == 0 and lines else "version unknown"


def git_rev() -> str:
    done = subprocess.run(
        ["git", "-C", str(BENCH_DIR), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def live_path(tokentop: list[str], scratch: Path, args: argparse.Namespace) -> LiveResult | None:
    if args.live_writes <= 0:
        return None
    print("  live path: tokentop watch --ndjson", file=sys.stderr)
    options = LiveOptions(args.live_writes, args.live_interval, args.idle_seconds)
    try:
        return run_live(tokentop, isolated_env(scratch), scratch / "live-root", options)
    except OSError as exc:
        return LiveResult([], None, f"not available: {exc}")


def hook_path(env: dict[str, str], args: argparse.Namespace) -> HookResult | None:
    if args.hook_calls <= 0:
        return None
    print("  hook: python -m tokentop.commands.hook", file=sys.stderr)
    return run_hook(env, args.corpus_dir, args.generator, args.hook_calls)


def dump(
    path: Path,
    corpora: list[Corpus],
    summaries: list[Summary],
    live: LiveResult | None,
    hook: HookResult | None,
) -> None:
    doc = {
        "corpora": [{**asdict(c), "path": str(c.path)} for c in corpora],
        "runs": [asdict(s) for s in summaries],
        "live": asdict(live) if live else None,
        "hook": asdict(hook) if hook else None,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
