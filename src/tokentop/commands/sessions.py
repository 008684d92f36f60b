"""`tokentop sessions [--json]`: per-session totals, judged as the app judges them, once."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import msgspec

from tokentop.commands.common import empty_dir_warnings, load_config, make_engine, make_watchdog
from tokentop.model import LedgerSnapshot
from tokentop.render import records as output
from tokentop.render.text import json_for_terminal, safe


def cmd_sessions(args: argparse.Namespace, out: TextIO) -> int:
    from tokentop.commands import sessions_memo as sessions_cache

    config = load_config(args)
    engine = make_engine(args, config)
    if args.json:
        remembered = sessions_cache.recall(engine, args)
        if remembered is not None:  # nothing changed since: see sessions_cache
            out.write(remembered.out)
            sys.stderr.write(remembered.err)
            return 0
    engine.load_cache()
    said = engine.cache_note.startswith(("cache ignored", "cache unreadable"))
    if said:  # said once
        sys.stderr.write(f"tokentop: {engine.cache_note}; reading everything again\n")
    engine.scan()
    engine.save_cache()
    if engine.cache_note.startswith("cache not saved") and not said:  # a full disk, say
        sys.stderr.write(f"tokentop: {engine.cache_note}\n")
    engine.ledger.forget_dedupe()  # counted and saved: the output reuses the memory
    # The Watchdog reads recent tool calls only within the loop window (a live session's).
    snap = engine.snapshot(calls_since=engine.clock.now() - config.policy.loop.window_s)
    judgement = make_watchdog(config).judge(snap)
    err = "".join(line + "\n" for line in empty_dir_warnings(args, engine))
    err += bad_files_text(snap)
    if args.json:
        memo = sessions_cache.plan(engine, args, judgement, err)
        for chunk in json_chunks(output.session_records(judgement)):
            out.write(chunk.decode())
            if memo is not None:
                memo.add(chunk)
        if memo is not None:
            memo.save()
    else:
        out.write(output.text_table(judgement) + "\n")
    sys.stderr.write(err)
    return 0


RECORDS_PER_CHUNK = 32
"""Records encoded, formatted and written together: fewer writes, still a small chunk."""


def json_chunks(records: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """The records as one indented JSON list and a newline, a few records at a time, byte
    for byte what formatting the whole list would give: a history of thousands of sessions
    prints megabytes, and holding them (and their copies) was the command's peak."""
    opener = b"[\n"
    while batch := list(itertools.islice(records, RECORDS_PER_CHUNK)):
        listed = msgspec.json.format(msgspec.json.encode(batch), indent=1)
        yield opener + json_for_terminal(listed[2:-2])  # without this list's "[\n", "\n]"
        opener = b",\n"
    yield b"[]\n" if opener == b"[\n" else b"\n]\n"


def bad_files_text(snap: LedgerSnapshot) -> str:
    """Unparseable lines in files that belong to no session (the others show in the JSON)."""
    return "".join(
        f"tokentop: {f.bad_lines} unparseable line(s) in {safe(f.path)}: {safe(f.last_error)}\n"
        for f in output.orphan_bad_files(snap)
    )
