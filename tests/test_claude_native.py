"""The C hot path of the Claude parser (`_claude_native.c`) against the Python path.

The Python parser is the reference. Whenever the C path gives an answer (it may give up,
and the Python path then decides), its runs, session announcements and parser state must
equal the Python path's on the same bytes, however they are split into feeds. Checked on
the generated corpus, the real samples, and lines built and then damaged to hit every edge
of the C decoder: escapes, UTF-8, numbers at their bounds, times of every shape, duplicate
fields, nesting, missing ids.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokentop.model import EventRun
from tokentop.sources import claude_parser
from tokentop.sources.base import FILE_CHANGING_TOOLS, short_hash
from tokentop.sources.claude_parser import (
    HASHED_PER_SESSION,
    ClaudeFileParser,
    SessionInfo,
    session_key,
)
from tokentop.sources.claude_records import output_hash

NATIVE = claude_parser.NATIVE
SAMPLES = Path(__file__).parent / "fixtures" / "claude"  # real files (../shared/samples)
GEN = Path(__file__).parent / "gen_claude_corpus.py"


def test_the_c_path_is_built_wherever_a_compiler_is() -> None:
    """`pip install -e .` compiles it where Python's C compiler exists (the extension is
    optional only for machines without one), and only `TOKENTOP_NATIVE=0` turns it off."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if os.environ.get("TOKENTOP_NATIVE") == "0":
        assert NATIVE is None
    elif shutil.which(compiler):
        assert NATIVE is not None
    else:
        assert NATIVE is None


pytestmark = pytest.mark.skipif(NATIVE is None, reason="built without the C path")


def parse(
    data: bytes, native: bool, cuts: list[int] | None = None, from_path: bool = False
) -> tuple[list[Any], ClaudeFileParser]:
    """Feed `data` (split after the lines at `cuts`) to a fresh parser on one path."""
    saved = claude_parser.NATIVE
    claude_parser.NATIVE = NATIVE if native else None
    try:
        parser = ClaudeFileParser(path="/p/s.jsonl")
        if from_path:
            parser.session_id, parser.session_from_path = "parent", True
        out: list[Any] = []
        lines = data.splitlines(keepends=True)
        bounds = sorted({0, len(lines), *(c for c in cuts or [] if 0 < c < len(lines))})
        for a, b in itertools.pairwise(bounds):
            parser.feed_runs(b"".join(lines[a:b]), out)
        return out, parser
    finally:
        claude_parser.NATIVE = saved


def native_answers(data: bytes, from_path: bool = False) -> bool:
    """Whether the C path gives an answer for `data` as one feed (rather than giving up)."""
    assert NATIVE is not None
    state = ("parent" if from_path else "", from_path, False, "", 0)
    done = NATIVE.items(
        data, state, session_key, EventRun, SessionInfo, FILE_CHANGING_TOOLS, short_hash,
        output_hash, HASHED_PER_SESSION,
    )  # fmt: skip
    return done is not None


def assert_same(data: bytes, cuts: list[int] | None = None, from_path: bool = False) -> None:
    got, parser = parse(data, True, cuts, from_path)
    want, reference = parse(data, False, cuts, from_path)
    assert got == want
    assert parser == reference


def test_generated_history_is_read_in_c_and_equals_the_python_path(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(GEN), str(tmp_path), "--sessions", "6", "--turns", "60"],
        check=True, capture_output=True,
    )  # fmt: skip
    files = sorted((tmp_path / "projects").rglob("*.jsonl"))
    assert len(files) == 6
    rng = random.Random(5)
    for file in files:
        data = file.read_bytes()
        assert native_answers(data)  # the common case is the fast one
        count = data.count(b"\n")
        assert_same(data)
        assert_same(data, [rng.randrange(count) for _ in range(5)])
        assert_same(data, list(range(count)))  # a line per feed, as the tailer may


def test_real_samples_agree() -> None:
    files = sorted(SAMPLES.rglob("*.jsonl"))
    assert files
    for file in files:
        data = file.read_bytes()
        if not data.endswith(b"\n"):
            data += b"\n"
        assert_same(data)
        assert_same(data, list(range(data.count(b"\n"))))
        assert_same(data, from_path=True)


SID = "3f1c7a52-0d4e-4b8a-9c1e-5a6b7c8d9e0f"


def line(**fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "isSidechain": False, "cwd": "/home/u/p", "sessionId": SID, "gitBranch": "main",
        "type": "assistant", "uuid": "u1", "timestamp": "2026-11-22T10:27:10.250Z",
        "requestId": "req_1",
        "message": {
            "id": "msg_1", "model": "claude-sonnet-4-5", "type": "message",
            "content": [{"type": "text", "text": "hi"}],
            "usage": {
                "input_tokens": 3, "cache_creation_input_tokens": 10,
                "cache_read_input_tokens": 100, "output_tokens": 7,
                "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 0},
            },
        },
    }  # fmt: skip
    record.update(fields)
    return record


def call(cid: str, name: str = "Edit", body: Any = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": cid, "name": name, "input": body or {"file": "a.py"}}


def result(cid: str, error: bool | None = False, body: Any = "ok") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": cid, "content": body, "is_error": error}


def user(*blocks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return line(type="user", message={"role": "user", "content": list(blocks)}, **fields)


def dumps(records: list[dict[str, Any]], ascii_only: bool = False) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in records).encode()


def test_a_session_with_streamed_copies_calls_results_and_two_sessions() -> None:
    records = [
        line(type="user", message={"role": "user", "content": "do it"}),
        line(message={**line()["message"], "content": [call("t1"), call("t2", "Bash")]}),
        line(message={**line()["message"], "usage": {"input_tokens": 3, "output_tokens": 90}}),
        user(result("t1"), result("t2", True, [{"type": "text", "text": "x"}])),
        line(sessionId="other", message={**line()["message"], "id": "msg_2"}),
        line(message={**line()["message"], "id": "msg_2", "usage": {"output_tokens": 200}}),
        line(message={**line()["message"], "id": "msg_3", "model": "<synthetic>"}),
        user(result("t9", None)),
        line(costUSD=0.125, isSidechain=None, message={**line()["message"], "id": "msg_4"}),
    ]
    data = dumps(records)
    assert native_answers(data)
    assert_same(data)
    assert_same(data, [1, 3, 5])
    assert_same(data, from_path=True)
    assert_same(dumps(records, ascii_only=True))


def test_a_cost_written_as_minus_zero_is_plus_zero_as_msgspec_reads_it() -> None:
    """msgspec reads `-0` as the integer 0, then a float; C parses the text (helper-found)."""
    data = dumps([line(costUSD=0)]).replace(b'"costUSD": 0', b'"costUSD": -0')
    assert b"-0" in data and native_answers(data)
    items, _ = parse(data, True)
    (run,) = [item for item in items if isinstance(item, EventRun)]
    assert math.copysign(1.0, run.responses[0][8]) == 1.0
    assert_same(data)


GIVE_UP = [
    b'{"type":"assistant","message":{"usage":{"input_tokens":1.0}}}',  # a float count
    b'{"type":"assistant","message":{"usage":{"input_tokens":-0}}}',  # msgspec takes -0
    b'{"type":"user","timestamp":"2026-01-01T00:00:00+01:00"}',  # an offset
    b'{"type":"user","timestamp":"2026-01-01 00:00:00Z"}',
    b'{"type":"user","timestamp":"2026-01-01T00:00:00.1234567Z"}',
    b'{"type":"user","timestamp":"2026-01-01T00:00:00"}',  # naive
    b'{"type":"user","type":"assistant"}',  # a duplicate field (msgspec keeps the last)
    b'{"type":"user","c\\u0077d":"x"}',  # an escaped key
    b'{"type":"assistant","message":{"content":[{"type":"tool_use","name":"E"}]}}',  # no id
    b'{"type":"assistant","message":{"usage":{"output_tokens":5}}}',  # no message id
    b'{"type":"user","x":' + b"[" * 100 + b"]" * 100 + b"}",  # deeper than MAX_DEPTH
    b'{"type":"user","x":"\\ud800"}',  # a lone surrogate
    b'{"type":"user","cwd":"\xff"}',  # bad UTF-8 in a kept string: msgspec rejects it
    b'{"type":"user","x":1}{"type":"user"}',  # two values on a line
]


@pytest.mark.parametrize("bad", GIVE_UP)
def test_what_the_c_path_cannot_prove_it_leaves_to_python(bad: bytes) -> None:
    good = dumps([line(), user(result("t1"))])
    data = good + bad + b"\n" + good
    assert native_answers(good)
    assert not native_answers(data)
    assert_same(data)  # and the whole feed is then read in Python


TOKENS = [
    b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"0", b"9", b"-", b".", b"e", b"u",
    b"\x00", b"\x1f", b"\x7f", b"\xc3", b"\xa9", b"\xff", b"\xed\xa0\x80", b" ", b"\r",
    b"null", b"true", b'"x"', b"1e999", b"1000000000000001", b"\\u00e9", b"\\ud83d\\ude00",
]  # fmt: skip


def variants() -> st.SearchStrategy[dict[str, Any]]:
    text = st.sampled_from([
        "", "a", "é", "😀", "\\", '"', "\x00", "\u2028", "assistant", "user", "tool_use",
        "tool_result", "<synthetic>", "claude:x",
    ])  # fmt: skip
    stamp = st.sampled_from([
        "2026-11-22T10:27:10Z", "2026-11-22T10:27:10.5Z", "2026-11-22T10:27:10.123456Z",
        "2024-02-29T23:59:59.999Z", "2025-02-29T00:00:00Z", "1969-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z", "2200-12-31T23:59:59Z", "2201-01-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59", "2026-13-01T00:00:00Z", "2026-11-22t10:27:10z",
    ])  # fmt: skip
    number = st.one_of(
        st.sampled_from([0, 1, 10**15, 10**15 + 1, -1, 2**63]), st.integers(0, 10**6)
    )
    mid = st.sampled_from(["msg_1", "msg_2", "msg_é", "", None])
    usage = st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": number, "output_tokens": number,
            "cache_read_input_tokens": number, "cache_creation_input_tokens": number,
            "cache_creation": st.one_of(st.none(), st.fixed_dictionaries(
                {}, optional={"ephemeral_5m_input_tokens": number,
                              "ephemeral_1h_input_tokens": number})),
        },
    )  # fmt: skip
    block = st.one_of(
        st.builds(call, st.sampled_from(["t1", "t2", "", "té"]),
                  st.sampled_from(["Edit", "Bash", "é"])),
        st.builds(result, st.sampled_from(["t1", "t2", "t3"]),
                  st.sampled_from([True, False, None])),
        st.fixed_dictionaries({"type": st.sampled_from(["text", "thinking"]), "text": text}),
    )  # fmt: skip
    message = st.fixed_dictionaries(
        {},
        optional={
            "id": mid, "model": st.sampled_from(["m-a", "m-b", "<synthetic>", None]),
            "content": st.one_of(st.none(), text, st.lists(block, max_size=3)),
            "usage": st.one_of(st.none(), usage),
        },
    )  # fmt: skip
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["assistant", "user", "system", ""]),
            "sessionId": st.sampled_from([SID, "s2", "", None]),
            "isSidechain": st.sampled_from([True, False, None]),
            "cwd": st.one_of(st.none(), text), "gitBranch": st.one_of(st.none(), text),
            "message": st.one_of(st.none(), message), "uuid": st.sampled_from(["u1", None]),
            "timestamp": st.one_of(st.none(), stamp), "requestId": st.sampled_from(["r", None]),
            "costUSD": st.sampled_from([None, 0.1, 3, 1e-7]),
        },
    )  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(variants(), min_size=1, max_size=8),
    ascii_only=st.booleans(),
    damage=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(TOKENS), st.booleans()),
                    max_size=2),
    cuts=st.lists(st.integers(0, 8), max_size=3),
    from_path=st.booleans(),
)  # fmt: skip
def test_built_and_damaged_lines_agree(
    records: list[dict[str, Any]],
    ascii_only: bool,
    damage: list[tuple[int, bytes, bool]],
    cuts: list[int],
    from_path: bool,
) -> None:
    data = bytearray(dumps(records, ascii_only))
    for at, token, insert in damage:
        at %= len(data)
        if data[at : at + 1] == b"\n":
            continue  # the feed holds whole lines: keep the newlines where they are
        data[at : at if insert else at + 1] = token
    assert_same(bytes(data), cuts, from_path)


def test_a_cold_scan_without_c_prints_what_it_prints_with_c(
    big_history: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The whole command, worker processes included, on the Python code alone
    (`TOKENTOP_NATIVE=0`, what a machine without a compiler runs) and with C."""
    root, expected = big_history
    outputs = []
    for native in ("1", "0"):
        home = tmp_path / f"home-{native}"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "TZ": "UTC", "TOKENTOP_NATIVE": native}
        done = subprocess.run(
            [sys.executable, "-m", "tokentop.cli", "sessions", "--json", "--no-cache",
             "--claude-dir", str(root)],
            env=env, capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        outputs.append(json.loads(done.stdout))
    with_c, without_c = outputs
    assert with_c == without_c
    counted = sum(s["tokens"]["input"] for s in with_c)
    assert counted == expected["totals"]["input"]
