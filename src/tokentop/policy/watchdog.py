"""The one Watchdog: each snapshot becomes one judgement that every front-end reads.

A judgement says, per session, its state (live, idle, ended, paused, killed, terminated,
exited), its budget use and the detectors that hold; and, since the last judgement, the new
policy decisions, the budget threshold crossings and the sessions that ended, with how they
ended. It is made once, on the engine thread, so the app, `watch`, `guard`, `run`, `report` and
the hook can never disagree: a session killed by a key is recorded as killed everywhere, and
stops burning the moment tokentop knows it is stopped.

The watchdog only decides. Carrying a decision out is a front-end's job, which reports back
through `note_action` so the next judgement knows how the session was stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

import msgspec

from tokentop.clock import Clock, SystemClock
from tokentop.config import Budget, Config, SessionBudget
from tokentop.model import Action, LedgerSnapshot, SessionKey, SessionSnapshot
from tokentop.policy.acted import Acted, ActionFeed, ActionMemory
from tokentop.policy.budgets import BudgetUse, Level, budget_use, crossings
from tokentop.policy.detectors import (
    DETECTORS,
    Decision,
    Finding,
    PolicyState,
    budget_finding,
    crossed,
    detect,
    loop_finding,
    soft_stop_escalation,
)

SessionState = Literal["live", "idle", "ended", "paused", "killed", "terminated", "exited"]
"""How a session stands: the first three from its activity, the rest from its process."""
EndHow = Literal["killed", "terminated", "paused-then-exited", "exited", "idle"]
"""How a session ended: the action that ended it, else its process exiting, else quiet."""
ProcessState = Literal["running", "stopped", "gone"]
ProcessProbe = Callable[[SessionKey], "ProcessState | None"]
"""The state of the process exactly mapped to a session; None when none is known."""
Subscriber = Callable[["Judgement"], None]

PROBE_HORIZON_S = 24 * 3600.0
"""Sessions quiet for longer are not asked about their process (their record is history)."""
STOPPED: frozenset[SessionState] = frozenset({"paused", "killed", "terminated", "exited"})
"""States in which a session cannot be burning, whatever its last minutes say."""
FLAG_OF = {"loop": "L", "drift": "D", "runaway": "R", "stall": "S"}
"""Row flag letter per detector (budget has its own O/W flags)."""
_ENDING_OF_VERB: dict[str, EndHow] = {
    "kill": "killed",
    "terminate": "terminated",
    "pause": "paused-then-exited",
}


class Judged(msgspec.Struct, frozen=True, gc=False):
    """One session as judged: `session` has zero rates, and `use` no ETA, unless it is live
    (an idle, ended, paused or stopped session burns nothing)."""

    session: SessionSnapshot
    state: SessionState
    use: BudgetUse
    flags: str
    """Letters of the detectors that hold now (see FLAG_OF)."""
    reasons: tuple[str, ...] = ()
    """Why each detector holds now (a detail view shows them), judged here, not in the UI."""


class Ending(msgspec.Struct, frozen=True):
    key: SessionKey
    how: EndHow
    at: float


class Judgement(msgspec.Struct, frozen=True):
    """What one snapshot means; immutable, so any thread may read it."""

    snapshot: LedgerSnapshot
    sessions: tuple[Judged, ...]
    decisions: tuple[Decision, ...]
    """New since the previous judgement: each fires once per crossing."""
    crossings: tuple[tuple[SessionKey, Level], ...]
    """Live sessions whose budget level rose (warn, then over)."""
    endings: tuple[Ending, ...]
    burn_tokens_per_min: float
    """The header's "now": the sum of the rows' burn (which is zero unless live)."""
    burn_usd_per_hour: float

    def of(self, key: SessionKey) -> Judged | None:
        return next((j for j in self.sessions if j.session.key == key), None)


class Watchdog:
    """Judges snapshots; thread-safe, so keys may report actions from any thread."""

    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        *,
        probe: ProcessProbe | None = None,
        actions: ActionFeed | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.probe = probe
        self._overrides: dict[SessionKey, SessionBudget] = {}
        """Budgets set in this process (the store's, set by any process, are read too)."""
        self._lock = threading.Lock()
        self._policy = PolicyState()
        self._levels: dict[SessionKey, Level] = {}
        self._acts = ActionMemory(actions)
        """Actions on each session's process, by this process and, through `actions` (the
        shared action log), by every other tokentop process."""
        self._probed: dict[SessionKey, ProcessState | None] = {}
        """This judgement's answers of the probe: each process is asked once a tick."""
        self._ended: dict[SessionKey, tuple[float, EndHow]] = {}
        """Sessions whose ending was announced: their last activity then, and how."""
        self._budgets: dict[tuple[SessionKey, str], tuple[Budget, str]] = {}
        self._live: set[SessionKey] = set()
        """Sessions judged live last time: the ones whose detector memory a quiet spell clears."""
        self._judged: dict[
            SessionKey, tuple[SessionSnapshot, Judged, tuple[str, tuple[Budget, str]]]
        ] = {}
        """Each session's last judgement (before detectors), by the snapshot it judged."""
        self._last: Judgement | None = None
        self._subscribers: list[Subscriber] = []

    # -- the engine's side ------------------------------------------------------------------

    def subscribe(self, fn: Subscriber) -> None:
        """`fn` gets every judgement, on the engine thread: hand it over, never block there."""
        self._subscribers.append(fn)

    def observe(self, snapshot: LedgerSnapshot) -> None:
        """An engine listener: judge the snapshot and hand the judgement to every subscriber."""
        judgement = self.judge(snapshot)
        for fn in list(self._subscribers):
            fn(judgement)

    # -- inputs from front-ends ------------------------------------------------------------

    def set_budget(self, key: SessionKey, budget: Budget | None, origin: str = "app") -> None:
        """A budget set live in this process (the app's `b`; `run` when the store fails);
        None clears it. The store's budgets (`config.session_budgets`) are read too: of the
        two, the one set last wins."""
        with self._lock:
            if budget is None:
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = SessionBudget(budget, origin, self.clock.now())

    def overrides(self) -> dict[SessionKey, Budget]:
        """The budgets set for one session (in this process or in the store), by session."""
        with self._lock:
            stored = {
                key: own
                for name, own in self.config.session_budgets.items()
                if (key := SessionKey.parse(name)) is not None
            }
            found: dict[SessionKey, Budget] = {}
            for key in {*stored, *self._overrides}:
                own = _latest(stored.get(key), self._overrides.get(key))
                if own is not None:
                    found[key] = own.budget
            return found

    def note_action(
        self,
        key: SessionKey,
        verb: Action,
        ok: bool,
        at: float | None = None,
        origin: str = "",
    ) -> None:
        """An action carried out on the session's process; failed ones change nothing."""
        with self._lock:
            changed = self._acts.note(key, verb, ok, self.clock.now() if at is None else at, origin)
        if changed:
            self._forget_process(key)

    def _forget_process(self, key: SessionKey) -> None:
        forget = getattr(self.probe, "forget", None)
        if forget is not None:
            forget(key)  # ask the process again at the next judgement, not from a cache

    def budget_of(self, session: SessionSnapshot) -> Budget:
        with self._lock:
            return self._budget_of(session)

    # -- the judgement ---------------------------------------------------------------------

    def judge(self, snapshot: LedgerSnapshot) -> Judgement:
        """Judge every session of `snapshot` at the clock's now."""
        now = self.clock.now()
        with self._lock:
            refresh = getattr(self.probe, "refresh", None)
            if refresh is not None:
                refresh()  # exact mappings and exits other tokentop processes recorded
            acted = self._acts.pull()  # what other tokentop processes did meanwhile
            for key in acted:
                self._forget_process(key)
            if acted:  # a `run` stores its budget as it acts: read the store's again now
                invalidate = getattr(self.config.session_budgets, "invalidate", None)
                if invalidate is not None:
                    invalidate()
            self._probed = {}
            judged = [self._judge_one(s, now) for s in snapshot.sessions]
            decisions = self._decide(judged, now)
            raised = self._crossings(judged)
            endings = self._endings(judged, now)
            self._prune(snapshot)
            judgement = Judgement(
                snapshot,
                tuple(judged),
                tuple(decisions),
                tuple(raised),
                tuple(endings),
                sum(j.session.tokens_per_min for j in judged),  # zero unless live
                sum(j.session.usd_per_hour for j in judged),
            )
            self._last = judgement
            return judgement

    @property
    def last(self) -> Judgement | None:
        return self._last

    def stop_reasons(self, session: SessionSnapshot) -> list[Finding]:
        """Why an agent must stop before its next tool call (the hook asks): over its budget,
        or about to repeat a loop, each unless its detector's action is "none"."""
        with self._lock:
            budget = self._budget_of(session)
        config, policy = self.config, self.config.policy
        found = [
            budget_finding(session, config, budget) if policy.budget.action != "none" else None,
            loop_finding(session, config, self.clock.now(), ongoing=True)
            if policy.loop.action != "none"
            else None,
        ]
        return [f for f in found if f is not None and (f.detector, f.level) != ("budget", 1)]

    def escalation(
        self, session: SessionSnapshot, blocked: tuple[float, int], reason: str
    ) -> Decision | None:
        """The hook blocked the session's tool calls at `blocked` (time, responses then) and
        the agent carries on: the decision to pause or kill it, once due (`[policy.soft_stop]`)."""
        return soft_stop_escalation(session, self.config, self.clock.now(), blocked, reason)

    def _judge_one(self, session: SessionSnapshot, now: float) -> Judged:
        """Quiet sessions come back as the same snapshot object every second: their last
        judgement is reused while its state and budget hold."""
        state, rule = self._state(session, now), self._budget_rule(session)
        last = self._judged.get(session.key)
        if last is not None and last[0] is session and (state, rule) == last[2]:
            return last[1]
        given = session
        if state != "live" and (session.tokens_per_min or session.usd_per_hour):
            session = msgspec.structs.replace(session, tokens_per_min=0.0, usd_per_hour=0.0)
        use = budget_use(session, rule[0], self.config.alerts, active=state == "live")
        judged = Judged(session, state, msgspec.structs.replace(use, origin=rule[1]), "")
        self._judged[session.key] = (given, judged, (state, rule))
        return judged

    def _state(self, session: SessionSnapshot, now: float) -> SessionState:
        """The process says how a session stands when it is exactly known; else the last
        action does, until the session shows activity after it."""
        key = session.key
        acted = self._acts.get(key)
        process = self._probe(session, now, acted is not None)
        if process is None and acted is not None:
            self._acts.outdated(key, session.last_ts)  # active again since it?
            acted = self._acts.get(key)
        if process == "gone":
            return "exited" if acted is None or acted.verb == "pause" else _stopped(acted.verb)
        if process == "stopped":
            return "paused"
        if acted is not None and process is None:
            return _stopped(acted.verb)
        return self.config.activity(session.last_ts, now)

    def _probe(self, session: SessionSnapshot, now: float, acted: bool) -> ProcessState | None:
        """Processes are asked about only for sessions of the last day, or acted on: older
        ones are history, and a thousand of them must not cost a thousand lookups a second."""
        if self.probe is None or (now - session.last_ts > PROBE_HORIZON_S and not acted):
            return None
        key = session.key
        if key not in self._probed:  # the state and the stall detector both ask
            self._probed[key] = self.probe(key)
        return self._probed[key]

    def _budget_of(self, session: SessionSnapshot) -> Budget:
        return self._budget_rule(session)[0]

    def _budget_rule(self, session: SessionSnapshot) -> tuple[Budget, str]:
        """The session's budget and where it comes from: its own (set live, or kept in the
        store), else the config's most specific rule."""
        own = _latest(
            self._overrides.get(session.key),  # set in this process
            self.config.session_budgets.get(str(session.key)),  # kept in the store, read live
        )
        if own is not None:
            return own.budget, own.origin
        cache_key = (session.key, session.cwd)
        rule = self._budgets.get(cache_key)
        if rule is None:
            rule = self._budgets[cache_key] = self.config.configured_budget(
                session.key.agent, session.cwd
            )
        return rule

    def _decide(self, judged: list[Judged], now: float) -> list[Decision]:
        """Detectors on live sessions (stall on quiet ones whose process still runs); the
        budget detector measures against the same budget the rows show."""
        found: list[Decision] = []
        for i, j in enumerate(judged):
            alive = None
            if j.state in ("idle", "ended"):  # quiet: is its process still there (a stall)?
                alive = self._probe(j.session, now, False) == "running"
            key, live = j.session.key, j.state == "live"
            if not live and key in self._live:
                self._live.discard(key)
                self._policy.forget(key)  # only the stall detector judges a quiet session
            if not (live or alive):
                continue
            if live:
                self._live.add(key)
            held = detect(
                j.session,
                self.config,
                now,
                self._policy,
                process_alive=alive,
                live=live,
                budget=j.use.budget,
            )
            new = crossed(held, key, self._policy, live=live)
            found += [d for d in new if not self._acts.handled(key, d.detector)]
            judged[i] = msgspec.structs.replace(
                j, flags=self._flags(j.session.key), reasons=tuple(d.reason for d in held)
            )
        return found

    def _prune(self, snapshot: LedgerSnapshot) -> None:
        """Forget sessions the snapshot no longer holds (a `run` judges only its own; an
        engine restarted empty): what is kept per session stays bounded by what is judged."""
        if len(self._judged) <= len(snapshot.sessions):
            return
        keep = {s.key for s in snapshot.sessions}
        for table in (self._judged, self._levels, self._ended):
            for key in [k for k in table if k not in keep]:
                del table[key]
        self._budgets = {k: v for k, v in self._budgets.items() if k[0] in keep}
        self._live &= keep
        self._acts.prune(keep)
        self._policy.prune(keep)

    def _flags(self, key: SessionKey) -> str:
        levels = self._policy.levels
        return "".join(
            FLAG_OF[d] for d in DETECTORS if d in FLAG_OF and levels.get((key, d), 0) > 0
        )

    def _crossings(self, judged: list[Judged]) -> list[tuple[SessionKey, Level]]:
        current = {j.session.key: j.use.level for j in judged}
        live = {j.session.key for j in judged if j.state == "live"}
        self._levels, raised = crossings(self._levels, current, live)
        return raised

    def _endings(self, judged: list[Judged], now: float) -> list[Ending]:
        """Each session ends once, and again after new activity (a resumed session); an end
        seen for certain (killed, exited...) also replaces an earlier "idle" one."""
        found: list[Ending] = []
        idle_end_s = self.config.history.idle_end_s
        for j in judged:
            key, last_ts = j.session.key, j.session.last_ts
            how = _ending(j.state, self._acts.get(key))
            quiet = j.state in ("idle", "ended") and now - last_ts >= idle_end_s
            if how is None and quiet:
                how = "idle"
            before = self._ended.get(key)
            if how is None or before == (last_ts, how):
                continue
            if before is not None and before[0] == last_ts and how == "idle":
                continue
            self._ended[key] = (last_ts, how)
            found.append(Ending(key, how, now))
        return found


def _latest(a: SessionBudget | None, b: SessionBudget | None) -> SessionBudget | None:
    """Of two budgets set for a session, the one set last."""
    if a is None or b is None:
        return a or b
    return a if a.set_at >= b.set_at else b


def judge_once(
    snapshot: LedgerSnapshot, config: Config | None = None, probe: ProcessProbe | None = None
) -> Judgement:
    """One judgement of one snapshot at its own time (`sessions`, tests): a Watchdog of its
    own, so nothing is remembered."""
    from tokentop.clock import FakeClock

    return Watchdog(config or Config(), FakeClock(snapshot.taken_at), probe=probe).judge(snapshot)


def _stopped(verb: Action) -> SessionState:
    return "paused" if verb == "pause" else "killed" if verb == "kill" else "terminated"


def _ending(state: SessionState, acted: Acted | None) -> EndHow | None:
    if state in ("killed", "terminated"):
        return state
    if state == "exited":
        return _ENDING_OF_VERB.get(acted.verb, "exited") if acted is not None else "exited"
    return None
