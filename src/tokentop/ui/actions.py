"""Keys that open screens (details, help, budget) or act on processes.

Pause/resume, terminate and kill: map in a worker, confirm with pid and command, act in a
worker, report each result as a notification. Read-only mode refuses and hides them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from rich.text import Text
from textual import work
from textual.app import App

from tokentop.clock import Clock
from tokentop.config import Budget, Config
from tokentop.history.store import Store, StoreError
from tokentop.model import SessionKey, SessionSnapshot
from tokentop.processes.protocols import (
    ActionOutcome,
    ProcessControl,
    ProcessInfo,
    ProcessMapper,
    Verb,
    act,
)
from tokentop.render.text import command_line, safe
from tokentop.ui import keys
from tokentop.ui.screens.detail import SessionDetail
from tokentop.ui.screens.help import HelpScreen
from tokentop.ui.screens.modals import BudgetChoice, BudgetModal, ConfirmModal
from tokentop.ui.views.rows import Measured, Status, project_name

GUARDED_ACTIONS = frozenset({"pause_resume", "terminate", "kill"})
NO_PROCESS_HINT = (
    "start the agent with `tokentop run -- <command>` or install the Claude Code hook "
    "(`tokentop hook install`) so tokentop knows its process"
)


def stored_budgets(store: Store | None) -> dict[SessionKey, Budget]:
    """The budgets set with `b` in earlier runs, by session."""
    if store is None:
        return {}
    try:
        kept = store.budgets()
    except sqlite3.Error:
        return {}
    found: dict[SessionKey, Budget] = {}
    for name, budget in kept.items():
        agent, _, session_id = name.partition(":")
        found[SessionKey(agent, session_id)] = budget
    return found


class Step(NamedTuple):
    """One confirmed action on one session's process."""

    verb: Verb
    session: SessionSnapshot
    ref: ProcessInfo


class ActionsApp(App[None]):
    """The half of TokentopApp that opens dialogs and signals processes."""

    controller: ProcessControl | None
    mapper: ProcessMapper | None
    read_only: bool
    clock: Clock
    acted: dict[SessionKey, tuple[Status, float]]
    measured: dict[str, Measured]

    config: Config
    overrides: dict[SessionKey, Budget]
    store: Store | None

    def current(self) -> Measured | None:
        raise NotImplementedError

    def targets(self) -> list[Measured]:
        raise NotImplementedError

    def refresh_view(self) -> None:
        raise NotImplementedError

    def budget_of(self, session: SessionSnapshot) -> Budget:
        raise NotImplementedError

    # -- keys that open screens --------------------------------------------------------------

    async def action_open_details(self) -> None:
        here = self.current()
        if here is None:
            return
        screen = SessionDetail(here.session.key)
        await self.push_screen(screen)
        self.refresh_view()
        self.lookup_process(screen, here.session)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            rows = keys.key_help(self.config.keys, self.read_only)
            self.push_screen(HelpScreen(rows, 'Rebind keys in config.toml: [keys] kill = "K"'))

    def action_budget(self) -> None:
        here = self.current()
        if here is None:
            return
        session = here.session
        label = f"{project_name(session.cwd)} ({session.key})"

        def chosen(choice: BudgetChoice | None) -> None:
            if choice is None:
                return
            if choice.budget is None:
                self.overrides.pop(session.key, None)
            else:
                self.overrides[session.key] = choice.budget
            self.keep_budget(session.key, choice.budget)
            self.refresh_view()

        kept = self.store is not None
        self.push_screen(BudgetModal(label, self.budget_of(session), kept), chosen)

    def keep_budget(self, key: SessionKey, budget: Budget | None) -> None:
        """Save it for the hook, guard and run (and the next start of the app)."""
        if self.store is None:
            return
        try:
            self.store.set_budget(key, budget)
        except (StoreError, sqlite3.Error) as exc:
            self.notify(f"Budget kept for this run only: {exc}", severity="warning")

    # -- keys that signal processes ----------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Read-only mode removes the process actions from the footer and ignores their keys."""
        return not (self.read_only and action in GUARDED_ACTIONS)

    def action_pause_resume(self) -> None:
        self._request("pause-resume", "p")

    def action_terminate(self) -> None:
        self._request("terminate", "t")

    def action_kill(self) -> None:
        self._request("kill", "k")

    def _request(self, what: str, key: str) -> None:
        if self.read_only:
            return
        targets = self.targets()
        if not targets:
            self.notify("No session selected.", severity="warning")
            return
        if self.mapper is None or self.controller is None:
            self.notify("Process control is not available in this run.", severity="warning")
            return
        self._map_then_confirm(what, f"key:{key}", [(m.session, m.status) for m in targets])

    @work(thread=True, group="processes")
    def _map_then_confirm(
        self, what: str, origin: str, targets: list[tuple[SessionSnapshot, Status]]
    ) -> None:
        """Find each session's process (a /proc scan, so off the UI thread)."""
        mapper = self.mapper
        assert mapper is not None
        observe = getattr(mapper, "observe", None)  # lets a guess shared by two sessions show
        if observe is not None:
            observe(m.session for m in list(self.measured.values()) if m.status == "live")
        found = [(s, status, mapper.processes_for(s)) for s, status in targets]
        self.call_from_thread(self._confirm, what, origin, found)

    def _confirm(
        self,
        what: str,
        origin: str,
        found: Sequence[tuple[SessionSnapshot, Status, ProcessInfo | None]],
    ) -> None:
        plan = [Step(verb_for(what, st), s, ref) for s, st, ref in found if ref is not None]
        missing = [s for s, _, ref in found if ref is None]
        if not plan:
            names = ", ".join(project_name(s.cwd) for s in missing)
            self.notify(f"No process is mapped to {names}: {NO_PROCESS_HINT}.", severity="warning")
            return
        verbs = sorted({step.verb for step in plan})
        guesses = sum(is_guess(step.ref) for step in plan)
        warning = f" ({plural(guesses, 'guessed process')})" if guesses else ""
        title = f"{'/'.join(verbs).capitalize()} {plural(len(plan), 'session')}{warning}?"

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._run_plan(plan, origin)

        label = verbs[0].capitalize() if len(verbs) == 1 else "Go"
        self.push_screen(ConfirmModal(title, confirm_body(plan, missing), label), confirmed)

    @work(thread=True, group="processes")
    def _run_plan(self, plan: list[Step], origin: str) -> None:
        controller = self.controller
        assert controller is not None
        for step in plan:
            outcome = act(controller, step.verb, step.ref, origin, str(step.session.key))
            self.after_action(step, outcome, origin)
            self.call_from_thread(self._report, step, outcome)

    def after_action(self, step: Step, outcome: ActionOutcome, origin: str) -> None:
        """Called in the worker after each action (the app logs it to the store)."""

    def _report(self, step: Step, outcome: ActionOutcome) -> None:
        self.notify(
            outcome.message,
            title=f"{step.verb} {project_name(step.session.cwd)}",
            severity="information" if outcome.ok else "error",
        )
        if not outcome.ok:
            return
        key = step.session.key
        if step.verb == "resume":
            self.acted.pop(key, None)
        else:
            self.acted[key] = ("paused" if step.verb == "pause" else "killed", self.clock.now())
        self.refresh_view()

    @work(thread=True, group="processes")
    def lookup_process(self, screen: SessionDetail, session: SessionSnapshot) -> None:
        """Fill the detail view's process panel once the mapping is known."""
        ref = self.mapper.processes_for(session) if self.mapper is not None else None
        self.call_from_thread(_show_process, screen, ref)


def _show_process(screen: SessionDetail, ref: ProcessInfo | None) -> None:
    if screen.is_attached:
        screen.show_process(ref)


def verb_for(what: str, status: Status) -> Verb:
    if what == "pause-resume":
        return "resume" if status == "paused" else "pause"
    return "terminate" if what == "terminate" else "kill"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def confirm_body(plan: Sequence[Step], missing: Sequence[SessionSnapshot]) -> Text:
    """Each process as pid, how it was mapped and its command; guesses are called out."""
    body = Text()
    for step in plan:
        body.append(f"{step.verb} ", "bold")
        body.append(f"{project_name(step.session.cwd)} ({safe(str(step.session.key))})\n")
        body.append(f"  pid {step.ref.pid}", "bold")
        body.append(f"  mapped by {step.ref.how}\n", "dim")
        body.append(f"  {command_line(step.ref.cmdline, 70)}\n")
        if is_guess(step.ref):
            body.append(guess_warning(step.ref), "yellow")
    for session in missing:
        name = f"{project_name(session.cwd)} ({safe(str(session.key))})"
        body.append(f"skipped {name}: no process mapped\n", "dim")
    return body


def is_guess(ref: ProcessInfo) -> bool:
    """A process found by agent install and cwd rather than an exact mapping."""
    return ref.how == "heuristic" or not ref.confident


def guess_warning(ref: ProcessInfo) -> str:
    """Says plainly that the process is a guess, and why it may be the wrong one."""
    text = (
        "  ⚠ This process is a guess: an agent working in the session's folder,\n"
        "    not one known to run this session. Check the command before you\n"
        "    confirm; tokentop never acts on a guess by itself.\n"
    )
    if not ref.confident:
        text += "  ⚠ Ambiguous: another live session or agent shares this folder.\n"
    return text
