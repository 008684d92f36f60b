"""What the same tokens would have cost on the cheapest model of the same vendor.

Arithmetic, not a quality claim: the tokens a session spent, kind by kind, priced at another
model's rates in the price table. Whether that model could have done the work is not
something tokentop knows. The vendor is the model's maker as the table names it (a Claude
model is Anthropic's whoever serves it, unless it is served through a cloud route such as
Bedrock or Vertex, whose own prices are then compared); the candidates are the vendor's
models priced above zero (a $0 row is a free preview, not a price). A candidate with a
long-context tier is priced at the tier that a response of the session's mean input size
would reach: the summary keeps totals per model, not each response's size.

The flag `premium-low-output` marks a session whose main model is premium for it (its
tokens cost at least `[routing] premium_ratio` times the cheapest alternative), that wrote
little per response, committed nothing and mostly read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import msgspec

from tokentop.config import Routing as RoutingConfig
from tokentop.history.summary import ModelShare, SessionSummary
from tokentop.model import TokenCounts
from tokentop.pricing import VENDOR_ROUTES, ModelPrice, PriceTable, parse_model_name
from tokentop.sources.base import READ_TOOLS

PREMIUM_FLAG = "premium-low-output"
_FAMILIES = (
    ("claude-", "anthropic"),
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("codex-", "openai"),
    ("gemini-", "gemini"),
    ("gemma-", "gemini"),
    ("grok-", "xai"),
    ("deepseek-", "deepseek"),
)
"""Name prefixes that say the maker when the table's row does not (a Claude model whose
only row came from Bedrock's list, e.g. claude-opus-4-1)."""


class ModelRoute(msgspec.Struct, frozen=True):
    """One model of a session: what it cost and what the cheapest alternative would."""

    model: str
    actual_usd: float | None
    """None when the model is unpriced."""
    cheapest_model: str
    """The table key of the cheapest model of its vendor ("" when none is known)."""
    cheapest_usd: float | None
    """The model's tokens at the cheapest model's rates; None without an alternative."""


class Route(msgspec.Struct, frozen=True):
    """A session's (or a job's) actual cost next to the same tokens on cheaper models."""

    actual_usd: float
    cheapest_usd: float
    """Each model's tokens on its vendor's cheapest model; a model without one counts at
    its actual cost (nothing cheaper is known)."""
    complete: bool
    """Every model was priced and had a vendor known to the table."""
    models: tuple[ModelRoute, ...]

    @property
    def cheapest_models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.cheapest_model for m in self.models if m.cheapest_model))

    @property
    def ratio(self) -> float | None:
        """Actual over cheapest: how many times the cheapest the session cost."""
        return self.actual_usd / self.cheapest_usd if self.cheapest_usd > 0 else None


def vendor_of(model: str, table: PriceTable) -> str:
    """The group of models `model` is compared with: its maker, or its cloud route."""
    route, name = parse_model_name(model)
    if route and route not in VENDOR_ROUTES:
        return route  # bedrock, bedrock.<region>, vertex_ai: the reseller's own prices
    if route:
        return route
    for prefix, maker in _FAMILIES:
        if name.startswith(prefix):
            return maker
    price = table.lookup(model)
    return price.provider if price is not None and price.provider in VENDOR_ROUTES else ""


@functools.cache
def _candidates(table: PriceTable, vendor: str) -> tuple[tuple[str, ModelPrice], ...]:
    """The vendor's models priced above zero, by their table key (none for no vendor)."""
    found: list[tuple[str, ModelPrice]] = []
    if not vendor:
        return ()
    for key, price in table.items():
        route, _, _name = key.rpartition("/")
        mine = (
            route == vendor
            if vendor not in VENDOR_ROUTES
            else not route and (price.provider == vendor)
        )
        if mine and price.input > 0 and price.output > 0:
            found.append((key, price))
    return tuple(sorted(found))


def priced_at(price: ModelPrice, tokens: TokenCounts, responses: int) -> float:
    """`tokens` (a total over `responses`) at `price`'s rates, with the long-context tier a
    response of the mean input size reaches."""
    per_response = (tokens.input + tokens.cache_read + tokens.cache_write) / max(responses, 1)
    return price.cost(tokens, math.ceil(per_response))


def cheapest(
    model: str, tokens: TokenCounts, responses: int, table: PriceTable
) -> tuple[str, float] | None:
    """(table key, cost) of the vendor's model that prices these tokens lowest."""
    options = _candidates(table, vendor_of(model, table))
    if not options:
        return None
    costs = ((priced_at(p, tokens, responses), key) for key, p in options)
    cost, key = min(costs)
    return key, cost


def route_models(models: Iterable[ModelShare], table: PriceTable) -> Route:
    """Each model's actual cost next to its vendor's cheapest, and the sums."""
    routes = []
    for m in models:
        found = cheapest(m.model, m.tokens, m.responses, table)
        alt_model, alt = found if found is not None else ("", None)
        if alt is not None and m.cost_usd is not None:
            alt = min(alt, m.cost_usd)  # the model itself may be its vendor's cheapest
        routes.append(ModelRoute(m.model, m.cost_usd, alt_model, alt))
    return route_sum(routes)


def route_sum(routes: Iterable[ModelRoute]) -> Route:
    routes = tuple(routes)
    actual = math.fsum(r.actual_usd or 0.0 for r in routes)
    alt = math.fsum(
        r.cheapest_usd if r.cheapest_usd is not None else (r.actual_usd or 0.0) for r in routes
    )
    complete = all(r.actual_usd is not None and r.cheapest_usd is not None for r in routes)
    return Route(actual, alt, complete, routes)


def merge_routes(routes: Iterable[Route]) -> Route:
    """A job's route: its runs' models, added up."""
    return route_sum(m for r in routes for m in r.models)


def read_share(s: SessionSummary) -> float:
    """Share of the tool calls that only read; 1.0 without tool calls (nothing changed)."""
    if not s.tool_calls:
        return 1.0
    reads = sum(t.calls for t in s.tools if t.name in READ_TOOLS)
    return reads / s.tool_calls


def premium_low_output(s: SessionSummary, route: Route, cfg: RoutingConfig) -> bool:
    """A premium model (for these tokens), little output per response, no commits (git was
    asked), and mostly reading."""
    main = max(route.models, key=lambda m: m.actual_usd or 0.0, default=None)
    if main is None or not main.actual_usd or not main.cheapest_usd:
        return False
    premium = main.actual_usd >= cfg.premium_ratio * main.cheapest_usd
    output = s.tokens.output + s.tokens.reasoning
    little = output < cfg.low_output_per_response * max(s.responses, 1)
    no_commits = s.git is not None and not s.git.commits
    return premium and little and no_commits and read_share(s) >= cfg.reads_share
