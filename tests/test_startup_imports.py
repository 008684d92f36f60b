"""What the commands that run most often import: each module is start-up time they pay.

The hook runs before every tool call of a Claude Code session, and `sessions --json` is what
scripts poll; both are measured in bench/ (issue #23). These tests keep the modules they no
longer need from creeping back in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hook_server_helpers import stop_servers_in
from proc_helpers import wait_until

GEN = Path(__file__).with_name("gen_claude_corpus.py")


def modules_after(code: str, home: Path, stdin: bytes = b"", **extra: str) -> set[str]:
    """The modules loaded once `code` ran in a fresh interpreter with its own HOME."""
    env = {
        "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"),
        "XDG_STATE_HOME": str(home / "state"), "PATH": "/usr/bin:/bin",
        "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"],  # the run's (tests/conftest.py)
    } | extra  # fmt: skip
    script = f"{code}\nimport sys\nprint(' '.join(sys.modules))"  # no json: it imports `re`
    done = subprocess.run(
        [sys.executable, "-c", script], input=stdin, env=env, capture_output=True, check=True
    )
    return set(done.stdout.decode().splitlines()[-1].split())


HOOK = "import tokentop.commands.hook as h\nh.main([])"


def hook_event(tmp_path: Path) -> bytes:
    root = tmp_path / "c"
    argv = [sys.executable, str(GEN), str(root), "--sessions", "1", "--turns", "20"]
    subprocess.run(argv, check=True, capture_output=True)
    transcript = next(root.rglob("*.jsonl"))
    event = {
        "session_id": transcript.stem, "transcript_path": str(transcript), "cwd": "/",
        "hook_event_name": "PreToolUse", "tool_name": "Bash",
    }  # fmt: skip
    return json.dumps(event).encode()


def test_the_hook_answers_pretooluse_without_cli_parsing_processes_or_a_store(
    tmp_path: Path,
) -> None:
    """In-process (no hook server): what the first call of a session pays, and every call
    with TOKENTOP_HOOK_SERVER=off."""
    stdin = hook_event(tmp_path)
    alone = {"TOKENTOP_HOOK_SERVER": "off"}
    modules_after(HOOK, tmp_path, stdin, **alone)  # the first call records the session
    loaded = modules_after(HOOK, tmp_path, stdin, **alone)  # warm: what each call pays
    assert "tokentop.engine.engine" in loaded  # it did read the transcript
    unneeded = {"argparse", "subprocess", "hashlib", "platformdirs", "tomllib", "sqlite3"}
    unneeded |= {"tokentop.commands.common", "psutil", "importlib.resources"}
    unneeded |= {"typing_extensions", "inspect"}  # msgspec's optional import (hook_wire)
    assert loaded & unneeded == set()


def test_a_hook_call_the_server_answers_imports_nothing_but_its_client(tmp_path: Path) -> None:
    """What every tool call pays once this user's hook server runs: the client module, the
    protocol module, `select` and `_socket`, over what a bare interpreter loads."""
    stdin = hook_event(tmp_path)
    runtime = tempfile.mkdtemp(prefix="tt-imp-", dir="/tmp")
    try:
        modules_after(HOOK, tmp_path, stdin, XDG_RUNTIME_DIR=runtime)  # starts the server
        socket = Path(runtime, "tokentop")
        assert wait_until(lambda: any(socket.glob("*.sock")), timeout=30)
        loaded = modules_after(HOOK, tmp_path, stdin, XDG_RUNTIME_DIR=runtime)
        bare = modules_after("", tmp_path)
    finally:
        stop_servers_in(runtime)
        shutil.rmtree(runtime, ignore_errors=True)
    client = {"tokentop", "tokentop.commands", "tokentop.commands.hook"}
    client |= {"tokentop.commands.hook_wire", "tokentop.commands.hook_peer"}
    client |= {"select", "_socket", "__future__"}
    assert loaded - bare <= client, loaded - bare - client


def test_sessions_over_an_old_history_never_imports_psutil(tmp_path: Path) -> None:
    """The Watchdog asks about processes only for sessions of the last day."""
    root = tmp_path / "c"
    argv = [sys.executable, str(GEN), str(root), "--sessions", "2", "--turns", "5"]
    subprocess.run(argv, check=True, capture_output=True)
    code = (
        "import io, contextlib\nfrom tokentop.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['sessions', '--json', '--no-cache', '--claude-dir', {str(root)!r}])"
    )
    loaded = modules_after(code, tmp_path)
    assert "tokentop.policy.watchdog" in loaded
    assert "psutil" not in loaded and "hmac" not in loaded


def test_msgspec_without_typing_extensions_decodes_the_same_and_lifts_the_block(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "r.jsonl"
    registry.write_text(
        '{"type": "session", "agent": "claude", "session_id": "s", "pid": 7, '
        '"create_time": 1.5, "how": "hook", "timestamp": 2.0, "cmdline": ["claude"]}\n'
    )
    code = f"""
import pathlib, typing
from tokentop.commands.hook_wire import import_msgspec
import_msgspec()
import msgspec, msgspec._utils
assert msgspec._utils._get_type_hints is typing.get_type_hints
import typing_extensions  # the block is lifted: anything else may still import it
from tokentop.processes.registry import SessionRecord, read
records, bad = read(pathlib.Path({str(registry)!r}))
want = SessionRecord("claude", "s", 7, 1.5, "hook", 2.0, cmdline=("claude",))
assert (records, bad) == ([want], 0), records
"""
    loaded = modules_after(code, tmp_path)
    assert "typing_extensions" in loaded


def test_a_msgspec_that_needs_typing_extensions_is_imported_as_usual(tmp_path: Path) -> None:
    """Were a future msgspec to need it, the hook must not break: it imports msgspec again."""
    fake = tmp_path / "site" / "msgspec"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import typing_extensions\nNEEDS = True\n")
    code = (
        "from tokentop.commands.hook_wire import import_msgspec\nimport_msgspec()\n"
        "import msgspec\nassert msgspec.NEEDS"
    )
    loaded = modules_after(code, tmp_path, PYTHONPATH=str(tmp_path / "site"))
    assert {"msgspec", "typing_extensions"} <= loaded


def test_an_in_process_answer_leaves_nothing_for_the_interpreters_clean_up(
    tmp_path: Path,
) -> None:
    """`python -m tokentop.commands.hook` ends its call with os._exit (no clean-up, ~10 ms
    saved): a blocked call, logged, must leave no exit handler or finalizer pending."""
    stdin = hook_event(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text("[budgets]\ntokens = 1000\n")
    code = f"""
import atexit, sys, weakref
from tokentop.commands.hook import answer_in_process
assert answer_in_process(sys.stdin.buffer.read(), {{"--config": {str(config)!r}}}) == 2
pending = [f for f in weakref.finalize._registry.values() if f.atexit]
assert not pending and atexit._ncallbacks() <= 1, (pending, atexit._ncallbacks())
"""
    modules_after(code, tmp_path, stdin, TOKENTOP_HOOK_SERVER="off")
    assert (tmp_path / "data" / "tokentop" / "actions.jsonl").is_file()  # the block, logged


def test_a_sessions_restart_after_a_change_imports_no_scan_machinery(tmp_path: Path) -> None:
    """`sessions --json` with a cache after one transcript grew: no cold-scan workers
    (subprocess, pickle), no spill files (tempfile), no heap trimming (ctypes), no vendor
    windows, and msgspec without typing_extensions; each was milliseconds of its start."""
    root = tmp_path / "c"
    argv = [sys.executable, str(GEN), str(root), "--sessions", "3", "--turns", "5"]
    subprocess.run(argv, check=True, capture_output=True)
    args = ["sessions", "--json", "--claude-dir", str(root), "--cache-dir", str(tmp_path / "k")]
    out = tmp_path / "out.json"
    code = (
        "import io, contextlib\nfrom tokentop.cli import main\nbuf = io.StringIO()\n"
        f"with contextlib.redirect_stdout(buf):\n    main({args!r})\n"
        f"open({str(out)!r}, 'w').write(buf.getvalue())"
    )
    modules_after(code, tmp_path)  # the cache
    transcript = min(root.rglob("*.jsonl"))
    with transcript.open("ab") as fh:
        fh.write(transcript.read_bytes().splitlines()[-1] + b"\n")
    loaded = modules_after(code, tmp_path)
    read = [f["bytes_read"] for s in json.loads(out.read_text()) for f in s["files"]]
    assert transcript.stat().st_size in read  # it read the new line
    unneeded = {"subprocess", "pickle", "tempfile", "ctypes", "typing_extensions", "inspect"}
    unneeded |= {"tokentop.engine.coldscan", "tokentop.history.windows"}
    assert loaded & unneeded == set()
