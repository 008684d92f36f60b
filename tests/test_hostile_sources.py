"""Hostile content in every source: counts out of range and JSON nested too deep are bad
lines with a reason, the good lines' totals stay exact, and random mutations of the sample
lines never raise out of a parser, the ledger or the JSON output."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from hostile_helpers import (
    CASES,
    Case,
    clean_totals,
    copy_fixture,
    deep,
    engine,
    make_hostile,
    totals,
    usage_files,
)
from tokentop.engine.ledger import Ledger
from tokentop.model import Event, UsageEvent
from tokentop.policy.watchdog import judge_once
from tokentop.pricing import PriceTable
from tokentop.render import records as output
from tokentop.sources.base import MAX_COUNT, MAX_TIMESTAMP
from tokentop.sources.wholefile import WholeFileParser

IDS = [c.name for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_out_of_range_counts_and_deep_json_are_bad_lines(case: Case, tmp_path: Path) -> None:
    want, bad_before = clean_totals(case, tmp_path)
    assert want.total > 0
    root = copy_fixture(case, tmp_path / "hostile")
    added = make_hostile(case, root)
    assert added >= 10
    e = engine(case, root)
    e.scan()
    snap = e.snapshot()
    assert totals(snap) == want
    assert snap.bad_lines == bad_before + added
    reasons = " ".join(f.last_error for f in snap.files if f.bad_lines)
    assert reasons  # each bad file says why


def test_a_count_at_the_cap_counts_and_one_above_is_bad(tmp_path: Path) -> None:
    """The cap is inclusive, and totals far above int64 never reach an int64 array."""
    line = '{"session":"s","timestamp":1700000000,"model":"m","id":"%s","output_tokens":%d}\n'
    path = tmp_path / "u.jsonl"
    path.write_text(line % ("a", MAX_COUNT) + line % ("b", MAX_COUNT + 1) + line % ("c", 7))
    case = next(c for c in CASES if c.name == "jsonl")
    e = engine(case, path)
    e.scan()
    snap = e.snapshot()
    assert totals(snap).output == MAX_COUNT + 7
    assert snap.bad_lines == 1
    assert f"<= {MAX_COUNT}" in snap.files[0].last_error


def test_many_counts_at_the_cap_overflow_nothing(tmp_path: Path) -> None:
    """10**4 responses at the cap sum past 2**63: the ledger (Python ints) and the JSON stay
    exact; only the SQLite column saturates (see test_store)."""
    line = '{"session":"s","timestamp":1700000000,"id":"%d","input_tokens":%d}\n'
    path = tmp_path / "u.jsonl"
    n = 10_000
    path.write_text("".join(line % (i, MAX_COUNT) for i in range(n)))
    case = next(c for c in CASES if c.name == "jsonl")
    e = engine(case, path)
    e.scan()
    snap = e.snapshot()
    assert totals(snap).input == n * MAX_COUNT > 2**63
    doc = msgspec.json.decode(msgspec.json.encode(output.sessions_list(judge_once(snap))))
    assert doc[0]["tokens"]["input"] == n * MAX_COUNT


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_random_mutations_never_escape(case: Case, tmp_path: Path) -> None:
    """Seeded random mutations of the source's sample lines (bit flips, cuts, splices, huge
    and negative numbers, deep nesting, invalid UTF-8): no exception leaves the parser, every
    event it makes is in range, and the ledger and JSON output take them all."""
    root = copy_fixture(case, tmp_path)
    files = usage_files(case, root)
    samples = [line for f in files for line in f.read_bytes().splitlines() if line.strip()]
    rng = random.Random(f"tokentop-fuzz-{case.name}")
    source = case.make(root)
    ledger = Ledger(PriceTable.default().cost)
    target = files[0]
    for _ in range(400):
        mutant = mutate(rng, rng.choice(samples), samples)
        events: list[Event] = []
        parser = source.new_parser(target)
        if isinstance(parser, WholeFileParser):
            target.write_bytes(mutant)
            parser.refresh(events)
        else:
            parser.feed(mutant + b"\n", events)
        for event in events:
            if isinstance(event, UsageEvent):
                counts = msgspec.structs.astuple(event.tokens)
                assert all(0 <= n <= MAX_COUNT for n in counts), counts
                assert 0 <= event.timestamp <= MAX_TIMESTAMP
        ledger.apply(events, str(target))
    snap = ledger.snapshot(1.8e9)
    msgspec.json.encode(output.sessions_list(judge_once(snap)))


def mutate(rng: random.Random, line: bytes, samples: list[bytes]) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(8)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:  # flip a byte
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:  # cut
            del data[at : at + rng.randint(1, 64)]
        elif kind == 2:  # splice another sample in
            other = rng.choice(samples)
            data[at:at] = other[: rng.randint(0, len(other))]
        elif kind == 3:  # a huge, negative or float number where digits were
            digits = [i for i, b in enumerate(data) if 0x30 <= b <= 0x39]
            if digits:
                i = rng.choice(digits)
                data[i : i + 1] = rng.choice([b"9" * 30, b"-5", b"1.5e300", b"true", b"1e400"])
        elif kind == 4:  # deep nesting as a value
            data[at:at] = deep(rng.choice([10, 999, 1001, 5000]))
        elif kind == 5:  # invalid UTF-8 and control characters
            data[at:at] = bytes(rng.choice([b"\xff\xfe", b"\xc3", b"\x00\x1b[2J", b"\xed\xa0\x80"]))
        elif kind == 6:  # duplicate a key
            data[at:at] = b'"input":1,"input":2,'
        else:  # a string where an object was
            data[at:at] = b'"x"'
    return bytes(data)


def test_a_claude_time_no_datetime_prints_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Late on 9999-12-31 at a negative offset is a valid ISO time whose Unix time no
    datetime prints: `sessions --json` crashed on it (year 10000 is out of range). Such a
    time is unknown, and the response still counts."""
    from tokentop.cli import main

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    folder = tmp_path / "projects" / "p"
    folder.mkdir(parents=True)
    (folder / "s1.jsonl").write_text(
        '{"type":"assistant","sessionId":"s1","cwd":"/tmp",'
        '"timestamp":"9999-12-31T23:59:59-23:59","message":{"id":"m1",'
        '"model":"claude-sonnet-4-5","usage":{"input_tokens":10,"output_tokens":5}}}\n'
    )
    assert main(["sessions", "--json", "--no-cache", "--claude-dir", str(tmp_path)]) == 0
    [session] = msgspec.json.decode(capsys.readouterr().out)
    assert session["tokens"]["total"] == 15


def test_an_unprintable_time_is_null_in_the_json_not_a_crash() -> None:
    """The last guard, for a time some future reader forgets to bound."""
    assert output.iso(1.7e9) == "2023-11-14T22:13:20.000Z"
    for ts in (253402387199.0, 1e300, float("nan"), -1e300):
        assert output.iso(ts) is None
