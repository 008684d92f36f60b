"""The Watchdog: states, zero burn once stopped, how sessions end, crossings, live budgets."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec

from tokentop.clock import FakeClock
from tokentop.config import Budget, parse_config
from tokentop.history.keeper import HistoryKeeper
from tokentop.history.store import Store
from tokentop.model import SessionKey
from tokentop.policy.budgets import Level
from tokentop.policy.watchdog import ProcessState, Watchdog
from ui_fakes import NOW, ledger, make_session

KEY = SessionKey("claude", "s1")


def watchdog(
    text: str = "", processes: dict[SessionKey, ProcessState] | None = None
) -> tuple[Watchdog, FakeClock]:
    clock = FakeClock(NOW)
    known = processes if processes is not None else {}
    return Watchdog(parse_config(text), clock, probe=known.get), clock


def test_states_follow_activity_until_an_action_or_the_process_says_otherwise() -> None:
    processes: dict[SessionKey, ProcessState] = {}
    dog, _ = watchdog(processes=processes)
    live = make_session("s1", ago=5, tpm=1e6, usd_h=30.0)
    assert dog.judge(ledger([live])).sessions[0].state == "live"
    processes[KEY] = "stopped"  # SIGSTOPped by `tokentop run` or by hand
    judged = dog.judge(ledger([live])).sessions[0]
    assert judged.state == "paused"
    assert (judged.session.tokens_per_min, judged.session.usd_per_hour) == (0.0, 0.0)
    assert judged.use.eta_s is None


def test_a_killed_session_stops_burning_at_once_and_the_header_counts_only_live_ones() -> None:
    dog, _ = watchdog("[budgets]\nusd = 100\n")
    burning = make_session("s1", ago=5, tpm=3.6e6, usd_h=184.0)
    other = make_session("s2", ago=5, tpm=1e6, usd_h=10.0)
    first = dog.judge(ledger([burning, other]))
    assert first.burn_tokens_per_min == 4.6e6
    dog.note_action(KEY, "kill", ok=True, at=NOW)
    after = dog.judge(ledger([burning, other]))
    killed = after.of(KEY)
    assert killed is not None and killed.state == "killed"
    assert killed.session.tokens_per_min == 0.0 and killed.use.eta_s is None
    assert (after.burn_tokens_per_min, after.burn_usd_per_hour) == (1e6, 10.0)


def test_a_failed_action_changes_nothing() -> None:
    dog, _ = watchdog()
    dog.note_action(KEY, "kill", ok=False, at=NOW)
    assert dog.judge(ledger([make_session("s1", ago=5)])).sessions[0].state == "live"


def test_each_session_ends_once_with_the_action_that_ended_it() -> None:
    processes: dict[SessionKey, ProcessState] = {}
    dog, clock = watchdog(processes=processes)
    sessions = [make_session(s, ago=5) for s in ("s1", "s2", "s3", "s4")]
    keys = [s.key for s in sessions]
    assert dog.judge(ledger(sessions)).endings == ()
    dog.note_action(keys[0], "kill", ok=True, at=NOW)
    dog.note_action(keys[1], "terminate", ok=True, at=NOW)
    dog.note_action(keys[2], "pause", ok=True, at=NOW)
    for key in keys:
        processes[key] = "gone"
    clock.advance(2)
    ended = {e.key.session_id: e.how for e in dog.judge(ledger(sessions)).endings}
    assert ended == {"s1": "killed", "s2": "terminated", "s3": "paused-then-exited", "s4": "exited"}
    assert dog.judge(ledger(sessions)).endings == ()  # once


def test_a_quiet_session_ends_as_idle_and_ends_again_after_new_activity() -> None:
    dog, clock = watchdog("[history]\nidle_end_s = 600\n")
    quiet = make_session("s1", ago=700)
    assert [e.how for e in dog.judge(ledger([quiet])).endings] == ["idle"]
    assert dog.judge(ledger([quiet])).endings == ()
    resumed = make_session("s1", ago=-1000)  # active again, later on the clock
    clock.advance(2000)
    assert [e.how for e in dog.judge(ledger([resumed])).endings] == ["idle"]


def test_resume_and_new_activity_clear_a_pause() -> None:
    dog, _ = watchdog()
    dog.note_action(KEY, "pause", ok=True, at=NOW)
    session = make_session("s1", ago=5)
    assert dog.judge(ledger([session])).sessions[0].state == "paused"
    dog.note_action(KEY, "resume", ok=True, at=NOW + 1)
    assert dog.judge(ledger([session])).sessions[0].state == "live"
    dog.note_action(KEY, "pause", ok=True, at=NOW - 100)  # before the session's last line
    assert dog.judge(ledger([session])).sessions[0].state == "live"


def test_budget_crossings_fire_once_and_honour_a_live_budget() -> None:
    dog, _ = watchdog("[budgets]\nusd = 10\n")
    session = make_session("s1", ago=5, cost=1.0)
    assert dog.judge(ledger([session])).crossings == ()
    dog.set_budget(KEY, Budget(usd=1.1))
    assert dog.judge(ledger([session])).crossings == ((KEY, Level.WARN),)
    assert dog.judge(ledger([session])).crossings == ()
    dog.set_budget(KEY, Budget(usd=0.5))
    judgement = dog.judge(ledger([session]))
    assert judgement.crossings == ((KEY, Level.OVER),)
    assert judgement.sessions[0].use.budget == Budget(usd=0.5)


def test_the_budget_detector_measures_against_the_live_budget() -> None:
    dog, _ = watchdog("[budgets]\nusd = 10\n[policy.budget]\naction = 'kill'\n")
    session = make_session("s1", ago=5, cost=1.0)
    assert dog.judge(ledger([session])).decisions == ()
    dog.set_budget(KEY, Budget(usd=0.5))
    decisions = dog.judge(ledger([session])).decisions
    assert [(d.detector, d.action) for d in decisions] == [("budget", "kill")]


def test_history_never_fires_a_burst_of_decisions_or_crossings() -> None:
    dog, _ = watchdog("[budgets]\nusd = 0.5\n[policy.budget]\naction = 'kill'\n")
    old = make_session("s1", ago=5000, cost=9.0)
    judgement = dog.judge(ledger([old]))
    assert judgement.decisions == () and judgement.crossings == ()
    assert judgement.sessions[0].state in ("idle", "ended")
    assert judgement.sessions[0].use.level == Level.OVER  # coloured, not announced


def test_flags_name_the_detectors_that_hold() -> None:
    from tests.test_policy import calls

    dog, _ = watchdog()
    looping = make_session("s1", ago=5)
    looping = looping.__class__(**{**_fields(looping), "recent_tools": calls(*["Bash:t"] * 6)})
    judgement = dog.judge(ledger([looping]))
    assert judgement.sessions[0].flags == "L"
    assert [d.detector for d in judgement.decisions] == ["loop"]
    reasons = judgement.sessions[0].reasons  # judged on the engine thread, shown by the UI
    assert reasons and "Bash" in reasons[0]


def _fields(obj: object) -> dict[str, object]:
    import msgspec

    return msgspec.structs.asdict(obj)  # type: ignore[arg-type]


def test_the_history_keeper_records_each_ending_with_how_it_ended(tmp_path: Path) -> None:
    processes: dict[SessionKey, ProcessState] = {}
    dog, clock = watchdog(processes=processes)
    killed, exited = make_session("s1", ago=5), make_session("s2", ago=5)
    with Store(tmp_path / "history.db") as store:
        keeper = HistoryKeeper(store, dog.config, clock, use_git=False)
        dog.subscribe(keeper.take)
        dog.observe(ledger([killed, exited]))
        dog.note_action(killed.key, "kill", ok=True, at=NOW)
        processes[killed.key] = processes[exited.key] = "gone"
        clock.advance(1)
        dog.observe(ledger([killed, exited]))
        keeper.close()
        recorded = {s.session_id: s.end_reason for s in store.summaries()[0]}
    assert recorded == {"s1": "killed", "s2": "exited"}
    assert keeper.recorded == 2


def test_the_history_keeper_keeps_decisions_as_the_sessions_events(tmp_path: Path) -> None:
    dog, _ = watchdog("[budgets]\nusd = 0.5\n[policy.budget]\naction = 'kill'\n")
    with Store(tmp_path / "history.db") as store:
        keeper = HistoryKeeper(store, dog.config, dog.clock, use_git=False)
        dog.subscribe(keeper.take)
        dog.observe(ledger([make_session("s1", ago=5, cost=1.0)]))
        keeper.close()
        events = store.events_for(str(KEY))
    assert [(e.detector, e.action) for e in events] == [("budget", "kill")]


def test_the_keeper_writes_nothing_until_the_first_scan_is_done(tmp_path: Path) -> None:
    """Summaries can load the tokenizer and run git: not while the first view is read."""
    dog, _ = watchdog("[budgets]\nusd = 0.5\n[policy.budget]\naction = 'kill'\n")
    scanned = threading.Event()
    with Store(tmp_path / "history.db") as store:
        keeper = HistoryKeeper(store, dog.config, dog.clock, use_git=False, after=scanned)
        dog.subscribe(keeper.take)
        dog.observe(ledger([make_session("s1", ago=5, cost=1.0)]))
        assert not keeper.flush(0.5), "written before the scan ended"
        assert store.events_for(str(KEY)) == []
        scanned.set()
        assert keeper.flush(5)
        assert [e.detector for e in store.events_for(str(KEY))] == ["budget"]
        keeper.close()


def test_closing_the_keeper_mid_scan_still_writes_what_it_holds(tmp_path: Path) -> None:
    dog, _ = watchdog("[budgets]\nusd = 0.5\n[policy.budget]\naction = 'kill'\n")
    with Store(tmp_path / "history.db") as store:
        keeper = HistoryKeeper(store, dog.config, dog.clock, use_git=False, after=threading.Event())
        dog.subscribe(keeper.take)
        dog.observe(ledger([make_session("s1", ago=5, cost=1.0)]))
        started = time.monotonic()
        keeper.close(timeout=5)
        assert time.monotonic() - started < 1.0
        assert [e.detector for e in store.events_for(str(KEY))] == ["budget"]


def test_a_failing_store_is_reported_once_and_the_keeper_goes_on(tmp_path: Path) -> None:
    dog, _ = watchdog("[budgets]\nusd = 0.5\n[policy.budget]\naction = 'kill'\n")
    errors: list[Exception] = []
    store = Store(tmp_path / "history.db")
    keeper = HistoryKeeper(store, dog.config, dog.clock, use_git=False, on_error=errors.append)
    dog.subscribe(keeper.take)
    store.close()  # every write now fails
    for sid in ("s1", "s2"):
        dog.observe(ledger([make_session(sid, ago=5, cost=1.0)]))
        assert keeper.flush(5)
    keeper.close()
    assert len(errors) == 1


def test_a_certain_ending_replaces_an_idle_one_and_a_paused_session_never_ends_idle() -> None:
    processes: dict[SessionKey, ProcessState] = {}
    dog, clock = watchdog("[history]\nidle_end_s = 600\n", processes=processes)
    quiet = make_session("s1", ago=700)
    assert [e.how for e in dog.judge(ledger([quiet])).endings] == ["idle"]
    processes[KEY] = "gone"  # its exact process is found gone later: it exited
    clock.advance(1)
    assert [e.how for e in dog.judge(ledger([quiet])).endings] == ["exited"]
    paused = make_session("s2", ago=700)
    processes[paused.key] = "stopped"
    assert dog.judge(ledger([paused])).endings == ()


def test_a_week_of_10k_sessions_keeps_the_watchdog_flat_and_probes_each_once_a_tick() -> None:
    """10,000 sessions start and end over a simulated week (one a minute, each live for ten
    minutes), judged every twenty minutes as a caller sees them (the last two hours' worth):
    what the Watchdog keeps stays bounded by what it is shown, its memory does not grow
    from the second day to the seventh, and no process is asked about twice in one tick."""
    import tracemalloc

    asked: list[SessionKey] = []

    def probe(key: SessionKey) -> ProcessState | None:
        asked.append(key)
        return "gone" if int(key.session_id) % 7 == 0 else None

    clock = FakeClock(NOW)
    dog = Watchdog(parse_config("[budgets]\nusd = 1\n"), clock, probe=probe)
    template = make_session("0", tpm=5000.0, usd_h=3.0, cost=0.5)
    start = NOW
    kept_sizes: list[int] = []
    tracemalloc.start()
    day_two = 0
    for tick in range(7 * 24 * 3):
        now = start + tick * 1200
        clock.t = now
        first = max(0, (tick - 6) * 20)
        shown = tuple(
            msgspec.structs.replace(
                template, key=SessionKey("claude", str(i)), first_ts=start + i * 60,
                last_ts=start + i * 60 + 600, last_response_ts=start + i * 60 + 600,
            )
            for i in range(first, min(10_000, tick * 20 + 20))
        )  # fmt: skip
        asked.clear()
        dog.judge(ledger(shown, version=tick))
        assert len(asked) == len(set(asked)) <= len(shown)
        kept_sizes.append(_kept(dog))
        assert kept_sizes[-1] <= 8 * max(len(shown), 1)
        if tick == 24 * 3:
            day_two = tracemalloc.get_traced_memory()[0]
    end = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert end - day_two < 256 * 1024, (day_two, end)


def _kept(dog: Watchdog) -> int:
    """Entries in everything the Watchdog keeps per session."""
    acts = dog._acts._acted
    tables = (dog._judged, dog._levels, dog._ended, dog._budgets, dog._live, acts)
    policy = dog._policy
    return sum(len(t) for t in tables) + len(policy.levels) + len(policy.high_since)


def test_the_json_flags_are_the_apps_flags() -> None:
    """A script filtering `sessions --json` on flags sees what the FLAGS column shows: an
    over-budget session with unparseable lines and an unpriced model reads O, E and ?."""
    from tokentop.policy.watchdog import judge_once
    from tokentop.render.records import judged_dict
    from tokentop.ui.views.rows import row_view

    session = make_session("s1", cost=2.0, bad_lines=3, unpriced=("mystery",))
    judged = judge_once(ledger([session]), parse_config("[budgets]\nusd = 1\n")).sessions[0]
    row = row_view(judged.session, judged.use, judged.state, False, judged.flags)
    assert judged_dict(judged)["flags"] == row.flags == "OE?"


def test_a_session_key_reads_back_what_it_wrote() -> None:
    """The store and the action log keep keys as text; colons in an id (a file name may
    hold them) stay in the id."""
    for key in (KEY, SessionKey("openclaw", "cron:job-1:run-2"), SessionKey("codex", "")):
        assert SessionKey.parse(str(key)) == key
    assert SessionKey.parse("no-colon") is None
