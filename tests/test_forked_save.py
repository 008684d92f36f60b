"""A first report's cache, saved by a forked child while the report records summaries.

Each case runs in a process of its own, whose threads the test controls: a fork is taken
only while the process has one thread, and pytest's may have more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_engine import KINDS, engine_for, make_corpus, totals

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux")

SCRIPT = """
import json, os, sys, threading
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_engine import engine_for
from tokentop.engine import forked_save

root, cache, case = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
engine = engine_for(root, cache_dir=cache)
engine.scan()
parent = os.getpid()
if case == "thread":
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
if case == "child-fails":
    save = engine.save_cache
    def failing():
        if os.getpid() != parent:
            os._exit(3)
        save()
    engine.save_cache = failing
if case == "sigint":
    import time
    replace = os.replace
    def slow_replace(src, dst):  # the temporary file exists meanwhile
        if os.getpid() != parent:
            time.sleep(0.4)
        replace(src, dst)
    os.replace = slow_replace
pending = forked_save.save_beside(engine)
forked = pending.pid is not None
if case == "sigint":
    time.sleep(0.2)
    os.kill(pending.pid, 2)  # Ctrl+C reaches the whole process group
pending.wait()
print(json.dumps({{"forked": forked, "note": engine.cache_note}}))
"""


def run_case(tmp_path: Path, case: str) -> dict[str, object]:
    tests = str(Path(__file__).parent)
    script = tmp_path / "case.py"
    script.write_text(SCRIPT.format(tests=tests))
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "c"), str(tmp_path / "cache"), case],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def resumed_reads_nothing(tmp_path: Path, expected: dict[str, int]) -> None:
    """A later engine resumes from the cache: no byte left to read, the same totals."""
    later = engine_for(tmp_path / "c", cache_dir=tmp_path / "cache")
    later.load_cache()
    later.scan()
    assert later.bytes_read == 0
    assert totals(later.snapshot()) == {k: expected[k] for k in KINDS}


@pytest.mark.parametrize(
    ("case", "forked"),
    [
        ("one-thread", True),  # a child saves the cache while the parent goes on
        ("thread", False),  # another thread runs: saved in-process, no fork
        ("child-fails", True),  # the child's save fails: the parent saves it
    ],
)
def test_the_cache_is_saved_whichever_way(tmp_path: Path, case: str, forked: bool) -> None:
    expected = make_corpus(tmp_path / "c")
    assert run_case(tmp_path, case)["forked"] is forked
    resumed_reads_nothing(tmp_path, expected)


def test_a_first_report_leaves_a_cache_a_restart_resumes_from(tmp_path: Path) -> None:
    """The whole command: `report` on a fresh HOME, then the cache it left is complete."""
    expected = make_corpus(tmp_path / "c")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TZ": "UTC"}
    env.pop("XDG_DATA_HOME", None)
    done = subprocess.run(
        [sys.executable, "-m", "tokentop.cli", "report", "--format", "json",
         "--claude-dir", str(tmp_path / "c"), "--cache-dir", str(tmp_path / "cache"),
         "--db", str(tmp_path / "store.db")],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    report = json.loads(done.stdout)["total"]
    assert report["sessions"] == 6
    assert report["tokens"] == sum(expected[k] for k in KINDS)
    resumed_reads_nothing(tmp_path, expected)


def test_ctrl_c_does_not_cut_the_childs_save_short(tmp_path: Path) -> None:
    """The child ignores Ctrl+C (it reaches the whole group): a save cut short would leave
    its temporary files in the cache folder, which nothing removes."""
    expected = make_corpus(tmp_path / "c")
    assert run_case(tmp_path, "sigint")["forked"] is True
    assert not [p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]
    resumed_reads_nothing(tmp_path, expected)
