"""One reading of money and token counts for the budget dialog, the flags and the config."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokentop.cli import build_parser
from tokentop.commands.common import load_config
from tokentop.config import Budget, ConfigError, parse_config
from tokentop.history.store import Store
from tokentop.model import SessionKey
from tokentop.quantities import QuantityError, parse_tokens, parse_usd, plural
from tokentop.render import figures as fmt


@pytest.mark.parametrize(
    ("typed", "usd", "tokens"),
    [
        ("", None, None),
        ("5", 5.0, 5),
        ("1,000", 1000.0, 1000),
        ("1,000,000", 1e6, 1_000_000),
        ("500k", 500_000.0, 500_000),
        ("2M", 2e6, 2_000_000),
        ("0", 0.0, 0),
        ("1_500", 1500.0, 1500),
    ],
)
def test_amounts_as_users_type_them(typed: str, usd: float | None, tokens: int | None) -> None:
    assert parse_usd(typed) == usd
    assert parse_tokens(typed) == tokens


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("3,50", "ambiguous comma"),
        ("1,5k", "ambiguous comma"),
        ("nan", "not a finite number"),
        ("inf", "not a finite number"),
        ("-inf", "must be zero or more"),
        ("1e400", "too large"),
        ("2e9", "too large"),
        ("1e-9", "too small"),
        ("-1", "must be zero or more"),
        ("lots", "not a number"),
        ("1..2", "not a number"),
        ("0x10", "not a number"),
    ],
)
def test_bad_dollars_are_refused_with_their_reason(typed: str, reason: str) -> None:
    with pytest.raises(QuantityError, match=reason):
        parse_usd(typed)


def test_token_counts_are_whole_and_not_dollars() -> None:
    assert parse_tokens("2.5k") == 2500
    for typed, reason in (("0.4", "too small"), ("$5", "not dollars"), ("1e16", "too large")):
        with pytest.raises(QuantityError, match=reason):
            parse_tokens(typed)


def test_the_flags_read_amounts_as_the_dialog_does() -> None:
    args = build_parser(["run"]).parse_args(["run", "--budget-tokens", "2M", "--budget", "$2.50"])
    assert (args.budget_tokens, args.budget) == (2_000_000, 2.5)
    args = build_parser(["demo"]).parse_args(["demo", "--budget", "1,000"])
    assert args.budget == 1000.0


@pytest.mark.parametrize(
    "flag", [["--budget", "-1"], ["--budget", "3,50"], ["--budget-tokens", "x"]]
)
def test_a_bad_run_budget_exits_2_with_the_reason(flag: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tokentop.cli", "run", *flag, "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "argument --budget" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["inf", "nan", "2e9"])
def test_the_config_refuses_budgets_no_dialog_would_take(value: str) -> None:
    with pytest.raises(ConfigError, match=r"budgets\.usd"):
        parse_config(f"[budgets]\nusd = {value}\n")


def test_a_tiny_budget_never_overflows_the_budget_column() -> None:
    assert fmt.percent(93925.0) == ">999%"
    assert fmt.percent(9.99) == "999%"
    assert len(fmt.percent(1e12)) <= 5


def test_counts_agree_with_their_nouns() -> None:
    assert [plural(n, "error") for n in (0, 1, 12, 1200)] == [
        "0 errors",
        "1 error",
        "12 errors",
        "1,200 errors",
    ]


@pytest.mark.parametrize("command", ["guard", "run"])
def test_guard_and_run_load_the_budgets_kept_in_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    key = SessionKey("codex", "0199a")
    with Store(tmp_path / "tokentop" / "tokentop.db") as store:
        store.set_budget(key, Budget(usd=1.5))
        args = build_parser([command]).parse_args([command])
        config = load_config(args)
        assert config.budget_for("codex", "/w/shop", "0199a") == Budget(usd=1.5)
        assert config.budget_for("codex", "/w/shop", "other") == Budget()
        store.set_budget(key, Budget(tokens=2_000_000))  # changed with `b` while guard runs
        deadline = time.monotonic() + 10
        while config.budget_for("codex", "/w/shop", "0199a") != Budget(tokens=2_000_000):
            assert time.monotonic() < deadline, "a running guard or run never saw the change"
            time.sleep(0.2)
    sessions = build_parser(["sessions"]).parse_args(["sessions"])  # shows what they enforce
    own = load_config(sessions).session_budgets.get(str(key))
    assert own is not None and own.budget == Budget(tokens=2_000_000)


def test_one_convention_for_an_unpriced_cost_in_every_front_end() -> None:
    """The app, `sessions`, Markdown and the policy's reasons show a cost with an unpriced
    part as the same lower bound, "≥$x" (never "$x+?"), and counts the same way."""
    import msgspec
    from tests.test_store import snapshot

    from tokentop.config import Budgets, Config
    from tokentop.history.summary import build_summary
    from tokentop.model import LedgerSnapshot
    from tokentop.policy.detectors import budget_finding
    from tokentop.policy.watchdog import judge_once
    from tokentop.render.markdown import summary_markdown
    from tokentop.render.records import text_table

    s = msgspec.structs.replace(
        snapshot("s1", cost=2.5), unpriced_models=("mystery",), cwd="C:\\work\\shop"
    )
    table = text_table(
        judge_once(LedgerSnapshot(taken_at=2000.0, sessions=(s,), files=(), bad_lines=0, version=1))
    )
    md = summary_markdown(build_summary(s, now=2000.0, reason="idle", config=Config()))
    over = Config(budgets=Budgets(usd=1.0))
    found = budget_finding(s, over)
    assert found is not None
    reason = found.reason
    for text in (table, md, reason, fmt.cost(s.cost_usd, s.unpriced_models)):
        assert "≥$2.50" in text and "+?" not in text, text
    assert "shop" in table.split() and fmt.project_name(s.cwd) == "shop"
    assert fmt.usd(None) == "-" and fmt.usd(0.0, complete=False) == "?"
    assert fmt.compact(123_456) == "123k" and fmt.usd(1234.5) == "$1,234"
    assert [fmt.usd(x) for x in (0.0099, 0.0094, 0.004, 0.011)] == [
        "$0.01", "$0.009", "$0.004", "$0.01",
    ]  # fmt: skip
