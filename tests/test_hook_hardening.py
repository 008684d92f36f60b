"""The hook's answer stays the in-process one whatever its stdio, folder, input size or
options are, and the server's files and `tokentop hook stop` do no harm (the security
review's findings 4, 5, 8, 9, 10, 11), with real hook processes and servers.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import proc_helpers
from hook_server_helpers import (
    Home,
    answered,
    call,
    make_home,
    our_socket,
    runtime,
    runtime_folder,
    serve,
    servers,
    wait_until,
)
from tokentop.commands.hook_install import hook_command, statusline_command
from tokentop.commands.hook_wire import ObjectEnd

__all__ = ["runtime"]  # a fixture

BLOCKED = "over budget: 9,000 of 5,000 tokens"


def shell(
    home: Home, script: str, stdin: bytes = b"", **env: str
) -> subprocess.CompletedProcess[bytes]:
    """`script` run by sh with the hook's argv as "$@" (stdio as the script leaves it)."""
    argv = ["sh", "-c", script, "sh", *home.argv()]
    return subprocess.run(argv, input=stdin, capture_output=True, env=home.env(**env),
                          cwd=home.root, timeout=60)  # fmt: skip


@pytest.mark.parametrize("server", ["on", "off"])
def test_a_large_quote_heavy_event_is_read_whole_and_blocked(
    tmp_path: Path, runtime: str, server: str
) -> None:
    """A ~3 MB Write of quotes and braces: its end is found in time (it was quadratic, so the event
    was cut short at the stdin deadline and the call went on: the soft stop failed open)."""
    home = make_home(tmp_path / "h", runtime)
    event = json.loads(home.event())
    event["tool_input"] = {"file_path": "/x", "content": '"}' * 1_000_000}
    raw = json.dumps(event).encode()
    assert len(raw) > 3_000_000
    argv, env = home.argv(), home.env(TOKENTOP_HOOK_SERVER=server)
    for _ in range(2 if server == "on" else 1):  # the second call through the server
        done = answered(subprocess.run(argv, input=raw, capture_output=True, env=env, timeout=60))
        assert done.code == 2 and BLOCKED in done.err, done.err[-500:]


CASES = [
    b' {"a": {"b": [1, {"c": 2}]}}\n',
    b'{"a": "}"',
    b'{"a": "\\"}"}',
    b'{"a": "\\\\"}',
    b'{"a": "\\\\\\"}", "b": "\\\\\\\\"}',
    b'{"a": "x',
    b'{"a": [1, 2}',
]


@pytest.mark.parametrize("data", CASES)
def test_the_end_of_an_object_is_found_however_the_reads_cut_it(data: bytes) -> None:
    for cut in range(1, len(data)):
        for second in range(cut, len(data)):
            end = ObjectEnd()
            fed = [end.feed(part) for part in (data[:cut], data[cut:second], data[second:])]
            assert fed[-1] is ObjectEnd().feed(data), (data, cut, second)


def test_the_server_log_never_follows_a_link(
    tmp_path: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link planted at the log's name (by any process of this user) is left alone: the
    file it names is neither truncated nor written."""
    home = make_home(tmp_path / "h", runtime)
    path = our_socket(runtime, monkeypatch)[1]
    victim = tmp_path / "victim"
    victim.write_bytes(b"x" * (100 << 10))  # over the log's size limit
    os.symlink(victim, path.removesuffix(".sock") + ".log")
    serve(home)
    assert call(home).served
    assert victim.read_bytes() == b"x" * (100 << 10)


def test_hook_stop_stops_every_server_it_may_find_and_makes_nothing(
    tmp_path: Path, runtime: str
) -> None:
    """One server in $XDG_RUNTIME_DIR and one in $TMPDIR (a call without a runtime folder),
    the first stopped (SIGSTOP): both are gone when "Stopped" is said; a second stop, in a
    place with no server folder, makes none."""
    first = serve(make_home(tmp_path / "a", runtime))
    with runtime_folder() as tmp:
        home = make_home(tmp_path / "b", tmp)
        assert wait_until(lambda: call(home, XDG_RUNTIME_DIR="", TMPDIR=tmp).served)
        second = servers(tmp)[0]
        os.kill(first, signal.SIGSTOP)
        stop = [sys.executable, "-m", "tokentop.commands.hook", "stop"]
        env = {**os.environ, "XDG_RUNTIME_DIR": runtime, "TMPDIR": tmp}
        done = subprocess.run(stop, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout
        assert sorted(done.stdout.splitlines()) == sorted(
            f"Stopped the tokentop hook server (pid {pid})." for pid in (first, second)
        )
        assert proc_helpers.gone(first) and proc_helpers.gone(second)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(empty), "TMPDIR": str(empty)}
    done = subprocess.run(stop, env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout == "No tokentop hook server is running.\n"
    assert list(empty.iterdir()) == []


def test_a_relative_registry_from_a_deleted_folder_is_never_taken_from_root(
    tmp_path: Path, runtime: str
) -> None:
    """The server's worker resolves options from "/" when the client's folder is gone: the
    client answers such a call itself, as it would without a server."""
    home = make_home(tmp_path / "h", runtime)
    serve(home)
    name = f"tt-registry-{uuid.uuid4().hex}.jsonl"
    gone = tmp_path / "gone"
    script = f'mkdir {gone} && cd {gone} && rmdir {gone} && exec "$@" --registry {name}'
    argv = ["sh", "-c", script, "sh", *home.argv()[:-4], "--config", str(home.config)]
    answers = {}
    for server in ("on", "off"):
        done = subprocess.run(argv, input=home.event(), capture_output=True,
                              env=home.env(TOKENTOP_HOOK_SERVER=server), timeout=60)  # fmt: skip
        answers[server] = answered(done)
    assert not Path("/", name).exists()
    assert not answers["on"].served
    assert (answers["on"].code, answers["on"].err) == (answers["off"].code, answers["off"].err)
    assert answers["on"].code == 2 and BLOCKED in answers["on"].err


@pytest.mark.parametrize("server", ["on", "off"])
def test_a_closed_stdin_or_stderr_is_answered_without_a_traceback(
    tmp_path: Path, runtime: str, server: str
) -> None:
    home = make_home(tmp_path / "h", runtime)
    no_stdin = shell(home, 'exec "$@" <&-', TOKENTOP_HOOK_SERVER=server)
    assert no_stdin.returncode == 0 and b"no hook input on stdin" in no_stdin.stderr
    assert b"Traceback" not in no_stdin.stderr
    for _ in range(2 if server == "on" else 1):  # in-process, then through the server
        no_stderr = shell(home, 'exec "$@" 2>&-', home.event(), TOKENTOP_HOOK_SERVER=server)
        assert no_stderr.returncode == 2  # still blocked: it did not fail open
        if server == "on":
            assert wait_until(lambda: servers(runtime) != [])


@pytest.mark.parametrize("command", [hook_command, statusline_command])
def test_installed_commands_never_import_from_the_agents_folder(
    tmp_path: Path, command: object
) -> None:
    """Claude Code runs them in the project's folder: a `select.py` there (both import it)
    is not run, and the hook still answers."""
    assert callable(command)
    project = tmp_path / "project"
    project.mkdir()
    marker = tmp_path / "ran"
    (project / "select.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    env = {**os.environ, "TOKENTOP_HOOK_SERVER": "off", "XDG_CONFIG_HOME": str(tmp_path)}
    env |= {"XDG_CACHE_HOME": str(tmp_path / "c"), "XDG_DATA_HOME": str(tmp_path / "d")}
    line = str(command())
    assert shlex.split(line)[1:3] == ["-P", "-m"]
    subprocess.run(["sh", "-c", line], input=b"{}", capture_output=True, cwd=project,
                   env=env, timeout=60)  # fmt: skip
    assert not marker.exists()
