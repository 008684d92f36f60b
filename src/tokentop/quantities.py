"""Money and token counts as users type them, read one way everywhere: the budget dialog and
every flag (`run --budget`, `--budget-tokens 2M`, `demo --budget`); and shown back one way
("2.0M", "≥$1.23"): here, because the detectors' reasons show them and cannot import render/.

A comma is a thousands separator only in groups of three ("1,000"); "3,50" could mean $3.50
or $350, so it is refused rather than guessed. Words float() accepts ("nan", "inf") and
values that overflow ("1e400") are refused by name, and so are amounts too small to show:
a budget below a cent or below one token would fill the BUDGET column with digits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T", float, int)

SUFFIXES: Final = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}
MAX_USD: Final = 1e9
"""A billion dollars: anything above is a typo, not a budget."""
MIN_USD: Final = 0.01
MAX_TOKENS: Final = 10**15

_NUMBER = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$", re.IGNORECASE)
_GROUPED = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d*)?$")


class QuantityError(ValueError):
    """Why a typed amount is refused, worded for one line."""


def _number(text: str) -> float:
    """A non-negative finite number with an optional k/M/G suffix; the reason if not."""
    shown = text.strip()
    cleaned = shown.removeprefix("$").replace("_", "").strip()
    scale = SUFFIXES.get(cleaned[-1:].lower(), 1.0)
    body = cleaned[:-1] if scale != 1.0 else cleaned
    if "," in body:
        if not _GROUPED.match(body):
            raise QuantityError(f"ambiguous comma in {shown!r}: {_comma_hint(body)}")
        body = body.replace(",", "")
    if body.startswith("-"):
        raise QuantityError(f"must be zero or more: {shown!r}")
    if body.lower().lstrip("+") in ("nan", "inf", "infinity"):
        raise QuantityError(f"not a finite number: {shown!r}")
    if not _NUMBER.match(body):
        raise QuantityError(f"not a number: {shown!r}")
    value = float(body) * scale
    if math.isinf(value):
        raise QuantityError(f"too large: {shown!r}")
    return value


def _comma_hint(body: str) -> str:
    """The two readings of the user's own digits: "1,50" -> "write 1.50 or 150"."""
    joined = body.replace(",", "")
    if body.count(",") == 1:
        return f"write {body.replace(',', '.')} or {joined}"
    return f"write it without commas ({joined}) or with one point"


def parse_usd(text: str) -> float | None:
    """Dollars: "" (none), "5", "$2.50", "1,000", "2k"; zero means no spending at all."""
    if not text.strip():
        return None
    value = _number(text)
    if value > MAX_USD:
        raise QuantityError(f"too large: {text.strip()!r} (at most ${MAX_USD:,.0f})")
    if 0 < value < MIN_USD:
        raise QuantityError(f"too small: {text.strip()!r} (at least $0.01, or 0)")
    return value


def parse_tokens(text: str) -> int | None:
    """Tokens: "" (none), "500000", "500k", "2M", "1,000,000"; whole tokens only."""
    if not text.strip():
        return None
    if text.strip().startswith("$"):
        raise QuantityError(f"a token count, not dollars: {text.strip()!r}")
    value = _number(text)
    if value > MAX_TOKENS:
        raise QuantityError(f"too large: {text.strip()!r} (at most {MAX_TOKENS:.0e} tokens)")
    if 0 < value < 1:
        raise QuantityError(f"too small: {text.strip()!r} (at least 1 token, or 0)")
    return round(value)


def usd_arg(text: str) -> float:
    """argparse type for dollar flags: a bad value exits 2 with the reason."""
    return _required(parse_usd, text)


def tokens_arg(text: str) -> int:
    """argparse type for token flags ("2M" as in the budget dialog)."""
    return _required(parse_tokens, text)


def _required(parse: Callable[[str], T | None], text: str) -> T:
    import argparse  # only here: the hook imports this module and never parses arguments

    try:
        value = parse(text)
    except QuantityError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value is None:
        raise argparse.ArgumentTypeError("expected an amount")
    return value


def compact(n: float) -> str:
    """1234 -> 1.2k, 2_500_000 -> 2.5M, 123_456 -> 123k: at most 5 characters for counts
    below 1e15; the one count convention (render/figures.py re-exports it)."""
    value = abs(n)
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            scaled = n / limit
            return f"{scaled:.1f}{suffix}" if abs(scaled) < 100 else f"{scaled:.0f}{suffix}"
    return f"{n:.0f}"


def usd(amount: float | None, complete: bool = True) -> str:
    """Dollars as shown: "$1.23", "$0.004", "$1,234"; "-" for no figure. `complete=False`
    marks a lower bound (part is unpriced): "≥$1.23", or "?" when nothing is priced."""
    if amount is None:
        return "-"
    if not complete and amount <= 0:
        return "?"
    if amount >= 1000:
        text = f"${amount:,.0f}"
    else:
        # three places only below what two would show as $0.01 ($0.0099 is "$0.01", not
        # "$0.010" beside "$0.01" in the same stream)
        text = f"${amount:.2f}" if amount >= 0.0095 or amount == 0 else f"${amount:.3f}"
    return text if complete else f"≥{text}"


def spent_of(spent: float, budget: float, complete: bool = True) -> str:
    """A spend beside its budget, "$0.52 of $1.00". Where two places would print them alike
    though they differ (a $0.052 spend of a $0.05 budget read "$0.05 of $0.05 (104%)"),
    both get a third place, then a fourth."""
    text, limit = usd(spent, complete), usd(budget)
    for places in (3, 4):
        if text.lstrip("≥") != limit or spent == budget or budget >= 1000:
            break
        text = ("" if complete else "≥") + f"${spent:.{places}f}"
        limit = f"${budget:.{places}f}"
    return f"{text} of {limit}"


def plural(n: int, word: str) -> str:
    """ "1 error", "12 calls": the count with its noun in agreement (regular plurals only)."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"
