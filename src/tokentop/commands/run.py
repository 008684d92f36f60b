"""`tokentop run`: launch an agent, follow the transcript it writes, and enforce a budget.

    tokentop run [--budget USD] [--budget-tokens N] [--on-budget warn|pause|kill] [--job NAME]
                 [--quiet] -- CMD…

The agent runs in its own process group, so its pid is known exactly (and recorded in the
session registry for the app and the guard). Its transcript is linked when it appears: a
session file that is new under the Claude Code or Codex roots since the launch and records the
agent's working directory. An existing session is linked too when its id is on the command
line (`codex resume <id>` appends to that session's rollout), or, when the command resumes a
session it picks itself (`codex resume --last`), an existing file of the agent's cwd that
grows after the launch; the budget then counts the whole session, as budgets do everywhere in
tokentop. While the agent runs, a one-line status goes to stderr (none with --quiet), and the
policy is applied to the linked sessions: the budget (the flags beat the config's budgets) and
the detectors with the actions set in config. Ctrl-C, SIGTERM and SIGHUP are passed on to the
agent's process group. With `--job NAME` the linked sessions are recorded as runs of that job,
with how the run ended (`report --by job`).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tokentop.commands.run_status import STATUS_EVERY_S, StatusLine, status_text
from tokentop.config import Budget
from tokentop.model import LedgerSnapshot, SessionKey, SessionSnapshot
from tokentop.quantities import tokens_arg, usd_arg

if TYPE_CHECKING:
    import subprocess

    from tokentop.config import Config
    from tokentop.engine.engine import Engine
    from tokentop.policy.detectors import Decision
    from tokentop.policy.watchdog import EndHow, Judgement, ProcessState
    from tokentop.processes.action_log import ActionResult
    from tokentop.processes.finding import ProcessRef

EXIT_STOPPED = 124
"""tokentop stopped the agent: a policy with action kill fired (over budget, looping...)."""
EXIT_FAILED = 125
"""tokentop itself failed before the agent ran: bad config, no command."""
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_CODES = f"""\
exit status:
  the agent's own   when it ends by itself (128+N when signal N ended it)
  {EXIT_STOPPED}               tokentop stopped it (a policy with action kill, e.g. over budget)
  {EXIT_FAILED}               tokentop could not start (bad config, no command) or its engine failed
  {EXIT_NOT_EXECUTABLE}               the command is not executable
  {EXIT_NOT_FOUND}               the command was not found
"""
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
POLL_S = 0.25


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Options of `tokentop run`; the exit codes go in its --help."""
    p.description = __doc__.split("\n")[0]
    p.epilog = EXIT_CODES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--budget", type=usd_arg, metavar="USD", help="dollar budget for the session")
    p.add_argument(
        "--budget-tokens", type=tokens_arg, metavar="N", help="token budget (all kinds; 2M, 500k)"
    )
    p.add_argument(
        "--on-budget",
        choices=["warn", "pause", "kill"],
        help="what to do at the budget (default: policy.budget.action in config, i.e. warn)",
    )
    p.add_argument(
        "--job",
        metavar="NAME",
        help="record the session as a run of this recurring job (report --by job)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing; the exit status tells")
    p.add_argument("agent", nargs=argparse.REMAINDER, help="-- the agent command and its args")


def cmd_run(args: argparse.Namespace) -> int:
    from tokentop.commands.common import CliError, load_config, make_engine

    argv = args.agent[1:] if args.agent[:1] == ["--"] else args.agent
    err = sys.stderr
    if not argv:
        err.write("tokentop run: no agent command given (tokentop run [options] -- CMD ...)\n")
        return EXIT_FAILED
    try:
        config = run_config(load_config(args), args)
        engine = make_engine(args, config)
    except CliError as error:
        err.write(f"tokentop: {error}\n")
        return EXIT_FAILED
    budget = Budget(args.budget, args.budget_tokens)
    run = Run(engine, config, err, quiet=args.quiet, budget=budget, job=args.job or "")
    return run.run(argv)


def run_config(config: Config, args: argparse.Namespace) -> Config:
    """The config with the command line's budget action applied (its budget is the
    session's own, kept in the store when the session is linked: see `Run.keep_budget`)."""
    import msgspec

    if args.on_budget is None:
        return config
    budget = msgspec.structs.replace(config.policy.budget, action=args.on_budget)
    policy = msgspec.structs.replace(config.policy, budget=budget)
    return msgspec.structs.replace(config, policy=policy)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def named_sessions(argv: list[str]) -> set[str]:
    """Session ids on an agent's command line (`codex resume <id>`, `claude -r <id>`)."""
    return {m.lower() for arg in argv for m in _UUID.findall(arg)}


def resumes(argv: list[str]) -> bool:
    """Whether the agent continues an existing session it may pick itself (`codex resume
    --last`, or its picker): then an existing file of this cwd that grows is linked too."""
    return "resume" in argv[1:]


class Linker:
    """Which transcripts belong to the launched agent: new since launch with its cwd, or an
    existing session named on its command line."""

    def __init__(
        self, cwd: str, existing: set[Path], named: set[str] | None = None, resuming: bool = False
    ) -> None:
        self.cwd = os.path.realpath(cwd)
        self.existing = existing
        self.named = named or set()
        """Session ids on the command line: their existing files are linked when they grow."""
        self.resuming = resuming
        """The agent resumes a session it picks: existing files that grow are candidates."""
        self.linked: set[Path] = set()
        self.rejected: set[Path] = set()
        self.pending: set[Path] = set()
        """New files whose cwd is not known yet (no record carrying it has been read)."""
        self.resumed: set[Path] = set()
        """Existing files of a named session: linked whatever cwd they record."""

    def worth_reading(self, changed: set[Path]) -> set[Path]:
        fresh = changed - self.existing - self.rejected - self.linked
        resumed = {p for p in changed & self.existing if self._named(p)} - self.linked
        self.resumed |= resumed
        if self.resuming:  # judged by cwd like new files
            fresh |= (changed & self.existing) - self.rejected - self.linked
        self.pending |= fresh | resumed
        return (changed & self.linked) | self.pending

    def _named(self, path: Path) -> bool:
        stem = path.stem.lower()
        return any(stem.endswith(sid) for sid in self.named)

    def judge(self, snapshot: LedgerSnapshot) -> list[SessionSnapshot]:
        """Sort pending files by their session's cwd; returns the newly linked sessions."""
        by_file = {f: s for s in snapshot.sessions for f in s.files}
        new: list[SessionSnapshot] = []
        for path in list(self.pending):
            session = by_file.get(str(path))
            if session is None or not (session.cwd or path in self.resumed):
                continue  # nothing readable yet
            self.pending.discard(path)
            if path not in self.resumed and os.path.realpath(session.cwd) != self.cwd:
                self.rejected.add(path)
                continue
            self.linked.add(path)
            new.append(session)
        return new

    def sessions(self, snapshot: LedgerSnapshot) -> list[SessionSnapshot]:
        linked = {str(p) for p in self.linked}
        return [s for s in snapshot.sessions if linked.intersection(s.files)]


class Run:
    """One launched agent, followed until it exits."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        err: TextIO,
        *,
        quiet: bool,
        budget: Budget | None = None,
        job: str = "",
    ) -> None:
        from tokentop.policy.watchdog import Watchdog
        from tokentop.processes.action_log import ActionLogFollower
        from tokentop.processes.control import ProcessController, default_action_log

        self.engine = engine
        self.config = config
        self.err = err
        self.child_state: str | None = None
        """The launched agent's process state, as last asked (the Watchdog's probe)."""
        self.watchdog = Watchdog(config, probe=self._probe, actions=ActionLogFollower())
        self._last_state: ProcessState | None = None
        self.ended: dict[SessionKey, EndHow] = {}
        """How each linked session ended, as the Watchdog said (recorded at the end)."""
        self.controller = ProcessController(log_path=default_action_log(), actor="run")
        self.changed: set[Path] = set()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.stopped: ActionResult | None = None
        self.linker = Linker(os.getcwd(), set())
        self.sessions: list[SessionSnapshot] = []
        """The linked sessions as last seen."""
        self.findings: list[Decision] = []
        """Detector decisions, kept in the store with the summaries at the end."""
        self.status = StatusLine(err, enabled=not quiet)
        self.budget = budget if budget is not None and budget.is_set else None
        """`--budget` / `--budget-tokens`: the linked sessions' own budget."""
        self.job = job
        """`--job NAME`: the linked sessions are runs of this job."""
        self.exit_code: int | None = None
        self.registered = False
        """Whether the registry maps a session to the agent (then its exit is recorded)."""

    def run(self, argv: list[str]) -> int:
        from tokentop.engine.changes import ChangeFeed
        from tokentop.processes.finding import launch

        roots = [root for _, root in self.engine.roots]
        feed = ChangeFeed(roots, self._relevant, self._on_changes, sweep_interval=STATUS_EVERY_S)
        feed.start()  # before the launch, so the new transcript's creation is seen
        self.linker.existing = set(self.engine.find_transcripts())
        self.linker.named = named_sessions(argv)
        self.linker.resuming = resumes(argv) and not self.linker.named
        try:
            popen, ref = launch(argv)
        except OSError as error:
            feed.stop()
            return self._launch_failed(argv[0], error)
        previous = {sig: signal.signal(sig, self._forward(popen.pid)) for sig in FORWARDED}
        try:
            self._follow(popen, ref)
            self._record_exit(ref)  # before the feed's threads stop (up to a second)
        except Exception as exc:  # the agent runs on, unwatched: say so, then wait for it
            return self._engine_failed(exc, popen, ref)
        finally:
            feed.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        code = self.exit_code = self._exit_status(popen)
        ended = "stopped by tokentop" if self.stopped is not None else f"exited with {code}"
        self.child_state = "gone"  # as the Watchdog judges it: an ended agent burns nothing
        judgement = self.watchdog.judge(self._linked(self.sessions))
        self._note_endings(judgement)
        self.status.finish(status_text(judgement, ended))
        self._record_history()
        return code

    def _engine_failed(
        self, exc: Exception, popen: subprocess.Popen[bytes], ref: ProcessRef
    ) -> int:
        from tokentop.engine.failure import failure_of

        self.err.write(failure_of(exc).line() + "\n")
        self.err.flush()
        popen.wait()
        self._record_exit(ref)
        return EXIT_FAILED

    def _record_exit(self, ref: ProcessRef) -> None:
        """Tell the registry that the agent ended (we are its parent and reaped it: exact),
        so every tokentop process showing its sessions reads `exited` at its next judgement,
        as it reads a kill from the action log, not when its view of the process expires."""
        if not self.registered:
            return
        from tokentop.processes.registry import ExitRecord, append, default_path

        problem = append(default_path(), ExitRecord(ref.pid, ref.create_time, time.time()))
        if problem:
            self.status.note(f"the exit is not in the registry: {problem}")

    def _record_history(self) -> None:
        """Keep the linked sessions' summaries, findings and actions in the store, as the
        app does when a session's process exits. A store that fails only costs the history."""
        import sqlite3

        from tokentop.clock import SystemClock
        from tokentop.history.store import JobTag, Store, StoreError
        from tokentop.history.summary import SummaryRecorder
        from tokentop.processes.action_log import default_action_log

        self.engine.process(self.linker.linked)  # the agent's last lines
        sessions = self.linker.sessions(self.engine.snapshot())
        if not sessions:
            return
        self.child_state = "gone"  # how each ended, as the Watchdog tells it
        self._note_endings(self.watchdog.judge(self._linked(sessions)))
        try:
            with Store() as store:
                store.import_action_log(default_action_log())
                for finding in self.findings:
                    store.record_event(finding)
                recorder = SummaryRecorder(
                    store, self.config, SystemClock(), minutes_for=self.engine.minutes
                )
                for session in sessions:
                    recorder.record(session, self.ended.get(session.key, "exited"))
                    if self.job:
                        store.set_job(session.key, JobTag(self.job, "run", self._run_status()))
        except (StoreError, sqlite3.Error, OSError) as exc:
            self.status.note(f"history not recorded: {exc}")

    def _run_status(self) -> str:
        """How the job's run ended: "stopped" by tokentop, else by the agent's exit status."""
        if self.stopped is not None:
            return "stopped"
        return "ok" if self.exit_code == 0 else "error"

    def _relevant(self, path: Path) -> bool:
        return any(source.is_transcript(path) for source in self.engine.sources)

    def _on_changes(self, paths: set[Path]) -> None:
        with self.lock:
            self.changed |= paths
        self.wake.set()

    def _forward(self, pgid: int) -> Any:
        def forward(signum: int, frame: object) -> None:
            for sig in (signum, signal.SIGCONT):  # a paused agent acts on it only once continued
                try:
                    os.killpg(pgid, sig)
                except (ProcessLookupError, PermissionError):
                    return

        return forward

    def _follow(self, popen: subprocess.Popen[bytes], ref: ProcessRef) -> None:
        while popen.poll() is None and self.stopped is None:
            self.wake.wait(POLL_S)
            self.wake.clear()
            with self.lock:
                changed, self.changed = self.changed, set()
            self.engine.process(self.linker.worth_reading(changed))
            snapshot = self.engine.snapshot()
            for session in self.linker.judge(snapshot):
                self._record(session, ref)
            self.sessions, state = self.linker.sessions(snapshot), self.controller.status(ref)
            self.child_state = state
            judgement = self.watchdog.judge(self._linked(self.sessions))
            acted = self._carry_out_all(judgement, ref)
            if state != "gone" and not acted:  # else the action's note, or the last line, says
                self.status.show(judgement, state)

    def _record(self, session: SessionSnapshot, ref: ProcessRef) -> None:
        """Tell the registry (so the app and the guard map this session exactly), unless
        another process is known to run the session (a second agent in the same cwd); and
        keep the command line's budget as the session's own."""
        from tokentop.processes.registry import SessionRecord, append, default_path

        if self._elsewhere(session, ref):  # judged here by the flags, never stored as its own
            if self.budget is not None:
                self.watchdog.set_budget(session.key, self.budget, "run")
            return
        self.keep_budget(session.key)
        key = session.key
        record = SessionRecord(
            key.agent, key.session_id, ref.pid, ref.create_time, "launched", time.time(),
            session.cwd, session.files[0] if session.files else "", ref.cmdline,
        )  # fmt: skip
        problem = append(default_path(), record)
        if problem:
            self.status.note(f"{key} is not in the registry: {problem}")
        self.registered |= not problem

    def keep_budget(self, key: SessionKey) -> None:
        """`--budget` becomes the session's own budget in the store, as `b` in the app does,
        so every tokentop process shows and enforces it; in this process only when the
        store can't be written (said once)."""
        if self.budget is None:
            return
        from tokentop.history.store import Store, StoreError

        try:
            with Store() as store:
                store.set_budget(key, self.budget, "run")
        except (StoreError, OSError, sqlite3.Error) as exc:
            self.status.note(f"budget kept in this process only: {exc}")
            self.watchdog.set_budget(key, self.budget, "run")
            return
        invalidate = getattr(self.config.session_budgets, "invalidate", None)
        if invalidate is not None:
            invalidate()

    def _probe(self, key: SessionKey) -> ProcessState | None:
        """The launched agent's state: every session this Watchdog judges is linked to it
        (exact: it is our child). A state psutil could not read keeps the last one known."""
        from tokentop.processes.mapper import probe_state

        state = probe_state(self.child_state or "")
        if state is not None:
            self._last_state = state
        return self._last_state

    def _note_endings(self, judgement: Judgement) -> None:
        self.ended.update((e.key, e.how) for e in judgement.endings)

    def _linked(self, sessions: list[SessionSnapshot]) -> LedgerSnapshot:
        return LedgerSnapshot(time.time(), tuple(sessions), (), 0, 0)

    def _carry_out_all(self, judgement: Judgement, ref: ProcessRef) -> bool:
        """Carry out the judgement's decisions on the linked sessions; True when one paused or
        killed the agent (the judgement then no longer says how it stands)."""
        self._note_endings(judgement)
        by_key = {j.session.key: j.session for j in judgement.sessions}
        acted = False
        for decision in judgement.decisions:
            self.findings.append(decision)
            acted |= self._carry_out(decision, ref, by_key[decision.session])
        return acted

    def _elsewhere(self, session: SessionSnapshot, ref: ProcessRef) -> int:
        from tokentop.processes.mapper import runs_elsewhere
        from tokentop.processes.registry import default_path

        return runs_elsewhere(session, ref, default_path())

    def _carry_out(self, decision: Decision, ref: ProcessRef, snapshot: SessionSnapshot) -> bool:
        """Pause or kill the agent as decided (True: the controller acted), or say why not."""
        origin, session = f"policy:{decision.detector}", str(decision.session)
        other = self._elsewhere(snapshot, ref) if decision.action in ("pause", "kill") else 0
        if other:
            note = f"not acted: {session} runs in pid {other}, not in the agent tokentop started"
            self.status.note(f"{decision.reason}: {note}")
            return False
        if decision.action not in ("pause", "kill"):
            self.status.note(f"warning: {decision.reason}")
            return False
        verb = decision.verb
        result = self.controller.carry_out(verb, ref, decision.reason, origin, session=session)
        if verb == "kill":
            self.stopped = result if result.ok else None
        # SIGSTOP cannot be refused: a pause whose stop was not seen within the controller's
        # wait (an agent in the middle of a write on a busy machine) still takes effect.
        took = result.ok or (verb == "pause" and bool(result.pids))
        self.watchdog.note_action(decision.session, verb, took, result.timestamp, result.origin)
        self.status.note(f"{decision.reason}: {result.message}")
        return True

    def _launch_failed(self, command: str, error: OSError) -> int:
        self.err.write(f"tokentop run: cannot run {command}: {error.strerror or error}\n")
        return EXIT_NOT_FOUND if isinstance(error, FileNotFoundError) else EXIT_NOT_EXECUTABLE

    def _exit_status(self, popen: subprocess.Popen[bytes]) -> int:
        """EXIT_STOPPED when our kill ended it (the controller reaped it, so Popen's own code
        is meaningless then); else the agent's status, 128+N for a signal, as shells report."""
        code = popen.wait()  # reaps it (0 when the controller already has)
        if self.stopped is not None:
            return EXIT_STOPPED
        return 128 - code if code < 0 else code
