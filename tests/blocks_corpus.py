"""The generated Claude Code history the 5-hour blocks are checked on, against ccusage.

`write_corpus` runs tests/gen_claude_corpus.py (the bench's generator, seeded, so every run
writes the same bytes) and can move every timestamp by whole hours, which keeps the blocks'
shapes and puts the last one in the present (an active block). Both
tests/fixtures/blocks/make_ccusage_blocks.py (which ran ccusage 20.0.24 on it once) and
tests/test_blocks.py (which compares tokentop with that output) build it here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

GENERATOR = Path(__file__).parent / "gen_claude_corpus.py"
SIZES = {"sessions": 12, "turns": 30, "seed": 3, "tool-bytes": 200}
"""Small: 12 sessions, 360 responses in 9 blocks and gaps (contexts stay under 200k tokens,
where tokentop's and ccusage's long-context rules would price differently)."""
_STAMP = re.compile(rb'"timestamp":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z"')


def write_corpus(root: Path, shift_hours: int = 0) -> Path:
    """The corpus under `root` (a CLAUDE_CONFIG_DIR), every time moved by `shift_hours`."""
    args = [f"--{k}={v}" for k, v in SIZES.items()]
    subprocess.run(
        [sys.executable, str(GENERATOR), str(root), *args], check=True, capture_output=True
    )
    if shift_hours:
        for path in (root / "projects").rglob("*.jsonl"):
            path.write_bytes(_STAMP.sub(lambda m: _moved(m, shift_hours), path.read_bytes()))
    return root


def _moved(match: re.Match[bytes], hours: int) -> bytes:
    at = datetime.fromisoformat(match[1].decode()).replace(tzinfo=UTC) + timedelta(hours=hours)
    return b'"timestamp":"' + at.strftime("%Y-%m-%dT%H:%M:%S").encode() + b'Z"'


def last_stamp(root: Path) -> float:
    """The newest response time in the corpus."""
    newest = max(
        m[1]
        for path in (root / "projects").rglob("*.jsonl")
        for m in _STAMP.finditer(path.read_bytes())
    )
    return datetime.fromisoformat(newest.decode()).replace(tzinfo=UTC).timestamp()
