"""What a response costs: per model, the per-token price of each kind, probed once from the
cost function, so the cold scan prices most responses with a dot product."""

from __future__ import annotations

from collections.abc import Callable

from tokentop.engine.ledger_state import KINDS
from tokentop.model import TokenCounts, UsageEvent

CostFn = Callable[[str, TokenCounts], "float | None"]
Card = tuple[tuple[float, ...] | None, int]
"""Per-token rates by kind (None when unpriced), and the input size they hold up to."""
LINEAR_PRICE_LIMIT = 100_000
"""Below this much input no known price table has a long-context tier, so a response's cost
is a dot product of per-kind rates probed once per model (the cold-scan hot path). A cost
function bound to an object with `linear_limit(model)` (the PriceTable) gives a tighter one."""


class RateCards(dict[str, Card]):
    """Model -> its card, probed on first use (`cards[model]`: a plain dict lookup after)."""

    def __init__(self, cost_fn: CostFn) -> None:
        super().__init__()
        self.cost_fn = cost_fn

    def __missing__(self, model: str) -> Card:
        owner = getattr(self.cost_fn, "__self__", None)
        limit_fn = getattr(owner, "linear_limit", None)
        limit = limit_fn(model) if callable(limit_fn) else LINEAR_PRICE_LIMIT
        card = self[model] = (_unit_rates(self.cost_fn, model), int(limit))
        return card

    def cost(self, event: UsageEvent, model: str) -> float | None:
        """The event's own cost, else its tokens at `model`'s prices; None when unpriced."""
        if event.cost_usd is not None:
            return event.cost_usd
        t = event.tokens
        rates, limit = self[model]
        if rates is None:
            return None
        if t.input + t.cache_read + t.cache_write_5m + t.cache_write_1h > limit:
            return self.cost_fn(model, t)
        return (
            t.input * rates[0]
            + t.output * rates[1]
            + t.cache_read * rates[2]
            + t.cache_write_5m * rates[3]
            + t.cache_write_1h * rates[4]
            + t.reasoning * rates[5]
        )


def _unit_rates(cost_fn: CostFn, model: str) -> tuple[float, ...] | None:
    """Per-token price of each kind, probed from the cost function; None when unpriced."""
    rates = []
    for i in range(KINDS):
        unit = [0] * KINDS
        unit[i] = 1
        rate = cost_fn(model, TokenCounts(*unit))
        if rate is None:
            return None
        rates.append(rate)
    return tuple(rates)
