"""Types of the C hot path (_claude_native.c); claude_parser.py is its reference."""

from collections.abc import Callable
from typing import Any

def items(
    data: bytes,
    state: tuple[str, bool, bool, str, int],
    session_key: Callable[[str], Any],
    run_type: type,
    info_type: type,
    changing: frozenset[str],
    short_hash: Callable[[bytes], str],
    output_hash: Callable[[bytes], str],
    hashed_per_session: int,
    /,
) -> tuple[list[Any], int, str, bool, str, int] | None: ...
