"""The README's claims that a test can hold it to: flags, config, documented settings."""

from __future__ import annotations

import re
from pathlib import Path

from tokentop.config import Config, parse_config
from tokentop.ui.views.rows import FLAG_LEGEND

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_the_help_legend_has_every_flag_the_readme_lists_and_no_other() -> None:
    listed = README[README.index("and flags (") : README.index("`enter` opens the details")]
    documented = set(re.findall(r"`(\S)`\s", listed))
    assert documented == {flag for flag, _ in FLAG_LEGEND}
    assert "~" not in documented and "≈" in documented


def test_the_readme_config_example_is_a_valid_config() -> None:
    block = README.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_config(block, "README.md")
    assert config.hide_after_h == 24 and config.history.min_spend_usd == 0.01


def test_the_readme_documents_the_settings_and_labels_users_meet() -> None:
    for term in ("hide_after_h", "**trivial**", "costUSD", "min_spend_usd", "--no-scan"):
        assert term in README, term
    assert Config().hide_after_h == 24  # the default the README gives
