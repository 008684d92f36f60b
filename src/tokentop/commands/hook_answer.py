"""`tokentop hook`, answered in this process: SessionStart and PreToolUse (soft stop).

Claude Code runs it with the hook's JSON on stdin (`session_id`, `transcript_path`, `cwd`,
`hook_event_name`, `tool_name`, `tool_input`). It records which agent process runs the session
(the nearest agent among the ancestors of the hook command's process: this one, or the
server's client, `Asker`) in the registry, so pause and kill act on the right process.
Before each tool call it reads the session's transcript and, when the session is over
budget or looping, blocks the call and tells the agent to wrap up.

Exit status, as Claude Code reads it:
    0  go on; nothing is printed, or one line on stderr when tokentop could not read its input
       or config (tokentop's own fault never blocks the agent, and never shows a traceback)
    2  PreToolUse: the tool call is blocked; stderr is the reason the agent is shown

The input is untrusted: at most MAX_INPUT_BYTES are read, and a session id names a cache
folder only when it is uuid-like (otherwise its hash does), so no id can reach outside it.

If the agent carries on after being blocked (`[policy.soft_stop]` after_responses more
responses or after_s seconds), the hook escalates with `then` = pause or kill, through a
detached helper (`commands/hook_escalation.py`): a process may not signal its own
ancestors, and the agent is the hook's.

Runs before every tool call, so it imports only what the event needs: no Textual, no watcher.
The installed command (`commands/hook.py`) usually hands the call to the resident server
(`commands/hook_server.py`), whose worker runs `answer` here; this module also answers when
there is no server, and runs `tokentop hook` itself and the verbs.
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TextIO

import msgspec

from tokentop.commands.hook_escalation import ACTOR, AGENT
from tokentop.commands.hook_wire import INPUT_WAIT_S, MAX_INPUT_BYTES, read_stdin
from tokentop.model import SessionKey
from tokentop.processes.registry import (
    Record,
    SessionRecord,
    SoftStopRecord,
    append,
    default_path,
    latest_sessions,
    read,
    soft_stop_episode,
)
from tokentop.render.text import safe

if TYPE_CHECKING:
    import argparse

    from tokentop.config import Config
    from tokentop.engine.ledger import CostFn
    from tokentop.model import SessionSnapshot
    from tokentop.policy.detectors import Finding
    from tokentop.sources.base import FileParser

DESCRIPTION = "A Claude Code hook for SessionStart and PreToolUse (soft stop)."
EXIT_GO_ON = 0
EXIT_ERROR = 0
"""tokentop's own error: reported on stderr, and the agent goes on."""
EXIT_BLOCK = 2
_ID_LIKE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
TTY_HELP = """\
tokentop hook: Claude Code runs this before tool calls, with its hook JSON on stdin; it maps
the session to its agent process and blocks the tool calls of a session over its budget or
looping. It reads nothing from a terminal. To set it up:

    tokentop hook install          # adds it to ~/.claude/settings.json (shows a diff first)

`tokentop hook --help` lists its options.
"""


class HookInput(msgspec.Struct):
    """The fields of Claude Code's hook JSON that tokentop reads."""

    session_id: str = ""
    transcript_path: str = ""
    cwd: str = ""
    hook_event_name: str = ""
    tool_name: str = ""


class HookFiles(msgspec.Struct, frozen=True):
    """Where the hook keeps things; flags and environment variables can move each."""

    registry: Path
    config: Path | None = None
    """None: the default config file (which may be absent)."""
    cache_dir: Path | None = None
    """Per-session read state, so each call reads only new bytes; None reads from scratch."""


class Asker(msgspec.Struct, frozen=True):
    """The process that asked, when it is not this one (the hook server's client): the agent
    is looked for among its ancestors, and only while it still waits for the answer (so its
    pid cannot have been reused by then)."""

    pid: int
    waiting: Callable[[], bool]


def cmd_hook(args: argparse.Namespace) -> int:
    """`tokentop hook [install|stop]` from the main CLI (answers in this process)."""
    if args.verb == "install":
        from tokentop.commands.hook_install import install, statusline_command

        line = None if args.no_statusline else statusline_command()
        return install(args.settings, yes=args.yes, statusline=line)
    if args.verb == "stop":
        from tokentop.commands.hook_stop import stop_servers

        return stop_servers(sys.stdout)
    err = sys.stderr if sys.stderr is not None else io.StringIO()  # started with fd 2 closed
    if sys.stdin is not None and sys.stdin.isatty():  # a person ran it: say what it is for
        err.write(TTY_HELP)
        return EXIT_GO_ON
    raw = read_stdin(MAX_INPUT_BYTES + 1, INPUT_WAIT_S)  # b"" when stdin is closed (`<&-`)
    return answer(raw, args.registry, args.config, err)


def answer(
    raw: bytes,
    registry: str | Path | None,
    config: str | Path | None,
    err: TextIO,
    asker: Asker | None = None,
) -> int:
    """The exit status for one hook call (its reason on `err`), with the files the options
    and the environment name; never raises."""
    from tokentop.engine.state_cache import default_cache_dir

    try:
        where = Path(registry) if registry else default_path()
        files = HookFiles(where, Path(config) if config else None, default_cache_dir() / "hook")
        return handle(raw, files, time.time(), err, asker)
    except Exception as error:  # never a traceback, never a blocked agent for our own fault
        return fail(err, f"internal error: {error!r}")


def fail(err: TextIO, message: str) -> int:
    """One line on stderr (escaped: it may quote the input); the agent goes on."""
    err.write(f"tokentop hook: {safe(message)[:500]}\n")
    return EXIT_ERROR


def cache_name(session_id: str) -> str:
    """A folder name for the session: the id itself when uuid-like, else a hash of it."""
    if _ID_LIKE.fullmatch(session_id):
        return session_id
    import hashlib

    return "h-" + hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def read_input(raw: bytes) -> HookInput | str:
    """The hook's input, or why it is unusable."""
    if len(raw) > MAX_INPUT_BYTES:
        return f"hook input larger than {MAX_INPUT_BYTES} bytes ignored"
    if not raw.strip():
        return "no hook input on stdin"
    try:
        hook = msgspec.json.decode(raw, type=HookInput)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as error:
        return f"unreadable hook input on stdin ({error})"
    if not hook.session_id:
        return "the hook input has no session_id"
    if "\0" in hook.transcript_path or "\0" in hook.session_id:
        return "NUL in the hook input's session_id or transcript_path"
    return hook


def is_transcript(path: str) -> bool:
    """Only an absolute path to a regular .jsonl file is read (never a FIFO or a device)."""
    if not os.path.isabs(path) or not path.endswith(".jsonl"):
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def handle(
    raw: bytes, files: HookFiles, now: float, err: TextIO, asker: Asker | None = None
) -> int:
    """Answer one hook call; returns the exit status."""
    hook = read_input(raw)
    if isinstance(hook, str):
        return fail(err, hook)
    call = HookCall(hook, files, now, asker)
    call.remember()
    if hook.hook_event_name != "PreToolUse" or not hook.transcript_path:
        return EXIT_GO_ON
    if not is_transcript(hook.transcript_path):
        return fail(err, f"not a transcript file: {hook.transcript_path[:200]}")
    try:
        from tokentop.config import load_config
        from tokentop.history.session_budgets import read_budgets

        config = msgspec.structs.replace(
            load_config(files.config), session_budgets=read_budgets()
        )  # the budgets set with `b` in the app count here too
    except Exception as error:  # ConfigError, or anything else: never block on our own fault
        return fail(err, str(error))
    findings = call.soft_stop(config)
    if findings:
        err.write(stop_message(findings))
        return EXIT_BLOCK
    return EXIT_GO_ON


class HookCall:
    """One hook invocation: its input, the registry as it was read, and the time."""

    def __init__(
        self, hook: HookInput, files: HookFiles, now: float, asker: Asker | None = None
    ) -> None:
        self.hook = hook
        self.files = files
        self.now = now
        self.asker = asker
        self.key = SessionKey(AGENT, hook.session_id)
        self.records: list[Record] = read(files.registry)[0]
        self.known = latest_sessions(self.records).get(self.key)
        """The session's agent as the registry has it (and as `remember` records it)."""

    def append(self, record: Record) -> None:
        append(self.files.registry, record)  # a registry we cannot write must not stop the agent

    def remember(self) -> None:
        """Record the agent process on SessionStart, or the first time a session is seen."""
        known = self.known
        if known is not None and self.hook.hook_event_name != "SessionStart":
            return
        from tokentop.processes.finding import find_agent_ancestor

        ref = find_agent_ancestor(self.asker.pid if self.asker is not None else None)
        if self.asker is not None and not self.asker.waiting():
            return  # the client has gone: the ancestors found may be another process's
        pid, started = (ref.pid, ref.create_time) if ref is not None else (0, 0.0)
        if known is not None and (known.pid, known.create_time) == (pid, started):
            return
        hook, cmdline = self.hook, ref.cmdline if ref is not None else ()
        where = (hook.cwd, hook.transcript_path, cmdline)
        self.known = SessionRecord(AGENT, hook.session_id, pid, started, "hook", self.now, *where)
        self.append(self.known)

    def soft_stop(self, config: Config) -> list[Finding]:
        """Why this tool call must be blocked (none: go on); escalates an ignored stop."""
        if not config.policy.soft_stop.enabled:
            return []
        from tokentop.pricing import build_table  # not commands.common: it imports every source

        transcript, cost = Path(self.hook.transcript_path), build_table(config.prices).cost
        session = read_session(transcript, self.key, self.now, cost, self.files.cache_dir)
        findings = stop_reasons(session, config, self.now) if session is not None else []
        episode = soft_stop_episode(self.records, self.key)
        sid = self.key.session_id
        if not findings or session is None:
            if episode:
                self.append(SoftStopRecord(AGENT, sid, "cleared", self.now, 0))
            return []
        reason = "; ".join(f.reason for f in findings)
        if not episode:
            self.append(SoftStopRecord(AGENT, sid, "blocked", self.now, session.responses, reason))
            self.log_block(reason)
        else:
            self.escalate_if_due(episode, session, config, reason)
        return findings

    def log_block(self, reason: str) -> None:
        """The first blocked call of an episode is an action like a pause: in the shared
        action log, so the app, `guard` and the store know the hook stopped the agent."""
        from tokentop.processes.control import ActionResult, ProcessController, default_action_log

        pid = self.known.pid if self.known is not None else 0
        message = (
            f"Blocked a {safe(self.hook.tool_name) or 'tool'} call: the agent was told to stop."
        )
        result = ActionResult(
            "block", True, (), message, reason, "policy:soft-stop", self.now, pid, str(self.key)
        )
        ProcessController(log_path=default_action_log(), actor=ACTOR).log(result)

    def escalate_if_due(
        self, episode: list[SoftStopRecord], session: SessionSnapshot, config: Config, reason: str
    ) -> None:
        """Carry out the Watchdog's escalation (pause or kill, `[policy.soft_stop] then`)
        once the agent has ignored the stop for long enough."""
        from tokentop.clock import FakeClock
        from tokentop.policy.watchdog import Watchdog

        if any(step.state == "escalated" for step in episode):
            return
        first = episode[0]
        decision = Watchdog(config, FakeClock(self.now)).escalation(
            session, (first.timestamp, first.responses), reason
        )
        record = self.known
        from tokentop.commands.hook_escalation import exact_agent, spawn_escalation

        if decision is None or record is None or not exact_agent(record):
            return
        spawn_escalation(decision.action, record, decision.reason)
        self.append(
            SoftStopRecord(
                AGENT, first.session_id, "escalated", self.now, session.responses, decision.reason
            )
        )


def read_session(
    transcript: Path, key: SessionKey, now: float, cost: CostFn, cache_dir: Path | None = None
) -> SessionSnapshot | None:
    """The session as the ledger sees it, from its transcript and its subagents' files.

    With a `cache_dir`, offsets and counters are kept between calls, so each tool call reads
    only what was appended since the last one (a long session's transcript runs to 10s of MB).
    """
    from tokentop.engine.engine import Engine

    subagents = transcript.parent / transcript.stem / "subagents"
    cache = cache_dir / cache_name(key.session_id) if cache_dir is not None else None
    source = SessionFolder(transcript.parent)
    engine = Engine([source], cost, cache_dir=cache, workers=1)
    engine.load_cache()
    engine.process([transcript, *sorted(subagents.glob("agent-*.jsonl"))])
    engine.save_cache()
    sessions = engine.snapshot(at=now).sessions
    mine = [s for s in sessions if s.key == key]
    return (mine or sorted(sessions, key=lambda s: s.last_ts))[-1] if sessions else None


class SessionFolder:
    """The Claude Code source narrowed to one project folder, so the engine reads one session."""

    name: ClassVar[str] = AGENT

    def __init__(self, folder: Path) -> None:
        from tokentop.sources.claude_code import ClaudeCodeSource

        self.folder = folder
        self._claude = ClaudeCodeSource(config_dirs=[])

    def roots(self) -> list[Path]:
        return [self.folder]

    def is_transcript(self, path: Path) -> bool:
        return path.suffix == ".jsonl"

    def new_parser(self, path: Path) -> FileParser:
        return self._claude.new_parser(path)


def stop_reasons(session: SessionSnapshot, config: Config, now: float) -> list[Finding]:
    """Why the agent must stop, as the one Watchdog judges it (see `Watchdog.stop_reasons`)."""
    from tokentop.clock import FakeClock
    from tokentop.policy.watchdog import Watchdog

    return Watchdog(config, FakeClock(now)).stop_reasons(session)


LIFTED_BY: dict[str, str] = {
    "budget": "raising this session's budget (key b in tokentop, or `tokentop run --budget`; "
    "a session's own budget beats the config's)",
    "loop": "changing [policy.loop] in tokentop's config",
}
"""What lifts each kind of stop, for the agent to pass on: the config alone does not lift a
budget set for the session."""


def stop_message(findings: list[Finding]) -> str:
    reasons = "; and ".join(safe(f.reason) for f in findings)
    lifts = " or ".join(dict.fromkeys(LIFTED_BY[f.detector] for f in findings))
    return (
        f"tokentop: stop. This session is {reasons}.\n"
        "Do not start anything new and do not retry the same thing. Reply with a short summary "
        "of what is done, what is left and what blocked you, then end your turn.\n"
        f"(The user can lift this by {lifts}.)\n"
    )


def add_hook_args(p: argparse.ArgumentParser) -> None:
    """Options of `tokentop hook` (shared by the CLI and `python -m tokentop.commands.hook`)."""
    p.add_argument(
        "verb",
        nargs="?",
        choices=["install", "stop"],
        help="install: add to settings.json; stop: stop this user's hook servers",
    )
    p.add_argument("--registry", type=Path, metavar="FILE", help="session→process records file")
    p.add_argument("--settings", type=Path, metavar="FILE", help="Claude Code settings.json")
    p.add_argument("--yes", action="store_true", help="install without asking")
    p.add_argument(
        "--no-statusline",
        action="store_true",
        help="install: do not offer tokentop's status line (tokentop statusline)",
    )


def main(argv: list[str]) -> int:
    """`python -m tokentop.commands.hook` when `commands/hook.py` does not hand the call to the
    server: the hook without one (no arguments: straight to `cmd_hook`, no argparse, ~6 ms of
    imports with shutil), a terminal on stdin, the verbs, and the escalation helper."""
    if not argv:
        from types import SimpleNamespace

        defaults = SimpleNamespace(verb=None, registry=None, settings=None, yes=False, config=None)
        return cmd_hook(defaults)  # type: ignore[arg-type]
    if argv[:1] == ["escalate"]:
        from tokentop.commands.hook_escalation import escalate_main

        return escalate_main(argv[1:])
    import argparse

    p = argparse.ArgumentParser(prog="tokentop hook", description=DESCRIPTION, allow_abbrev=False)
    add_hook_args(p)
    p.add_argument("--config", type=Path, metavar="FILE", help="config TOML file")
    try:
        return cmd_hook(p.parse_args(argv))
    except KeyboardInterrupt:
        return 130
