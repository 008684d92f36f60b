"""Untrusted text never drives the terminal: the sanitizer, and every headless command run as a
real process over a transcript (and a LiteLLM proxy log) whose fields carry OSC 52 / OSC 2."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from claude_lines import envelope, response
from tokentop.render.text import csv_text, json_for_terminal, md_code, md_inline, path_text, safe

OSC52_CWD = "/tmp/\x1b]52;c;cHduZWQ=\x07x"
OSC2_MODEL = "claude-\x1b]2;PWNED\x07sonnet"
BIDI_BRANCH = "main\u202egnp.exe\u2066"
SESSION = "0b5c6a4e-3f0e-4a8a-9d5e-6b2b8f1e0c11"
RAW = ("\x1b", "\x07", "\u202e", "\u2066", "\x9b")


def test_safe_escapes_controls_format_characters_and_surrogates() -> None:
    assert safe(OSC52_CWD) == "/tmp/\\x1b]52;c;cHduZWQ=\\x07x"
    assert safe("a\x7fb\x9bc\u202ed\u200be\u2028f\udcffg\U000e0041") == (
        "a\\x7fb\\x9bc\\u202ed\\u200be\\u2028f\\udcffg\\U000e0041"
    )
    assert safe("tab\there\nline") == "tab\\x09here\\x0aline"
    assert safe("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"
    plain = "/home/dév/项目 ünïcode · ≈$1.00"
    assert safe(plain) is plain
    assert safe(safe(OSC52_CWD)) == safe(OSC52_CWD)


def test_markdown_and_csv_forms() -> None:
    assert md_inline("a|b\nc_d") == "a\\|b\\\\x0ac\\_d"
    assert md_code("x`y") == "``x`y``"
    assert md_code("a|b", in_table=True) == "`a\\|b`"
    assert csv_text("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_text("plain") == "plain"


def test_json_stays_exact_but_terminal_safe() -> None:
    value = {"cwd": OSC52_CWD, "b": BIDI_BRANCH + "\x7f\x9b\u2028\U000e0041 é"}
    blob = json_for_terminal(msgspec.json.encode(value))
    assert json.loads(blob) == value
    assert all(ch not in blob.decode() for ch in (*RAW, "\x7f", "\u2028", "\U000e0041"))
    assert "é" in blob.decode()
    assert path_text("/x/\udcff") == "/x/\\xff"


# -- end to end ------------------------------------------------------------------------------


def hostile_transcript(claude_dir: Path) -> None:
    lines = [
        line.replace("claude-sonnet-4-5-20250929", "MODEL")
        for line in response(SESSION, "CWD", 2000)
    ]
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row["cwd"], row["gitBranch"] = OSC52_CWD, BIDI_BRANCH
        if row["type"] == "assistant":
            row["message"]["model"] = OSC2_MODEL
    prompt = envelope(SESSION, OSC52_CWD, "user", {"role": "user", "content": "go"})
    prompt["gitBranch"] = BIDI_BRANCH
    path = claude_dir / "projects" / "-tmp-x" / f"{SESSION}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(json.dumps(r) for r in [prompt, *rows]) + "\n")


def proxy_log(path: Path) -> None:
    row = {
        "id": "call-osc", "status": "success", "model": "gpt-4o", "prompt_tokens": 10,
        "completion_tokens": 5, "response_cost": 0.001, "startTime": 1777629600.0,
        "endTime": 1777629601.0,
        "metadata": {"spend_logs_metadata": {"session_id": "s\x1b]52;c;cHduZWQ=\x07\u202e"}},
    }  # fmt: skip
    path.write_text(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, str]]:
    root = tmp_path_factory.mktemp("hostile")
    hostile_transcript(root / "claude")
    proxy_log(root / "proxy.jsonl")
    env = {**os.environ, "XDG_CONFIG_HOME": str(root / "cfg"), "XDG_CACHE_HOME": str(root)}
    env |= {"XDG_DATA_HOME": str(root / "data")}
    flags = ["--claude-dir", str(root / "claude"), "--proxy-log", str(root / "proxy.jsonl")]
    return flags, env | {"TT_DB": str(root / "t.db")}


def run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tokentop.cli", *argv],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out = done.stdout.decode()
    for raw in RAW:
        assert raw not in out and raw not in done.stderr.decode(errors="replace"), (argv, out)
    return out


def test_sessions_table_and_json(hostile: tuple[list[str], dict[str, str]]) -> None:
    flags, env = hostile
    table = run(["sessions", *flags], env)
    assert "x1b]52" not in table or "\\x1b]52" in table
    doc = json.loads(run(["sessions", "--json", *flags], env))
    claude = next(s for s in doc if s["agent"] == "claude")
    assert claude["cwd"] == OSC52_CWD and claude["branch"] == BIDI_BRANCH  # exact in JSON
    assert claude["models"][0]["model"] == OSC2_MODEL
    proxy = next(s for s in doc if s["agent"] != "claude")
    assert proxy["session_id"] == "s\x1b]52;c;cHduZWQ=\x07\u202e"
    assert "\\x1b]52" in table  # the proxy session id, escaped in the table


@pytest.mark.parametrize("fmt", ["table", "md", "csv"])
def test_report_formats(hostile: tuple[list[str], dict[str, str]], fmt: str) -> None:
    flags, env = hostile
    db = ["--db", env["TT_DB"]]
    out = run(["report", "--format", fmt, "--scan", "--no-git", *db, *flags], env)
    assert "x1b]52" in out  # escaped, still readable
    if fmt == "md":
        assert "\\u202e" in out and "x1b\\]2;PWNED" in out
    if fmt == "csv":
        cells = [c for row in csv.reader(io.StringIO(out)) for c in row]
        assert any("\\x1b]52" in c for c in cells)


def test_summary_markdown(hostile: tuple[list[str], dict[str, str]]) -> None:
    flags, env = hostile
    out = run(["summary", SESSION, "--scan", "--no-git", "--db", env["TT_DB"], *flags], env)
    assert "`/tmp/\\x1b]52;c;cHduZWQ=\\x07x`" in out
    assert "\\u202e" in out and "x1b\\]2;PWNED" in out
