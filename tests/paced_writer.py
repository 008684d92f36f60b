"""A Claude Code session written at a known pace, as a real child process: the ground truth
that burn, budget use and ETA are checked against.

`python paced_writer.py DIR SESSION GAP TOKENS [COUNT]` appends one assistant response of
TOKENS output tokens (model `pace-model`, which the tests price) every GAP seconds to
DIR/projects/-work-pace/SESSION.jsonl, COUNT times (0: until killed), and logs the Unix time
of each write to SESSION.times, one per line: the true schedule, jitter included.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

MODEL = "pace-model"
PRICE_TOML = f'[prices."{MODEL}"]\noutput = 1.0\n'
"""$1 per million output tokens: a response of N tokens costs N / 1e6 dollars."""
CWD = "/work/pace"


def line(session: str, tokens: int, at: float) -> str:
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    record = {
        "type": "assistant",
        "sessionId": session,
        "cwd": CWD,
        "uuid": str(uuid.uuid4()),
        "timestamp": stamp.replace("+00:00", "Z"),
        "message": {
            "id": f"msg_{uuid.uuid4().hex}",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": "working"}],
            "usage": {"input_tokens": 0, "output_tokens": tokens},
        },
    }
    return json.dumps(record) + "\n"


def times_path(root: Path, session: str) -> Path:
    return root / f"{session}.times"


def main() -> None:
    root, session = Path(sys.argv[1]), sys.argv[2]
    gap, tokens = float(sys.argv[3]), int(sys.argv[4])
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    folder = root / "projects" / CWD.replace("/", "-")
    folder.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with (
        open(folder / f"{session}.jsonl", "a", buffering=1) as out,
        open(times_path(root, session), "a", buffering=1) as log,
    ):
        n = 0
        while not count or n < count:
            n += 1
            time.sleep(max(0.0, start + n * gap - time.time()))
            at = time.time()
            out.write(line(session, tokens, at))
            log.write(f"{at}\n")


if __name__ == "__main__":
    main()
