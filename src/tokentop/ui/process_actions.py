"""ProcessActions: the keys that act on a session: pause/resume, terminate, kill, budget.

Map in a worker (a /proc scan), confirm with pid, command and how it was mapped, act in a
worker. Each result is written to the store's action log under the session's real id and
reported to the watchdog, which judges again at once: the row shows paused or killed with
zero burn, and the keeper records how the session ended. Workers only post messages; the
app's handlers call `confirm` and `report` here, on the UI thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import msgspec
from rich.text import Text

from tokentop.config import Budget
from tokentop.history.store import Store, StoreError
from tokentop.model import Action, SessionKey, SessionSnapshot
from tokentop.policy.watchdog import Watchdog
from tokentop.processes.control import ActionResult
from tokentop.processes.protocols import (
    ActionOutcome,
    ProcessControl,
    ProcessInfo,
    ProcessMapper,
    act,
)
from tokentop.render.text import command_line, safe
from tokentop.ui.messages import ActionDone, ProcessesMapped, ProcessFound, Step
from tokentop.ui.screens.modals import BudgetChoice, BudgetModal, ConfirmModal
from tokentop.ui.views.rows import Listed, project_name

if TYPE_CHECKING:
    from textual.app import App

GUARDED_ACTIONS = frozenset({"pause_resume", "terminate", "kill"})
ENDING_VERBS = frozenset({"terminate", "kill"})
"""Actions that leave a tagged row no process to act on again: its tag goes once they
succeed (a paused one stays tagged, for the resume)."""
NO_PROCESS_HINT = (
    "start the agent with `tokentop run -- <command>` or install the Claude Code hook "
    "(`tokentop hook install`) so tokentop knows its process"
)


class ProcessActions:
    """Owned by the app; `rejudge` asks the watchdog for a judgement now (in the worker)."""

    def __init__(
        self,
        app: App[None],
        watchdog: Watchdog,
        rejudge: Callable[[], None],
        *,
        mapper: ProcessMapper | None,
        controller: ProcessControl | None,
        store: Store | None,
        on_store_error: Callable[[BaseException], None],
    ) -> None:
        self.app = app
        self.watchdog = watchdog
        self.rejudge = rejudge
        self.mapper = mapper
        self.controller = controller
        self.store = store
        self.on_store_error = on_store_error

    def request(self, what: str, key: str, targets: list[Listed], live: list[Listed]) -> None:
        """A key was pressed on `targets`; `live` lets a guess shared by two sessions show."""
        if not targets:
            self.app.notify("No session selected.", severity="warning")
            return
        if self.mapper is None or self.controller is None:
            self.app.notify("Process control is not available in this run.", severity="warning")
            return
        found: list[tuple[SessionSnapshot, str]] = [(m.session, m.status) for m in targets]
        work = partial(self._map, what, f"key:{key}", found, [m.session for m in live])
        self.app.run_worker(work, thread=True, group="processes")

    def _map(
        self,
        what: str,
        origin: str,
        targets: list[tuple[SessionSnapshot, str]],
        live: list[SessionSnapshot],
    ) -> None:
        mapper = self.mapper
        assert mapper is not None
        observe = getattr(mapper, "observe", None)
        if observe is not None:
            observe(live)
        found = [(s, status, mapper.processes_for(s)) for s, status in targets]
        self.app.post_message(ProcessesMapped(what, origin, found))

    def confirm(self, message: ProcessesMapped) -> None:
        """UI thread: ask before any signal; say which sessions have no known process."""
        found = message.found
        plan = [Step(verb_for(message.what, st), s, ref) for s, st, ref in found if ref]
        missing = [s for s, _, ref in found if ref is None]
        if not plan:
            names = ", ".join(project_name(s.cwd) for s in missing)
            text = f"No process is mapped to {names}: {NO_PROCESS_HINT}."
            self.app.notify(text, severity="warning")
            return
        verbs = sorted({step.verb for step in plan})
        guesses = sum(is_guess(step.ref) for step in plan)
        warning = f" ({plural(guesses, 'guessed process')})" if guesses else ""
        title = f"{'/'.join(verbs).capitalize()} {plural(len(plan), 'session')}{warning}?"

        def confirmed(yes: bool | None) -> None:
            if yes:
                work = partial(self._act, plan, message.origin)
                self.app.run_worker(work, thread=True, group="processes")

        label = verbs[0].capitalize() if len(verbs) == 1 else "Go"
        self.app.push_screen(ConfirmModal(title, confirm_body(plan, missing), label), confirmed)

    def _act(self, plan: list[Step], origin: str) -> None:
        """Worker: signal, log, tell the watchdog; then one judgement for all of it."""
        controller = self.controller
        assert controller is not None
        for step in plan:
            outcome = act(controller, step.verb, step.ref, origin, str(step.session.key))
            self._log(step, outcome, origin)
            self.watchdog.note_action(step.session.key, step.verb, outcome.ok, origin=origin)
            self.app.post_message(ActionDone(step, outcome))
        self.rejudge()

    def _log(self, step: Step, outcome: ActionOutcome, origin: str) -> None:
        """The store's action log, under the session's id, before the watchdog hears of it,
        so the summary of a session killed here lists the kill."""
        if self.store is None:
            return
        key = str(step.session.key)
        if isinstance(outcome, ActionResult):
            result = msgspec.structs.replace(outcome, session=key)
        else:
            result = ActionResult(
                step.verb, outcome.ok, (step.ref.pid,), outcome.message,
                f"{step.verb} requested in tokentop", origin, self.watchdog.clock.now(),
                step.ref.pid, key,
            )  # fmt: skip
        try:
            self.store.record_action(result)
        except Exception as exc:  # a locked or broken store must not stop the app
            self.on_store_error(exc)

    def report(self, message: ActionDone) -> None:
        step, outcome = message.step, message.outcome
        self.app.notify(
            outcome.message,
            title=f"{step.verb} {project_name(step.session.cwd)}",
            severity="information" if outcome.ok else "error",
        )

    def edit_budget(self, session: SessionSnapshot) -> None:
        """`b`: the watchdog judges by the new budget at once; the store keeps it."""
        key, label = session.key, f"{project_name(session.cwd)} ({session.key})"

        def chosen(choice: BudgetChoice | None) -> None:
            if choice is not None:
                self.watchdog.set_budget(key, choice.budget)
                self._keep_budget(key, choice.budget)
                self.app.run_worker(self.rejudge, thread=True, group="judge")

        current = self.watchdog.budget_of(session)
        self.app.push_screen(BudgetModal(label, current, self.store is not None), chosen)

    def _keep_budget(self, key: SessionKey, budget: Budget | None) -> None:
        """Saved for the hook, guard and run (and the next start of the app)."""
        if self.store is not None:
            try:
                self.store.set_budget(key, budget, "app")
            except (StoreError, sqlite3.Error) as exc:
                self.app.notify(f"Budget kept for this run only: {exc}", severity="warning")
            invalidate = getattr(self.watchdog.config.session_budgets, "invalidate", None)
            if invalidate is not None:
                invalidate()

    def look_up(self, session: SessionSnapshot) -> None:
        """Find the process of the session whose details just opened."""
        self.app.run_worker(partial(self._look_up, session), thread=True, group="processes")

    def _look_up(self, session: SessionSnapshot) -> None:
        ref = self.mapper.processes_for(session) if self.mapper is not None else None
        self.app.post_message(ProcessFound(session.key, ref))


def verb_for(what: str, status: str) -> Action:
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
