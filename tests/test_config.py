"""Config loading, its error messages, budget resolution, and once-per-crossing alerts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokentop.config import (
    KEY_ACTIONS,
    Alerts,
    Budget,
    Config,
    ConfigError,
    load_config,
    parse_config,
)
from tokentop.model import TokenCounts
from tokentop.policy.budgets import Level, budget_use, crossings, eta_seconds
from ui_fakes import make_session

GOOD = """\
refresh_s = 0.5
live_timeout_s = 60
read_only = true

[budgets]
usd = 5
tokens = 2_000_000

[budgets.projects."webshop"]
usd = 20

[budgets.projects."/srv/*/ml-*"]
tokens = 500_000

[budgets.agents.codex]
usd = 3
tokens = 1_000_000

[alerts]
warn_pct = 75
bell = false

[keys]
kill = "K"
sort-next = "s,F6"

[prices."gpt-4.1"]
input = 2.0
output = 8.0

[roots]
claude = ["~/other/.claude"]
"""


def test_good_config_loads_every_section(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert (config.refresh_s, config.live_timeout_s, config.read_only) == (0.5, 60.0, True)
    assert config.budgets.default == Budget(usd=5.0, tokens=2_000_000)
    assert config.budgets.projects["webshop"] == Budget(usd=20.0)
    assert config.alerts == Alerts(warn_pct=75.0, over_pct=100.0, bell=False)
    assert config.keys == {"kill": "K", "sort-next": "s,F6"}
    assert config.prices["gpt-4.1"].output == 8.0
    assert config.prices["gpt-4.1"].cache_read is None
    assert config.roots == {"claude": ["~/other/.claude"]}


def test_missing_default_file_means_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("tokentop.config.default_path", lambda: tmp_path / "absent.toml")
    assert load_config() == Config()


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml: no such file"):
        load_config(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[budgets]\nusd = 5\nusd = 6\n", "c.toml: invalid TOML: .*line 3"),
        ("\n[budgets]\nusd = 'five'\n", "c.toml:3: budgets.usd: expected a number, got a string"),
        ("[budgets]\ntokens = -1\n", "c.toml:2: budgets.tokens: expected an integer >= 0"),
        ("refresh = 2\n", "c.toml:1: refresh: unknown setting"),
        ("[alerts]\nwarnpct = 2\n", "c.toml:2: alerts.warnpct: unknown setting"),
        ("refresh_s = 0\n", "c.toml:1: refresh_s: expected a number > 0"),
        ("read_only = 'yes'\n", "c.toml:1: read_only: expected true or false, got a string"),
        ("budgets = 3\n", "c.toml:1: budgets: expected a table, got an integer"),
        (
            '[budgets.projects."my.app"]\nusd = "x"\n',
            'c.toml:2: budgets.projects."my.app".usd: expected a number, got a string',
        ),
        (
            "[budgets.agents.codex]\ndollars = 1\n",
            "c.toml:2: budgets.agents.codex.dollars: unknown",
        ),
        (
            '[prices."gpt-4.1"]\ninput = "2"\n',
            'c.toml:2: prices."gpt-4.1".input: expected a number',
        ),
        ("[keys]\nkil = 'K'\n", "c.toml:2: keys.kil: unknown action; known: filter, "),
        ("[keys]\nkill = ' '\n", "c.toml:2: keys.kill: expected a key name"),
        ("[keys]\nkill = 3\n", "c.toml:2: keys.kill: expected a string, got an integer"),
        ("[keys]\nkill = 'p'\n", "c.toml:2: keys.kill: 'p' is bound to both pause-resume and kill"),
        ("[keys]\nkill = 'a'\n", "c.toml:2: keys.kill: 'a' is bound to both show-all and kill"),
        (
            "[keys]\nhelp = 'x'\nquit = 'x,q'\n",
            "c.toml:3: keys.quit: 'x' is bound to both help and quit",
        ),
        ("[roots]\nclaude = ['a', 3]\n", r"c.toml:2: roots.claude\[1\]: expected a string"),
        ("[alerts]\nwarn_pct = 100\n", r"c.toml:2: alerts.warn_pct: must be below .*\(100\)"),
    ],
)
def test_bad_config_names_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(text, "c.toml")
    assert "\n" not in str(info.value)


def test_bad_config_file_message_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[budgets]\nusd = true\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:2: budgets.usd: expected a number, got a boolean"


def test_key_actions_cover_the_documented_keys() -> None:
    for action in ("filter", "open-details", "tag", "pause-resume", "terminate", "kill"):
        assert action in KEY_ACTIONS
    assert {"budget", "faster", "slower", "help", "quit", "back"} <= set(KEY_ACTIONS)


def test_budget_resolution_order() -> None:
    config = parse_config(GOOD)
    # default only
    assert config.budget_for("claude", "/home/me/notes") == Budget(5.0, 2_000_000)
    # agent beats default, field by field
    assert config.budget_for("codex", "/home/me/notes") == Budget(3.0, 1_000_000)
    # project by basename beats agent for the field it sets; tokens still from the agent
    assert config.budget_for("codex", "/home/me/webshop") == Budget(20.0, 1_000_000)
    # the project's name as every view shows it: a Windows cwd (a remote agent's) ends in it too
    assert config.budget_for("codex", "C:\\Users\\me\\webshop\\") == Budget(20.0, 1_000_000)
    # project by glob on the full cwd
    assert config.budget_for("claude", "/srv/x/ml-train") == Budget(5.0, 500_000)


def test_exact_project_names_beat_globs() -> None:
    config = parse_config(
        '[budgets.projects."web*"]\nusd = 1\n[budgets.projects.webshop]\nusd = 2\n'
    )
    assert config.budget_for("claude", "/a/webshop").usd == 2.0
    assert config.budget_for("claude", "/a/webapp").usd == 1.0
    assert config.budget_for("claude", "").usd is None


def test_activity_thresholds() -> None:
    config = Config(live_timeout_s=60, ended_after_s=600)
    assert config.activity(1000, 1060) == "live"
    assert config.activity(1000, 1061) == "idle"
    assert config.activity(1000, 1601) == "ended"


def test_budget_use_levels_eta_and_lower_bound() -> None:
    alerts = Alerts()
    session = make_session("s", cost=4.0, usd_h=2.0, tpm=1000)
    use = budget_use(session, Budget(usd=5.0), alerts)
    assert use.fraction == pytest.approx(0.8)
    assert use.level == Level.WARN
    assert use.eta_s == pytest.approx(1800)  # $1 left at $2/h
    assert not use.lower_bound
    assert budget_use(session, Budget(usd=4.0), alerts).level == Level.OVER
    assert budget_use(session, Budget(usd=4.0), alerts).eta_s == 0
    assert budget_use(session, Budget(), alerts).fraction is None
    unpriced = make_session("u", cost=1.0, unpriced=("mystery",))
    assert budget_use(unpriced, Budget(usd=10.0), alerts).lower_bound


def test_eta_takes_the_sooner_limit_and_none_when_idle() -> None:
    tokens = TokenCounts(input=9_000)
    session = make_session("s", tokens=tokens, cost=0.0, usd_h=1.0, tpm=100)
    assert eta_seconds(session, Budget(usd=1.0, tokens=10_000)) == pytest.approx(600)
    idle = make_session("i", tokens=tokens, cost=0.0)
    assert eta_seconds(idle, Budget(usd=1.0, tokens=10_000)) is None


def test_crossing_fires_once_per_threshold() -> None:
    live = {"a"}
    seen: dict[str, Level] = {}
    fired: list[tuple[str, Level]] = []
    for level in [Level.OK, Level.WARN, Level.WARN, Level.WARN, Level.OVER, Level.OVER]:
        seen, alerts = crossings(seen, {"a": level}, live)
        fired += alerts
    assert fired == [("a", Level.WARN), ("a", Level.OVER)]


def test_crossing_again_after_falling_back_fires_again() -> None:
    seen = {"a": Level.OVER}
    seen, alerts = crossings(seen, {"a": Level.OK}, {"a"})
    assert alerts == []
    seen, alerts = crossings(seen, {"a": Level.OVER}, {"a"})
    assert alerts == [("a", Level.OVER)]


def test_jump_straight_over_is_one_alert_and_idle_sessions_stay_quiet() -> None:
    seen, alerts = crossings({}, {"a": Level.OVER, "b": Level.OVER}, {"a"})
    assert alerts == [("a", Level.OVER)]
    # b was remembered while quiet: becoming live later while still over raises nothing
    _, alerts = crossings(seen, {"a": Level.OVER, "b": Level.OVER}, {"a", "b"})
    assert alerts == []
