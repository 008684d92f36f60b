"""A simulated coding agent: a real process writing real-shaped transcripts at a steady pace.

`tokentop demo` and the end-to-end tests run it so that pausing, resuming and killing act on a
real process whose transcript really stops and starts growing. Behaviours:

- steady: ordinary varied work (grep, read, edit, test, write) on a Sonnet/GPT-5-Codex budget;
- loop: the same failing Bash command with the same error output, over and over;
- overbudget: a large context growing fast on Opus/GPT-5, so a $ budget is crossed in minutes.

Run: python -m tokentop.demo.agent --kind claude --behavior loop --root DIR --cwd /some/project
Everything but timestamps is deterministic given --seed. It prints nothing unless --print-path.
SIGTERM/SIGINT stop it between writes (exit 128+signal); it also stops when its parent dies.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

import msgspec

from tokentop.demo.claude_records import Batch, Call, ClaudeRecords, Record, Usage, random_uuid
from tokentop.demo.codex_records import CodexRecords

BEHAVIORS = ("steady", "loop", "overbudget")
KINDS = ("claude", "codex")
LOOP_COMMAND = "pytest tests/test_parser.py -x -q"
LOOP_ERROR = (
    "F\n"
    "=================================== FAILURES ===================================\n"
    "________________________________ test_roundtrip ________________________________\n"
    "\n"
    "    def test_roundtrip():\n"
    ">       assert parse_header(render_header(HEADER)) == HEADER\n"
    "E       AssertionError: assert {'version': 2} == {'version': 2, 'flags': []}\n"
    "\n"
    "tests/test_parser.py:14: AssertionError\n"
    "=========================== short test summary info ============================\n"
    "FAILED tests/test_parser.py::test_roundtrip - AssertionError\n"
    "1 failed in 0.31s"
)
MODULES = ("parser", "cli", "models", "storage", "api", "utils")
FUNCTIONS = ("parse_header", "load_config", "render_table", "save_record", "fetch_page", "retry")
PROMPTS = (
    "Add input validation to the parser and cover it with tests.",
    "The storage layer drops records on retry; find out why and fix it.",
    "Refactor the CLI options into a config object.",
    "Make render_table handle empty input.",
)


@dataclass(frozen=True)
class Profile:
    """How one behaviour spends tokens; `pace` stretches every pause.

    At --interval 0.5 a response comes every ~2 s (loop: ~1 s); the rough burn (at list
    prices) is steady ~$0.7/min (Claude) or ~$0.4/min (Codex), loop ~$1.0 / ~$0.5, and
    overbudget ~$11/min (Opus) or ~$3/min (GPT-5), so a $5 budget falls in a minute or two.
    """

    claude_model: str
    codex_model: str
    base_context: int
    max_context: int
    """Past this the context drops back to base, as after an automatic compaction."""
    growth: tuple[int, int]
    output: tuple[int, int]
    pace: float
    codex_cache_miss: float = 0.0
    """Share of the Codex context re-sent uncached on each call."""


PROFILES = {
    "steady": Profile(
        "claude-sonnet-4-5-20250929", "gpt-5-codex", 18_000, 60_000, (600, 2_500), (80, 600), 2.0
    ),
    "loop": Profile(
        "claude-sonnet-4-5-20250929", "gpt-5-codex", 24_000, 120_000, (500, 700), (60, 180), 1.0
    ),
    "overbudget": Profile(
        "claude-opus-4-1-20250805", "gpt-5", 45_000, 190_000, (4_000, 7_000), (600, 2_000), 2.0, 0.5
    ),
}


class Work:
    """The agent's plan: which tool call comes next and what it costs, per behaviour."""

    def __init__(self, kind: str, behavior: str, rng: random.Random, cwd: str) -> None:
        self.behavior, self.rng, self.cwd = behavior, rng, cwd.rstrip("/") or "/"
        self.profile = PROFILES[behavior]
        self.context = self.profile.base_context
        self.cache_miss = self.profile.codex_cache_miss if kind == "codex" else 0.0

    def calls(self) -> Iterator[Call]:
        """An endless stream of calls; `turn` keeps inputs distinct where they should be."""
        turn = 0
        while True:
            if self.behavior == "loop":
                yield self._loop_call(turn)
            elif self.behavior == "overbudget":
                yield self._overbudget_call(turn)
            else:
                yield self._steady_call(turn)
            turn += 1

    def usage(self) -> Usage:
        """The next response's tokens; the context grows until a simulated compaction."""
        grown = self.rng.randint(*self.profile.growth)
        output = self.rng.randint(*self.profile.output)
        missed = int(self.context * self.cache_miss)
        uncached = self.rng.randint(3, 12)
        usage = Usage(self.context - missed, grown + missed, output, output // 2, uncached)
        self.context += grown
        if self.context > self.profile.max_context:
            self.context = self.profile.base_context
        return usage

    def _path(self, *parts: str) -> str:
        return os.path.join(self.cwd, *parts)

    def _steady_call(self, turn: int) -> Call:
        module, fn = self.rng.choice(MODULES), self.rng.choice(FUNCTIONS)
        source, test = self._path("src", "app", f"{module}.py"), f"tests/test_{module}.py"
        step = turn % 6
        if step == 0:
            found = f"Found 2 files\n{source}\n{self._path(test)}"
            return Call(f"Let me find where {fn} is defined.", "Grep", f"def {fn}", found)
        if step == 1:
            return Call(f"Reading {module}.py.", "Read", source, _source_text(module, fn, 40))
        if step == 2:
            old, new = "    return value", f"    return normalize(value)  # step {turn}"
            return Call(f"Updating {fn}.", "Edit", source, f"    12\t{new}", old=old, new=new)
        if step == 3:
            passed = f"........ [100%]\n{self.rng.randint(6, 30)} passed in 0.{turn % 9 + 1}4s"
            return Call("Running the tests.", "Bash", f"pytest -q {test}", passed)
        if step == 4:
            new_test = self._path("tests", f"test_{fn}_{turn}.py")
            body = f"from app.{module} import {fn}\n\n\ndef test_{fn}_{turn}():\n    assert {fn}\n"
            return Call("Adding a regression test.", "Write", new_test, "", new=body)
        stat = f" src/app/{module}.py | 2 +-\n 1 file changed, 1 insertion(+), 1 deletion(-)"
        return Call("Checking the diff.", "Bash", "git diff --stat", stat)

    def _loop_call(self, turn: int) -> Call:
        if turn == 0:
            test = self._path("tests", "test_parser.py")
            return Call(
                "Reading the failing test.",
                "Read",
                test,
                _source_text("parser", "test_roundtrip", 20),
            )
        if turn == 1:
            source = self._path("src", "app", "parser.py")
            old, new = "    flags = None", "    flags = []"
            return Call(
                "Fixing the flags default.", "Edit", source, f"    9\t{new}", old=old, new=new
            )
        thought = self.rng.choice(
            ("Let me run the test again.", "Running the test to check the fix.")
        )
        return Call(thought, "Bash", LOOP_COMMAND, LOOP_ERROR, is_error=True)

    def _overbudget_call(self, turn: int) -> Call:
        module = MODULES[turn % len(MODULES)]
        if turn % 4 == 3:
            source = self._path("src", "app", f"{module}.py")
            old, new = "    pass", f"    raise NotImplementedError({turn})"
            return Call(f"Stubbing {module}.", "Edit", source, f"    30\t{new}", old=old, new=new)
        path = self._path("src", "app", f"{module}_{turn}.py")
        return Call(
            f"Reading {module}_{turn}.py in full.", "Read", path, _source_text(module, "run", 80)
        )


def _source_text(module: str, fn: str, lines: int) -> str:
    head = [f'"""The {module} module."""', "", "", f"def {fn}(value):"]
    body = [f"    value = step_{i}(value)  # keeps {module} consistent" for i in range(lines)]
    return "\n".join([*head, *body, "    return value"])


class Transcript:
    """Appends complete lines with one os.write per batch, like the real writers.

    Claude Code opens, appends and closes on every write; Codex keeps its rollout open for
    the whole session (which is what lets tokentop map it to the pid through /proc).
    """

    def __init__(self, path: Path, keep_open: bool) -> None:
        self.path = path
        self._fd = self._open() if keep_open else None

    def append(self, records: list[Record]) -> None:
        data = b"".join(_encoder.encode(record) + b"\n" for record in records)
        fd = self._fd if self._fd is not None else self._open()
        try:
            view = memoryview(data)
            while view:  # a regular-file write is whole unless the disk fills; finish it anyway
                view = view[os.write(fd, view) :]
        finally:
            if fd != self._fd:
                os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


_encoder = msgspec.json.Encoder()


class Pacer:
    """Sleeps between writes in short slices, so a stop request ends the run within ~50 ms.

    A signal handler only sets a flag (no exception can cut a write in half), and there are
    no threads, so SIGSTOP/SIGCONT simply freeze and thaw the whole process.
    """

    def __init__(self, interval: float, rng: random.Random) -> None:
        self.interval, self.rng = interval, rng
        self.stop_signal = 0
        self._parent = os.getppid()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def wait(self, intervals: float) -> bool:
        """Pause for about `intervals` intervals; False when the agent must stop."""
        deadline = time.monotonic() + self.interval * intervals * self.rng.uniform(0.7, 1.3)
        while not self.stop_signal:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 0.05))
            if os.getppid() != self._parent:
                self.stop_signal = signal.SIGHUP  # orphaned: demo agents never outlive the app
        return False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum


def escape_cwd(cwd: str) -> str:
    """Claude Code's project folder name: every non-alphanumeric character becomes '-'."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


def transcript_path(kind: str, root: Path, cwd: str, session_id: str) -> Path:
    if kind == "claude":
        return root / "projects" / escape_cwd(cwd) / f"{session_id}.jsonl"
    now = datetime.now()
    day = root / "sessions" / now.strftime("%Y") / now.strftime("%m") / now.strftime("%d")
    return day / f"rollout-{now.strftime('%Y-%m-%dT%H-%M-%S')}-{session_id}.jsonl"


def session_batches(kind: str, work: Work, session_id: str, max_turns: int) -> Iterator[Batch]:
    """The whole session as batches: opening, prompts, calls and closing replies."""
    profile, rng = work.profile, work.rng
    if kind == "claude":
        records: ClaudeRecords | CodexRecords = ClaudeRecords(
            rng, work.cwd, profile.claude_model, session_id
        )
    else:
        limits = work.behavior != "steady"  # the demo's account: one session reports it
        records = CodexRecords(rng, work.cwd, profile.codex_model, session_id, limits)
        yield from records.opening()
    yield from records.prompt(rng.choice(PROMPTS))
    for turn, call in enumerate(work.calls(), 1):
        yield from records.call(call, work.usage())
        if max_turns and turn >= max_turns:
            yield from records.reply("Done. All changes are in place.", work.usage())
            return
        if work.behavior == "steady" and turn % 6 == 0:
            yield from records.reply("That part is finished; the tests pass.", work.usage())
            yield from records.prompt(rng.choice(PROMPTS))


def run(args: argparse.Namespace) -> int:
    rng = random.Random(f"{args.seed}:{args.kind}:{args.behavior}:{args.cwd}")
    session_id = args.session_id or random_uuid(rng, 4 if args.kind == "claude" else 7)
    path = transcript_path(args.kind, Path(args.root), args.cwd, session_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    pacer = Pacer(args.interval, rng)
    pacer.install()
    transcript = Transcript(path, keep_open=args.kind == "codex")
    if args.print_path:
        print(path, flush=True)
    work = Work(args.kind, args.behavior, rng, args.cwd)
    try:
        for records, pause in session_batches(args.kind, work, session_id, args.max_turns):
            transcript.append(records)
            if not pacer.wait(pause * work.profile.pace):
                return 128 + pacer.stop_signal
    finally:
        transcript.close()
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tokentop.demo.agent",
        description=__doc__.split("\n")[0],
        allow_abbrev=False,
    )
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--behavior", choices=BEHAVIORS, required=True)
    parser.add_argument("--root", required=True, help="agent root: CLAUDE_CONFIG_DIR or CODEX_HOME")
    parser.add_argument("--cwd", required=True, help="project path recorded in the transcript")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds per pause unit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-turns", type=int, default=0, help="stop after N tool calls (0: never)"
    )
    parser.add_argument("--session-id", default="", help="default: derived from --seed")
    parser.add_argument("--print-path", action="store_true", help="print the transcript path")
    args = parser.parse_args(argv)
    if args.interval < 0 or args.max_turns < 0:
        parser.error("--interval and --max-turns must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except OSError as error:
        print(f"demo_agent: cannot write the transcript: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
