"""The price table behind a cost function that loads it on first use.

A restart that finds nothing new never prices anything, so it need not import and decode the
table; the object is also picklable, for the cold scan's second process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from tokentop.model import TokenCounts

if TYPE_CHECKING:
    from tokentop.config import Price
    from tokentop.pricing import PriceTable


class LazyPrices:
    """`cost` and `linear_limit` of the bundled table with `[prices."MODEL"]` overrides."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.overrides = dict(overrides or {})
        self._table: PriceTable | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"overrides": self.overrides}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["overrides"])  # type: ignore[misc]

    @property
    def table(self) -> PriceTable:
        if self._table is None:
            self._table = build_table(self.overrides)
        return self._table

    def cost(self, model: str, tokens: TokenCounts) -> float | None:
        return self.table.cost(model, tokens)

    def linear_limit(self, model: str) -> int:
        return self.table.linear_limit(model)


def build_table(overrides: Mapping[str, Price]) -> PriceTable:
    """The bundled table with overrides given in USD per million tokens."""
    from tokentop.pricing import ModelPrice, PriceTable

    table = PriceTable.default()
    prices: dict[str, ModelPrice] = {}
    for model, given in overrides.items():
        base = table.lookup(model) or ModelPrice(input=0.0, output=0.0)
        changes = {k: v / 1e6 for k, v in msgspec.structs.asdict(given).items() if v is not None}
        prices[model] = msgspec.structs.replace(base, **changes)
    return table.with_overrides(prices) if prices else table
