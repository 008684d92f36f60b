"""`tokentop hook` is total: hostile stdin (run as a real subprocess, as Claude Code runs it) never
gives a traceback or a blocked agent, and no session id writes outside the hook's cache dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from claude_lines import response, write_transcript
from tokentop.commands.hook_answer import cache_name

CWD = "/home/dev/shop"
GOOD = "9a1f0d2e-7c3b-4e5a-8f6d-1b2c3d4e5f60"


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def run_hook(tmp: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "home" / "cache")}
    env |= {"XDG_DATA_HOME": str(tmp / "home" / "data"), "XDG_CONFIG_HOME": str(tmp / "cfg")}
    argv = [
        sys.executable,
        "-m",
        "tokentop.commands.hook",
        "--registry",
        str(tmp / "home" / "reg.jsonl"),
    ]
    return subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=60)


def payload(transcript: Path, session_id: object, **extra: object) -> bytes:
    doc = {
        "session_id": session_id,
        "transcript_path": str(transcript),
        "cwd": CWD,
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "ls", "nested": {"a": [{"b": {"c": [1, 2, {"d": None}]}}]}},
    }
    return json.dumps(doc | extra).encode()


@pytest.fixture
def transcript(tmp_path: Path) -> Path:
    path = tmp_path / "claude" / "projects" / "-home-dev-shop" / f"{GOOD}.jsonl"
    return write_transcript(path, GOOD, CWD, [response(GOOD, CWD, 3_000)])


def test_cache_names_are_ids_or_hashes() -> None:
    assert cache_name(GOOD) == GOOD
    for hostile in ("../../../../tmp/x", "/etc/passwd", "a\0b", "..", ".", "x/y", "-rf"):
        name = cache_name(hostile)
        assert name.startswith("h-") and len(name) == 34 and "/" not in name


def test_a_good_call_caches_under_the_cache_dir(tmp_path: Path, transcript: Path) -> None:
    done = run_hook(tmp_path, payload(transcript, GOOD))
    assert (done.returncode, done.stderr) == (0, b"")
    assert (tmp_path / "home" / "cache" / "tokentop" / "hook" / GOOD).is_dir()


def hostile_inputs(tmp: Path, transcript: Path) -> list[bytes]:
    fifo = tmp / "fifo.jsonl"
    os.mkfifo(fifo)  # reading it would hang the agent's tool call
    deep = b'{"session_id": "s", "tool_input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return [
        payload(transcript, "../../../../" + str(tmp / "outside" / "x").lstrip("/")),
        payload(transcript, "../../../outside/y"),
        payload(transcript, "../../../../outside/z"),
        payload(transcript, str(tmp / "outside" / "abs")),
        payload(transcript, "a\0b"),
        payload(transcript, GOOD, transcript_path=str(transcript) + "\0x"),
        payload(transcript, 5),
        payload(transcript, GOOD, transcript_path=str(fifo)),
        payload(transcript, GOOD, transcript_path="/dev/zero"),
        payload(transcript, GOOD, transcript_path="relative.jsonl"),
        payload(transcript, GOOD, transcript_path=["a"]),
        payload(transcript, GOOD, tool_input={"x": "y" * (5 << 20)}),
        deep,
        b"not json \x1b]52;c;cHduZWQ=\x07",
        b"\xff\xfe\x00",
        b"",
        b"[]",
        b'{"session_id": {"nested": true}}',
    ]


def test_hostile_input_never_escapes_the_cache_dir_or_blocks(
    tmp_path: Path, transcript: Path
) -> None:
    (tmp_path / "outside").mkdir()
    inputs = hostile_inputs(tmp_path, transcript)
    before = files_under(tmp_path)
    for stdin in inputs:
        done = run_hook(tmp_path, stdin)
        err = done.stderr.decode(errors="replace")
        assert done.returncode == 0, (stdin[:80], err)
        assert "Traceback" not in err and err.count("\n") <= 1, (stdin[:80], err)
        assert "\x1b" not in err
    created = files_under(tmp_path) - before
    home = tmp_path / "home"
    hook_dir = home / "cache" / "tokentop" / "hook"
    allowed = {home / "reg.jsonl", hook_dir, *hook_dir.parents}
    stray = {p for p in created if p not in allowed and not p.is_relative_to(hook_dir)}
    assert created and not stray, stray
    assert not any((tmp_path / "outside").iterdir())
    names = {p.name for p in hook_dir.iterdir()}
    assert names and all(n == GOOD or n.startswith("h-") for n in names), names


def test_the_stop_message_escapes_what_the_transcript_named() -> None:
    from tokentop.commands.hook_answer import stop_message
    from tokentop.policy.detectors import Finding

    loop = Finding("loop", "warn", "looping: the same \x1b]2;PWNED\x07 call 6 times")
    text = stop_message([loop])
    assert "\x1b" not in text and "\\x1b]2;PWNED\\x07" in text
    assert "[policy.loop]" in text and "budget" not in text


def test_the_stop_message_says_what_lifts_each_stop() -> None:
    """A budget set for the session (`b`, `run --budget`) beats the config's, so "raise the
    budget in the config" was the wrong fix to pass on."""
    from tokentop.commands.hook_answer import stop_message
    from tokentop.policy.detectors import Finding

    over = Finding("budget", "kill", "over budget: $0.05 of $0.05 (104%)", 2)
    loop = Finding("loop", "warn", "looping: the same call 6 times")
    text = stop_message([over, loop])
    assert "key b in tokentop" in text and "beats the config's" in text
    assert "[policy.loop]" in text


@pytest.mark.parametrize(
    "sent", [b"whole", b"", b'{"session_id": "half'], ids=["json-then-open", "nothing", "half"]
)
def test_the_hook_answers_within_2s_whatever_its_stdin_does(
    tmp_path: Path, transcript: Path, sent: bytes
) -> None:
    """Stdin left open after the JSON (or with nothing, or half of it): the hook answers
    within 2 s all the same, and a whole JSON is used at once."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "home" / "cache")}
    env |= {"XDG_DATA_HOME": str(tmp_path / "home" / "data"), "XDG_CONFIG_HOME": str(tmp_path)}
    argv = [sys.executable, "-m", "tokentop.commands.hook", "--registry", str(tmp_path / "r")]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    started = time.monotonic()
    try:
        proc.stdin.write(payload(transcript, GOOD) if sent == b"whole" else sent)
        proc.stdin.flush()  # and never closed while the hook runs
        code = proc.wait(timeout=10)
        took = time.monotonic() - started
    finally:
        proc.kill()
        proc.stdin.close()
    assert code == 0 and took < 2.0, took
    if sent == b"whole":
        assert (tmp_path / "home" / "cache" / "tokentop" / "hook" / GOOD).is_dir()
