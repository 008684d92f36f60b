"""`tokentop sessions [--json]`: per-session totals, judged as the app judges them, once."""

from __future__ import annotations

import argparse
import sys
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
    snap = engine.snapshot()
    judgement = make_watchdog(config).judge(snap)
    err = "".join(line + "\n" for line in empty_dir_warnings(args, engine))
    err += bad_files_text(snap)
    if args.json:
        text = json_text(output.sessions_list(judgement))
        sessions_cache.remember(engine, args, judgement, text, err)
    else:
        text = output.text_table(judgement) + "\n"
    out.write(text)
    sys.stderr.write(err)
    return 0


def json_text(records: list[dict[str, Any]]) -> str:
    """The records as indented JSON text, a line: each copy is dropped as soon as the next
    is made (a history of thousands of sessions prints megabytes)."""
    blob = msgspec.json.encode(records)
    records.clear()
    blob = json_for_terminal(msgspec.json.format(blob, indent=1))
    text = blob.decode()
    del blob
    text += "\n"  # in place: the only reference
    return text


def bad_files_text(snap: LedgerSnapshot) -> str:
    """Unparseable lines in files that belong to no session (the others show in the JSON)."""
    return "".join(
        f"tokentop: {f.bad_lines} unparseable line(s) in {safe(f.path)}: {safe(f.last_error)}\n"
        for f in output.orphan_bad_files(snap)
    )
