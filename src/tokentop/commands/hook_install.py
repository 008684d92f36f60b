"""`tokentop hook install`: merge tokentop's hook into Claude Code's settings.json.

Shows the diff, asks (unless --yes), keeps a timestamped backup of the old file, writes the new
one atomically (through a symlink, to its target), and does nothing when the hook is already
there (an entry of ours whose command changed, e.g. after a reinstall, is updated in place).
Other hooks and settings are untouched.

Then it offers tokentop's status line (`statusLine`, running `tokentop.commands.statusline`)
the same way: its own diff, question and backup. A status line of the user's own is replaced
only when they answer yes to a question that names it; `--yes` never replaces it.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokentop.files import create_new, write_atomic

HOOK_EVENTS: dict[str, str | None] = {"SessionStart": None, "PreToolUse": "*"}
"""Event -> matcher (None: the event takes no matcher)."""
HOOK_TIMEOUT_S = 30
EXIT_OK = 0
EXIT_FAILED = 1


class SettingsError(Exception):
    """settings.json cannot be merged safely; nothing was written."""


def default_settings_path(env: dict[str, str] | None = None) -> Path:
    """User settings: in the first `$CLAUDE_CONFIG_DIR` entry if set, else ~/.claude."""
    env = dict(os.environ) if env is None else env
    listed = [p.strip() for p in env.get("CLAUDE_CONFIG_DIR", "").split(",") if p.strip()]
    folder = Path(listed[0]).expanduser() if listed else Path.home() / ".claude"
    return folder / "settings.json"


def hook_command() -> str:
    """This interpreter running the lean hook module: found whatever PATH the agent has.

    `-P`: `python -m` would put the agent's working folder first on the import path, and a
    repository holding a `tokentop/` package or a `select.py` would run its own code as the
    hook. An entry of ours without it (an older install) is updated by `hook install`."""
    return f"{shlex.quote(sys.executable)} -P -m tokentop.commands.hook"


def statusline_command() -> str:
    """As `hook_command`: Claude Code runs it in the project's folder too."""
    return f"{shlex.quote(sys.executable)} -P -m tokentop.commands.statusline"


def is_our_statusline(entry: object) -> bool:
    return runs(entry.get("command", "") if isinstance(entry, dict) else "", "statusline")


def is_ours(command: object) -> bool:
    return runs(command, "hook")


def runs(command: object, subcommand: str) -> bool:
    """Whether a settings command runs tokentop's `subcommand`: as `python -m
    tokentop.commands.SUBCOMMAND` (what install writes) or `... tokentop SUBCOMMAND`."""
    text = str(command)
    return f"tokentop.commands.{subcommand}" in text or text.rstrip().endswith(
        f"tokentop {subcommand}"
    )


def merged(settings: Any, command: str) -> dict[str, Any]:
    """`settings` with tokentop's hook entries present exactly once (a new object)."""
    if not isinstance(settings, dict):
        raise SettingsError("the file is not a JSON object")
    result = copy.deepcopy(settings)
    hooks = result.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise SettingsError('"hooks" is not an object')
    for event, matcher in HOOK_EVENTS.items():
        groups = hooks.setdefault(event, [])
        if not isinstance(groups, list):
            raise SettingsError(f'"hooks.{event}" is not a list')
        _merge_event(groups, matcher, command)
    return result


def _merge_event(groups: list[Any], matcher: str | None, command: str) -> None:
    ours = [
        hook
        for group in groups
        if isinstance(group, dict) and isinstance(group.get("hooks"), list)
        for hook in group["hooks"]
        if isinstance(hook, dict) and is_ours(hook.get("command", ""))
    ]
    for hook in ours:
        hook["command"] = command
    if not ours:
        entry: dict[str, Any] = {"matcher": matcher} if matcher is not None else {}
        entry["hooks"] = [{"type": "command", "command": command, "timeout": HOOK_TIMEOUT_S}]
        groups.append(entry)


def install(
    settings_path: Path | None,
    *,
    yes: bool = False,
    command: str | None = None,
    ask: Callable[[str], str] = input,
    out: Any = None,
    statusline: str | None = None,
) -> int:
    """Merge, show the diff, confirm, back up and write; returns the exit status. With a
    `statusline` command, then offer the status line the same way (declining it is fine)."""
    out = out or sys.stdout
    path = settings_path or default_settings_path()
    code = _offer(path, lambda s: merged(s, command or hook_command()), "the hook", yes, ask, out)
    if statusline is not None and code == EXIT_OK:
        _offer_statusline(path, statusline, yes, ask, out)
    return code


def _offer(
    path: Path,
    change: Callable[[Any], Any],
    what: str,
    yes: bool,
    ask: Callable[[str], str],
    out: Any,
    question: str = "",
) -> int:
    try:
        old_text, new_text = _plan(path, change)
    except SettingsError as error:
        print(f"tokentop: {path}: {error}; nothing was changed", file=sys.stderr)
        return EXIT_FAILED
    if new_text is None:
        out.write(f"tokentop's {what.removeprefix('the ')} is already installed in {path}\n")
        return EXIT_OK
    out.writelines(_diff(old_text, new_text, path, what))
    if not yes and not _confirmed(path, ask, question):
        out.write("Not changed.\n")
        return EXIT_FAILED
    return _write(path, old_text, new_text, out, what)


def _offer_statusline(
    path: Path, command: str, yes: bool, ask: Callable[[str], str], out: Any
) -> None:
    """Offer tokentop's status line; a different one of the user's is named, and kept on --yes."""
    try:
        current = json.loads(path.read_text(encoding="utf-8")).get("statusLine")
    except (OSError, ValueError, AttributeError):
        current = None
    question = ""
    if current is not None and not is_our_statusline(current):
        if yes:
            out.write("Your own status line is kept; run `tokentop hook install` without "
                      "--yes to replace it with tokentop's.\n")  # fmt: skip
            return
        shown = json.dumps(current, ensure_ascii=False)[:200]
        question = f"Replace your status line {shown} with tokentop's in {path}? [y/N] "
    entry = {"type": "command", "command": command, "padding": 0}

    def change(settings: Any) -> Any:
        return {**settings, "statusLine": entry} if isinstance(settings, dict) else settings

    _offer(path, change, "the status line", yes, ask, out, question)


def _plan(path: Path, change: Callable[[Any], Any]) -> tuple[str, str | None]:
    """(current text, new text or None when nothing changes)."""
    try:
        old_text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old_text = ""
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"cannot read it ({error})") from None
    try:
        settings = json.loads(old_text) if old_text.strip() else {}
    except json.JSONDecodeError as error:
        raise SettingsError(f"invalid JSON at line {error.lineno}: {error.msg}") from None
    new = change(settings)
    if new == settings:
        return old_text, None
    return old_text, json.dumps(new, indent=2, ensure_ascii=False) + "\n"


def _diff(old: str, new: str, path: Path, what: str = "the hook") -> list[str]:
    before = str(path) if old else "/dev/null"  # "(new)" only when there is no file yet
    after = f"{path} (with {what})" if old else f"{path} (new)"
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), before, after
    )
    return [line if line.endswith("\n") else line + "\n" for line in lines]


def _confirmed(path: Path, ask: Callable[[str], str], question: str = "") -> bool:
    try:
        reply = ask(question or f"Write these changes to {path}? [y/N] ")
        return reply.strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _backup(path: Path, blob: bytes) -> Path:
    """A new backup file (never an existing one, never through a planted symlink)."""
    try:
        create_new(path, blob)
    except FileExistsError:
        path = path.with_name(f"{path.name}-{os.urandom(3).hex()}")
        create_new(path, blob)
    return path


def _write(path: Path, old_text: str, new_text: str, out: Any, what: str = "the hook") -> int:
    """Back up the old file (if any), then replace it atomically; a symlinked settings.json
    (a dotfiles repo) is updated at its target and stays a link."""
    backup = path.with_name(f"{path.name}.tokentop-backup-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if old_text:
            backup = _backup(backup, old_text.encode("utf-8"))
        written = write_atomic(path, new_text.encode("utf-8"), mode=None, durable=True)
    except OSError as error:
        print(f"tokentop: cannot write {path}: {error}; nothing was changed", file=sys.stderr)
        return EXIT_FAILED
    saved = f" (backup: {backup})" if old_text else ""
    via = f" (the link's target, {written})" if written != path.absolute() else ""
    out.write(f"Installed tokentop's {what.removeprefix('the ')} in {path}{via}{saved}.\n")
    return EXIT_OK
