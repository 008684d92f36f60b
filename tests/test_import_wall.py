"""The core and the headless CLI must never pull in textual or rich (the UI is a thin layer)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import tokentop

CORE_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(tokentop.__path__, "tokentop.")
    if not m.name.startswith("tokentop.ui")
)


def test_core_modules_exist() -> None:
    assert "tokentop.engine" in CORE_MODULES
    assert "tokentop.cli" in CORE_MODULES


def test_core_and_headless_cli_never_import_textual_or_rich(tmp_path) -> None:
    code = (
        "import sys, importlib\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "from tokentop.cli import main\n"
        f"main(['sessions', '--json', '--no-cache', '--claude-dir', {str(tmp_path)!r}])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "assert not bad, bad\n"
        "print('clean')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("clean")
