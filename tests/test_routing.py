"""Routing arithmetic: a session's tokens priced on the cheapest model of the same vendor.

The reference here reads src/tokentop/data/prices.json itself and prices every token kind
by hand, so the check does not go through the code it checks. The session mixes three Claude
models in one transcript, read by the real engine and recorded as `report` records it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest

from claude_lines import envelope
from tokentop.cli import main
from tokentop.config import Config, Routing
from tokentop.history.git_output import GitValue
from tokentop.history.routing import PREMIUM_FLAG, premium_low_output, route_models
from tokentop.history.summary import SessionSummary
from tokentop.model import TokenCounts, ToolStat
from tokentop.pricing import PriceTable
from ui_fakes import fake_commit, make_session, summary_of

PRICES = json.loads(
    (Path(__file__).parents[1] / "src" / "tokentop" / "data" / "prices.json").read_text()
)["models"]
MODELS = {  # model: (responses, input, output, cache read, cache write) per response
    "claude-opus-4-5-20251101": (3, 12, 800, 30_000, 2_000),
    "claude-sonnet-4-5-20250929": (4, 20, 400, 25_000, 1_000),
    "claude-haiku-4-5-20251001": (2, 8, 300, 10_000, 0),
}


def by_hand(row: dict[str, Any], t: TokenCounts) -> float:
    """Tokens times the row's prices; a cache price the row lacks is its input price."""
    cache_read = row.get("cache_read", row["input"])
    write_5m = row.get("cache_write_5m", row["input"])
    return (
        t.input * row["input"]
        + (t.output + t.reasoning) * row["output"]
        + t.cache_read * cache_read
        + t.cache_write_5m * write_5m
    )


def anthropic_minimum(t: TokenCounts) -> tuple[float, str]:
    """The cheapest Anthropic row (priced above zero) for these tokens, by hand."""
    rows = [
        (by_hand(row, t), key)
        for key, row in PRICES.items()
        if "/" not in key and row.get("provider") == "anthropic" and row["input"] > 0
    ]
    return min(rows)


def write_session(root: Path, cwd: str) -> dict[str, TokenCounts]:
    lines = [envelope("mixed-1", cwd, "user", {"role": "user", "content": "Read the docs."})]
    totals: dict[str, TokenCounts] = {}
    n = 0
    for model, (responses, inp, out, read, write) in MODELS.items():
        for _ in range(responses):
            n += 1
            usage = {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": read,
                     "cache_creation_input_tokens": write}  # fmt: skip
            message = {"id": f"msg_{n}", "model": model, "role": "assistant",
                       "content": [{"type": "text", "text": "ok"}], "usage": usage}  # fmt: skip
            lines.append(envelope("mixed-1", cwd, "assistant", message))
            t = TokenCounts(inp, out, read, write)
            totals[model] = totals.get(model, TokenCounts()) + t
    folder = root / "projects" / "-work-mixed"
    folder.mkdir(parents=True)
    (folder / "mixed-1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return totals


def test_a_mixed_model_session_is_priced_exactly_against_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    totals = write_session(tmp_path / "claude", "/work/mixed")
    argv = ["report", "--format", "json", "--no-git", "--claude-dir", str(tmp_path / "claude"),
            "--db", str(tmp_path / "t.db")]  # fmt: skip
    assert main(argv) == 0
    [row] = json.loads(capsys.readouterr().out)["rows"]
    actual = {m: by_hand(PRICES[m.rsplit("-", 1)[0]], t) for m, t in totals.items()}
    cheapest = {m: anthropic_minimum(t) for m, t in totals.items()}
    assert {m: key for m, (_, key) in cheapest.items()} == dict.fromkeys(MODELS, "claude-haiku-5-5")
    assert row["cost_usd"] == pytest.approx(math.fsum(actual.values()), rel=1e-12)
    assert row["cheapest_usd"] == pytest.approx(
        math.fsum(c for c, _ in cheapest.values()), rel=1e-12
    )
    from tokentop.history.store import Store

    with Store(tmp_path / "t.db") as store:
        [summary] = store.summaries()[0]
    route = route_models(summary.models, PriceTable.default())
    for m in route.models:
        assert m.actual_usd == pytest.approx(actual[m.model], rel=1e-12)
        assert (m.cheapest_model, m.cheapest_usd) == (
            cheapest[m.model][1],
            pytest.approx(cheapest[m.model][0], rel=1e-12),
        )
    assert route.complete and route.ratio == pytest.approx(row["cost_usd"] / row["cheapest_usd"])


def summary(model: str, *, output: int, tools: dict[str, int], commits: int) -> SessionSummary:
    session = make_session("s-" + model, model=model, cost=0.0)
    base = summary_of(session, GitValue("ok", "theater", commits=tuple(
        fake_commit(f"c{i}") for i in range(commits)
    )))  # fmt: skip
    tokens = TokenCounts(input=50, output=output, cache_read=400_000, cache_write_5m=20_000)
    cost = PriceTable.default().cost(model, tokens) or 0.0
    models = tuple(
        msgspec.structs.replace(m, tokens=tokens, cost_usd=cost, responses=20) for m in base.models
    )
    calls = sum(tools.values())
    return msgspec.structs.replace(
        base, models=models, tokens=tokens, cost_usd=cost, responses=20, tool_calls=calls,
        tools=tuple(ToolStat(n, c, 0) for n, c in tools.items()),
    )  # fmt: skip


def flagged(s: SessionSummary, cfg: Routing | None = None) -> bool:
    route = route_models(s.models, PriceTable.default())
    return premium_low_output(s, route, cfg or Config().routing)


def test_premium_model_for_little_output_is_flagged_and_only_then() -> None:
    reads = {"Read": 12, "Grep": 5, "Bash": 2}
    opus = "claude-opus-4-5-20251101"
    assert flagged(summary(opus, output=2_000, tools=reads, commits=0))
    assert not flagged(summary(opus, output=2_000, tools=reads, commits=1))  # it committed
    assert not flagged(summary(opus, output=20_000, tools=reads, commits=0))  # it wrote a lot
    writes = {"Read": 3, "Edit": 6, "Write": 4}
    assert not flagged(summary(opus, output=2_000, tools=writes, commits=0))  # mostly edits
    cheap = "claude-haiku-4-5-20251001"  # 10x the cheapest: under premium_ratio = 20
    assert not flagged(summary(cheap, output=2_000, tools=reads, commits=0))
    assert flagged(summary(cheap, output=2_000, tools=reads, commits=0), Routing(premium_ratio=5))
    assert PREMIUM_FLAG == "premium-low-output"
