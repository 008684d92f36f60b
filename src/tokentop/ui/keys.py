"""Default keys for every binding id in config.KEY_ACTIONS, and the Binding objects built from them.

htop, btop and k9s habits: / filter, s or > next sort column, < previous, I invert (htop),
F6 sort, F4 filter, F1 help, F9 kill, F10 quit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from textual.binding import Binding, BindingType

from tokentop.config import DEFAULT_KEYS as KEY_STRINGS
from tokentop.config import KEY_ACTIONS, Config


class KeySpec(NamedTuple):
    keys: str
    action: str
    label: str
    """Footer label; empty keeps the binding out of the footer."""


DEFAULT_KEYS: dict[str, KeySpec] = {
    "filter": KeySpec("/,f4", "app.filter", "Filter"),
    "sort-next": KeySpec("s,>,f6", "app.sort(1)", "Sort"),
    "sort-prev": KeySpec("<", "app.sort(-1)", ""),
    "sort-reverse": KeySpec("I", "app.reverse_sort", ""),
    "open-details": KeySpec("enter", "app.open_details", "Details"),
    "tag": KeySpec("space", "app.tag", "Tag"),
    "pause-resume": KeySpec("p", "app.pause_resume", "Pause"),
    "terminate": KeySpec("t", "app.terminate", "Term"),
    "kill": KeySpec("k,f9", "app.kill", "Kill"),
    "budget": KeySpec("b", "app.budget", "Budget"),
    "faster": KeySpec("+", "app.refresh_rate(-1)", ""),
    "slower": KeySpec("-", "app.refresh_rate(1)", ""),
    "show-errors": KeySpec("e", "app.show_errors", ""),
    "history": KeySpec("h", "app.history", "History"),
    "show-all": KeySpec("a", "app.show_all", ""),
    "help": KeySpec("?,f1", "app.help", "Help"),
    "quit": KeySpec("q,f10", "app.quit", "Quit"),
    "back": KeySpec("escape", "app.clear", ""),
}
"""Binding id -> default keys; the ids are exactly those config's [keys] accepts."""
assert set(DEFAULT_KEYS) == set(KEY_ACTIONS), "keys and config.KEY_ACTIONS must agree"
assert {k: s.keys for k, s in DEFAULT_KEYS.items()} == KEY_STRINGS, "and config.DEFAULT_KEYS"

ACTION_IDS = frozenset({"pause-resume", "terminate", "kill"})
"""Bindings hidden and refused in read-only mode."""
TABLE_IDS = frozenset({"open-details"})
"""Bound on the table itself, so they replace DataTable's own enter."""
APP_IDS = frozenset({"help", "quit"})
"""Bound on the app, so they work on every screen."""


def bindings(ids: frozenset[str] | set[str]) -> list[BindingType]:
    return [
        Binding(spec.keys, spec.action, spec.label, show=bool(spec.label), id=binding_id)
        for binding_id, spec in DEFAULT_KEYS.items()
        if binding_id in ids
    ]


def screen_ids() -> frozenset[str]:
    return frozenset(DEFAULT_KEYS) - TABLE_IDS - APP_IDS


def key_help(overrides: Mapping[str, str], read_only: bool) -> list[tuple[str, str, str]]:
    """(keys as the user types them, what they do, binding id) for the help screen."""
    rows: list[tuple[str, str, str]] = []
    for binding_id, spec in DEFAULT_KEYS.items():
        if read_only and binding_id in ACTION_IDS:
            continue
        keys = overrides.get(binding_id, spec.keys)
        rows.append((keys.replace(",", " "), KEY_ACTIONS[binding_id], binding_id))
    rows.append(("ctrl+c", "Quit, as q does (htop, btop and k9s do the same)", ""))
    return rows


def key_of(config: Config, binding_id: str) -> str:
    """The keys bound to `binding_id` now, as config.toml spells them (for hints on screen)."""
    return config.keys.get(binding_id, DEFAULT_KEYS[binding_id].keys)
