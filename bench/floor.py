#!/usr/bin/env python3
"""How fast can a Python scan be? The floor under issue #23's cold-scan target, measured.

`python bench/floor.py` times, side by side and taking turns, on the 859 MB corpus:

- `floor-narrow`: the least a Python scan can do. Two processes (this one and a fork), each
  reads half the files, decodes every line with msgspec into the narrowest struct that still
  gives a response's usage, keeps the largest copy of each message id in a dict and sums
  the tokens. No tool calls, costs, minutes, pace, bounded memory or output.
- `floor-record`: the same, decoding with tokentop's own `Record` (every field the engine
  reads: times, cwd, branch, content blocks, tool ids).
- `tokentop-cold`: `tokentop sessions --json --no-cache`, as bench/run.py runs it.
- `ccusage`: ccusage's native binary, the reference.

Each floor run checks its grand total against `expected.json`. What the floor leaves to
everything else is the distance between it and 0.5 x ccusage: see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import msgspec

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from measure import measure  # noqa: E402
from tools import (  # noqa: E402
    ccusage_native,
    ccusage_totals,
    ensure_corpus,
    isolated_env,
    tokentop_totals,
    warm_page_cache,
)


class Usage(msgspec.Struct, gc=False):
    input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0


class Message(msgspec.Struct, gc=False):
    id: str | None = None
    usage: Usage | None = None


class Line(msgspec.Struct, gc=False):
    """The narrowest line that still gives a response's usage."""

    message: Message | None = None


def floor_scan(root: str, struct: str) -> int:
    """The floor scan itself (run as a child: `--scan ROOT narrow|record`); prints the
    grand total of tokens."""
    if struct == "record":
        from tokentop.sources.claude_records import RECORD as decoder
    else:
        decoder = msgspec.json.Decoder(Line)

    files = sorted(str(p) for p in Path(root).rglob("*.jsonl"))

    def largest(part: list[str]) -> dict[str, int]:
        seen: dict[str, int] = {}
        for path in part:
            with open(path, "rb") as f:
                data = f.read()
            for line in decoder.decode_lines(data):
                message = line.message
                if message is None or message.usage is None or not message.id:
                    continue
                u = message.usage
                total = (
                    u.input_tokens + u.output_tokens + u.cache_read_input_tokens
                    + u.cache_creation_input_tokens
                )  # fmt: skip
                if total > seen.get(message.id, -1):
                    seen[message.id] = total
        return seen

    half = len(files) // 2
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its half, then out, never back into the parent's code
        status = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as out:
                out.write(msgspec.msgpack.encode(largest(files[half:])))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    mine = largest(files[:half])
    with os.fdopen(read_end, "rb") as inp:
        data = inp.read()
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]):
        raise SystemExit("the floor scan's second process failed")
    theirs: dict[str, int] = msgspec.msgpack.decode(data)
    for key, total in theirs.items():
        if total > mine.get(key, -1):
            mine[key] = total
    print(json.dumps({"total": sum(mine.values())}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", nargs=2, metavar=("ROOT", "STRUCT"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus-dir", type=Path, default=Path("/tmp/tokentop-bench"))
    parser.add_argument("--corpus", default="s1000", choices=("s200", "s1000", "s5000"))
    generator = BENCH_DIR.parents[1] / "shared/bench/gen_claude_corpus.py"
    parser.add_argument("--generator", type=Path, default=generator)
    parser.add_argument("--peers-dir", type=Path, default=BENCH_DIR / ".peers")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if args.scan:
        return floor_scan(*args.scan)
    corpus = ensure_corpus(args.corpus, args.corpus_dir, args.generator)
    want = sum(corpus.expected.values())
    tokentop = str(Path(sys.executable).with_name("tokentop"))
    floor = [sys.executable, __file__, "--scan", str(corpus.path)]
    tools = {
        "floor-narrow": ([*floor, "narrow"], {}, None),
        "floor-record": ([*floor, "record"], {}, None),
        "tokentop-cold": (
            [tokentop, "sessions", "--json", "--no-cache", "--claude-dir", str(corpus.path)],
            {},
            tokentop_totals,
        ),
        "ccusage": (
            [str(ccusage_native(args.peers_dir)), "claude", "session", "--json", "--offline"],
            {"CLAUDE_CONFIG_DIR": str(corpus.path)},
            ccusage_totals,
        ),
    }
    walls: dict[str, list[float]] = {name: [] for name in tools}
    cpus: dict[str, list[float]] = {name: [] for name in tools}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    warm_page_cache(corpus)
    with tempfile.TemporaryDirectory(prefix="tt-floor-") as tmp:
        env = isolated_env(Path(tmp))
        for rep in range(args.reps):
            for name, (argv, extra, totals) in tools.items():
                out = Path(tmp) / f"{name}.json"
                result = measure(argv, {**env, **extra}, out)
                if result.returncode:
                    raise SystemExit(f"{name} failed: {result.stderr_tail}")
                doc = json.loads(out.read_bytes())
                got = doc["total"] if totals is None else sum(totals(doc).values())
                if got != want:
                    raise SystemExit(f"{name}: total {got:,} != expected {want:,}")
                walls[name].append(result.wall_s)
                cpus[name].append(result.cpu_s)
            print(f"  rep {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ref = statistics.median(walls["ccusage"])
    print(f"corpus {corpus.name}: {corpus.size_bytes / 2**20:.0f} MB; every total = expected")
    for name, times in walls.items():
        med = statistics.median(times)
        spread = f"({min(times):.3f}-{max(times):.3f})"
        cpu = statistics.median(cpus[name])
        print(f"{name:14s} {med:6.3f} s {spread}  {med / ref:.2f} x ccusage  CPU {cpu:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
