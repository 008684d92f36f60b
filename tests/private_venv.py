"""A private venv under the user cache dir, for tests that run packages too heavy, or too
conflicting, for the `test` extra (LiteLLM's proxy, the GenAI SDKs and instrumentations).

Built once per set of pinned specs and Python, in a staging dir renamed into place when the
install succeeded, so a half-built venv is never used; reused afterwards, never left in
/tmp. A test that can't build it skips with pip's error, except under CI, where it fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from tokentop.dirs import user_dir

INSTALL_TIMEOUT_S = 600


def venv_dir(name: str, specs: Sequence[str]) -> Path:
    """`$XDG_CACHE_HOME/tokentop/test-NAME-<hash of specs and Python>`."""
    tag = hashlib.sha256(f"{' '.join(specs)} {sys.version}".encode()).hexdigest()[:12]
    return user_dir("cache") / f"test-{name}-{tag}"


def private_python(name: str, specs: Sequence[str], given_env: str = "") -> Path:
    """A Python that has `specs`: `$given_env` when set, else the cached private venv."""
    given = os.environ.get(given_env) if given_env else None
    if given:
        return Path(given)
    venv = venv_dir(name, specs)
    python = venv / "bin" / "python"
    if (venv / "ready").exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"test-{name}-build-", dir=venv.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True, timeout=120)
        subprocess.run(
            [str(staging / "bin/python"), "-m", "pip", "install", "-q", *specs],
            check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        detail = getattr(exc, "stderr", "") or str(exc)
        message = f"cannot install {' '.join(specs)} for the {name} test: {detail[-600:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    (staging / "ready").touch()
    try:  # `bin/python -m ...` runs fine from a moved venv (only its scripts' shebangs break)
        staging.rename(venv)
    except OSError:  # another run finished first
        shutil.rmtree(staging, ignore_errors=True)
    return python
