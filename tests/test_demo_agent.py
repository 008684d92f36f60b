"""The demo agent writes transcripts in the real layouts and record shapes, and stops cleanly.

Only structure is checked here, with plain json; the real parsers have their own tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest

import proc_helpers
from tokentop.demo.agent import escape_cwd

CWD = "/home/dev/work/my.project"
TIMEOUT = 15.0
wait_until = partial(proc_helpers.wait_until, timeout=TIMEOUT)
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def run_agent(
    root: Path, kind: str, behavior: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "tokentop.demo.agent", "--kind", kind, "--behavior", behavior,
        "--root", str(root), "--cwd", CWD, "--interval", "0", *extra,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def only_file(root: Path) -> Path:
    files = list(root.rglob("*.jsonl"))
    assert len(files) == 1, files
    return files[0]


def read_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_text()
    assert data.endswith("\n")
    return [json.loads(line) for line in data.splitlines()]


# --- Claude Code ------------------------------------------------------------------------------


def claude_lines(
    tmp_path: Path, behavior: str, turns: int = 20
) -> tuple[Path, list[dict[str, Any]]]:
    done = run_agent(tmp_path, "claude", behavior, "--max-turns", str(turns), "--seed", "5")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # silent unless --print-path
    path = only_file(tmp_path)
    return path, read_lines(path)


def responses(lines: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Assistant lines grouped by (message.id, requestId), in order."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in lines:
        if line["type"] == "assistant":
            grouped.setdefault((line["message"]["id"], line["requestId"]), []).append(line)
    return grouped


def tool_uses(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        block
        for line in lines
        if line["type"] == "assistant"
        for block in line["message"]["content"]
        if block["type"] == "tool_use"
    ]


def tool_results(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        block
        for line in lines
        if line["type"] == "user" and isinstance(line["message"]["content"], list)
        for block in line["message"]["content"]
        if block["type"] == "tool_result"
    ]


def test_claude_layout_and_envelope(tmp_path: Path) -> None:
    path, lines = claude_lines(tmp_path, "steady")
    assert path.parent == tmp_path / "projects" / "-home-dev-work-my-project"
    assert re.fullmatch(UUID + r"\.jsonl", path.name)
    conversation = [line for line in lines if line["type"] in ("user", "assistant")]
    # plus, after each prompt, a housekeeping record that readers must skip
    assert {line["type"] for line in lines} == {"user", "assistant", "file-history-snapshot"}
    for line in conversation:
        assert line["sessionId"] == path.stem
        assert line["cwd"] == CWD
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])
        assert {"uuid", "parentUuid", "version", "gitBranch", "isSidechain"} <= line.keys()
    assert conversation[0]["type"] == "user" and isinstance(
        conversation[0]["message"]["content"], str
    )
    parents = [line["parentUuid"] for line in conversation[1:]]
    assert parents == [line["uuid"] for line in conversation[:-1]]  # one unbroken chain


def test_claude_responses_share_ids_and_grow_output_tokens(tmp_path: Path) -> None:
    _, lines = claude_lines(tmp_path, "steady")
    grouped = responses(lines)
    assert len(grouped) >= 20
    multi = [group for group in grouped.values() if len(group) > 1]
    assert len(multi) == 20  # every tool-using response is a text line plus a tool_use line
    for group in multi:
        first, last = (g["message"]["usage"] for g in (group[0], group[-1]))
        assert first["output_tokens"] <= last["output_tokens"]
        same = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
        assert all(first[key] == last[key] for key in same)
        assert [g["message"]["content"][0]["type"] for g in group] == ["text", "tool_use"]
    usage = lines[2]["message"]["usage"]
    assert (
        usage["cache_creation"]["ephemeral_5m_input_tokens"] == usage["cache_creation_input_tokens"]
    )
    assert lines[2]["message"]["model"].startswith("claude-sonnet")


def test_claude_tool_results_answer_tool_uses(tmp_path: Path) -> None:
    _, lines = claude_lines(tmp_path, "steady")
    uses, results = tool_uses(lines), tool_results(lines)
    assert [u["id"] for u in uses] == [r["tool_use_id"] for r in results]
    names = {u["name"] for u in uses}
    assert {"Edit", "Write", "Bash", "Read", "Grep"} <= names
    edits = [u["input"] for u in uses if u["name"] == "Edit"]
    assert all({"file_path", "old_string", "new_string"} <= e.keys() for e in edits)
    assert len({json.dumps(u["input"], sort_keys=True) for u in uses}) > len(uses) // 2
    result_lines = [
        line
        for line in lines
        if line["type"] == "user" and isinstance(line["message"]["content"], list)
    ]
    assert all("toolUseResult" in line for line in result_lines)


def test_claude_loop_repeats_the_same_failing_command(tmp_path: Path) -> None:
    _, lines = claude_lines(tmp_path, "loop", turns=12)
    bash = [u["input"] for u in tool_uses(lines) if u["name"] == "Bash"]
    assert len(bash) == 10
    assert all(b == bash[0] for b in bash)
    errors = [r for r in tool_results(lines) if r["is_error"]]
    assert len(errors) == 10
    assert all(r["content"] == errors[0]["content"] for r in errors)
    assert "FAILED" in errors[0]["content"]


def test_claude_overbudget_grows_a_large_opus_context(tmp_path: Path) -> None:
    _, lines = claude_lines(tmp_path, "overbudget", turns=30)
    grouped = responses(lines)
    reads = [group[-1]["message"]["usage"]["cache_read_input_tokens"] for group in grouped.values()]
    assert all(g[-1]["message"]["model"].startswith("claude-opus") for g in grouped.values())
    assert reads[1] > reads[0] and max(reads) > 150_000


# --- Codex ------------------------------------------------------------------------------------


def codex_lines(
    tmp_path: Path, behavior: str, turns: int = 20
) -> tuple[Path, list[dict[str, Any]]]:
    done = run_agent(tmp_path, "codex", behavior, "--max-turns", str(turns), "--seed", "5")
    assert done.returncode == 0, done.stderr
    path = only_file(tmp_path)
    return path, read_lines(path)


def payloads(
    lines: list[dict[str, Any]], kind: str, sub: str | None = None
) -> list[dict[str, Any]]:
    return [
        line["payload"]
        for line in lines
        if line["type"] == kind and (sub is None or line["payload"].get("type") == sub)
    ]


def test_codex_layout_and_session_meta(tmp_path: Path) -> None:
    path, lines = codex_lines(tmp_path, "steady")
    relative = path.relative_to(tmp_path).as_posix()
    pattern = (
        r"sessions/(\d{4})/(\d\d)/(\d\d)/rollout-\1-\2-\3T\d\d-\d\d-\d\d-(" + UUID + r")\.jsonl"
    )
    match = re.fullmatch(pattern, relative)
    assert match, relative
    assert all(set(line) == {"timestamp", "type", "payload"} for line in lines)
    assert lines[0]["type"] == "session_meta"
    meta = lines[0]["payload"]
    assert meta["id"] == match.group(4) and meta["cwd"] == CWD and meta["cli_version"]
    contexts = payloads(lines, "turn_context")
    assert contexts and all(c["model"] == "gpt-5-codex" and c["cwd"] == CWD for c in contexts)


def test_codex_tool_calls_have_outputs(tmp_path: Path) -> None:
    _, lines = codex_lines(tmp_path, "steady")
    calls = payloads(lines, "response_item", "function_call")
    patches = payloads(lines, "response_item", "custom_tool_call")
    outputs = payloads(lines, "response_item", "function_call_output")
    patch_outputs = payloads(lines, "response_item", "custom_tool_call_output")
    assert [c["call_id"] for c in calls] == [o["call_id"] for o in outputs]
    assert [c["call_id"] for c in patches] == [o["call_id"] for o in patch_outputs]
    assert patches and all(p["name"] == "apply_patch" for p in patches)
    assert all(isinstance(json.loads(c["arguments"])["command"], list) for c in calls)
    assert all("exit_code" in json.loads(o["output"])["metadata"] for o in outputs)


def test_codex_token_counts_are_cumulative(tmp_path: Path) -> None:
    _, lines = codex_lines(tmp_path, "overbudget", turns=30)
    infos = [p["info"] for p in payloads(lines, "event_msg", "token_count")]
    keys = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")
    previous = dict.fromkeys((*keys, "total_tokens"), 0)
    distinct = 0
    for info in infos:
        total, last = info["total_token_usage"], info["last_token_usage"]
        assert total["total_tokens"] == total["input_tokens"] + total["output_tokens"]
        assert last["cached_input_tokens"] <= last["input_tokens"]
        if total == previous:
            continue  # an identical re-emit, as real Codex writes
        distinct += 1
        assert all(total[key] == previous[key] + last[key] for key in keys)
        previous = total
    assert distinct == 31  # 30 tool calls and the closing reply
    assert len(infos) > distinct  # some re-emits
    assert payloads(lines, "turn_context")[0]["model"] == "gpt-5"


def test_codex_loop_repeats_the_same_failing_command(tmp_path: Path) -> None:
    _, lines = codex_lines(tmp_path, "loop", turns=12)
    calls = payloads(lines, "response_item", "function_call")
    outputs = payloads(lines, "response_item", "function_call_output")
    loop_args = [c["arguments"] for c in calls if "pytest" in c["arguments"]]
    assert len(loop_args) == 10 and len(set(loop_args)) == 1
    failing = [o["output"] for o in outputs if json.loads(o["output"])["metadata"]["exit_code"]]
    assert len(failing) == 10 and len(set(failing)) == 1


# --- determinism, pacing, stopping, errors ----------------------------------------------------


def normalized(path: Path) -> list[Any]:
    """The records with everything time-dependent removed."""
    text = re.sub(r'"(timestamp|resets_at)":("[^"]*"|\d+)', '"T":0', path.read_text())
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("kind", ["claude", "codex"])
def test_a_seed_gives_the_same_session(tmp_path: Path, kind: str) -> None:
    for run in ("a", "b", "c"):
        seed = "7" if run != "c" else "8"
        assert (
            run_agent(tmp_path / run, kind, "steady", "--max-turns", "8", "--seed", seed).returncode
            == 0
        )
    a, b, c = (normalized(only_file(tmp_path / run)) for run in "abc")
    assert a == b
    assert a != c


def test_print_path_prints_the_transcript_path(tmp_path: Path) -> None:
    done = run_agent(tmp_path, "codex", "loop", "--max-turns", "1", "--print-path")
    assert done.returncode == 0
    assert Path(done.stdout.strip()) == only_file(tmp_path)


def test_sigterm_stops_it_cleanly_between_writes(tmp_path: Path, groups: list[int]) -> None:
    argv = [
        sys.executable, "-m", "tokentop.demo.agent", "--kind", "claude", "--behavior", "loop",
        "--root", str(tmp_path), "--cwd", CWD, "--interval", "0.02",
    ]  # fmt: skip
    popen = subprocess.Popen(argv, start_new_session=True)
    groups.append(popen.pid)
    assert wait_until(lambda: any(tmp_path.rglob("*.jsonl")))
    path = only_file(tmp_path)
    assert wait_until(lambda: path.stat().st_size > 10_000)
    popen.send_signal(signal.SIGTERM)
    assert popen.wait(timeout=TIMEOUT) == 128 + signal.SIGTERM
    assert read_lines(path)  # every line complete and valid


def test_it_exits_when_its_parent_dies(tmp_path: Path, groups: list[int]) -> None:
    agent = [
        sys.executable, "-m", "tokentop.demo.agent", "--kind", "codex", "--behavior", "steady",
        "--root", str(tmp_path), "--cwd", CWD, "--interval", "0.05",
    ]  # fmt: skip
    parent_code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen({agent!r})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, start_new_session=True
    )
    groups.append(parent.pid)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert wait_until(lambda: any(tmp_path.rglob("*.jsonl")))
    parent.kill()
    parent.wait(timeout=TIMEOUT)

    def child_gone() -> bool:
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    assert wait_until(child_gone), "an orphaned demo agent kept running"


def test_bad_arguments_and_unwritable_roots_get_a_message(tmp_path: Path) -> None:
    negative = run_agent(tmp_path, "claude", "steady", "--interval", "-1")
    assert negative.returncode == 2 and "must not be negative" in negative.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = run_agent(blocker, "claude", "steady", "--max-turns", "1")
    assert unwritable.returncode == 2
    assert "cannot write the transcript" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr


def test_escape_cwd_matches_claude_code() -> None:
    assert escape_cwd("/Users/r/ghq/github.com/x/y") == "-Users-r-ghq-github-com-x-y"
    assert escape_cwd("/path/to/Demo") == "-path-to-Demo"


class Terminal:
    """A real pseudo-terminal running `tokentop ARGS`, its output collected as bytes."""

    def __init__(self, env: dict[str, str], *args: str, size: tuple[int, int] = (150, 30)) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become tokentop on the terminal
            argv = [sys.executable, "-m", "tokentop.cli", *args]
            os.execve(sys.executable, argv, env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        self.seen = b""

    def wait_for(self, text: bytes, timeout: float = 40.0) -> None:
        end = time.monotonic() + timeout
        while text not in self.seen:
            assert time.monotonic() < end, f"{text!r} never shown"
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.fd, 65536)

    def press(self, key: bytes, then: bytes) -> None:
        os.write(self.fd, key)
        self.wait_for(then)

    def quit(self) -> int:
        os.write(self.fd, b"q")
        end = time.monotonic() + 30
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                os.read(self.fd, 65536)
            time.sleep(0.1)
        raise AssertionError("the app did not quit on q")


def test_the_demos_kills_stay_out_of_the_users_action_log(tmp_path: Path) -> None:
    """`tokentop demo` on a real terminal: `k` then `y` kills a demo agent; that action is
    demo state, kept in the demo's temp dir, never in the user's actions.jsonl. Nor does
    the demo's header show the user's own Claude windows (the status line's state)."""
    env = dict(os.environ, TERM="xterm-256color")
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        env[var] = str(tmp_path / var.lower())
    windows = {"five_hour": {"used_percentage": 42, "resets_at": time.time() + 3600}}
    status = {"session_id": "mine", "cwd": "/tmp", "rate_limits": windows}
    line = subprocess.run(
        [sys.executable, "-m", "tokentop.commands.statusline"], input=json.dumps(status),
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "5h 42%" in line.stdout  # the user's windows are recorded
    term = Terminal(env, "demo", "--interval", "0.2")
    try:
        term.wait_for(b"webshop")
        term.press(b"k", then=b"Kill 1")
        term.press(b"y", then=b"killed")
        assert b"official" not in term.seen and b"42%" not in term.seen
        assert term.quit() == 0
    finally:  # SIGTERM: the demo then stops its agents as it does on exit
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(term.pid, signal.SIGTERM)
            os.waitpid(term.pid, 0)
    assert not (tmp_path / "xdg_data_home" / "tokentop" / "actions.jsonl").exists()
