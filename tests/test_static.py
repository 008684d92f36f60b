"""Static checks as tests, so CI enforces them: ruff (lint + format) and mypy --strict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint_and_format_are_clean() -> None:
    ruff = str(Path(sys.executable).with_name("ruff"))  # installed by the test extras
    if not Path(ruff).exists():
        ruff = shutil.which("ruff") or ruff
    lint = run(ruff, "check", "src", "tests", "bench", "scripts")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run(ruff, "format", "--check", "src", "tests", "bench", "scripts")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_is_clean() -> None:
    proc = run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
