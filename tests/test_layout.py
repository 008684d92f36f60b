"""The session table's columns at each width, and names that stay readable in them."""

from __future__ import annotations

import pytest

from tokentop.history.summary import base_name, project_name
from tokentop.ui.views.rows import COLUMNS, fit, layout_for, short_model
from tokentop.ui.views.rows import project_name as row_project


@pytest.mark.parametrize("width", [80, 78, 90, 100])
@pytest.mark.parametrize("with_host", [False, True])
def test_narrow_terminals_keep_budget_eta_and_flags(width: int, with_host: bool) -> None:
    layout = layout_for(width, with_host)
    keys = [c.key for c in layout.columns]
    assert layout.width <= width
    assert {"budget", "eta", "flags", "burn", "cost", "tokens", "project", "last"} <= set(keys)
    assert "spark" not in keys  # the least useful goes first


def test_host_goes_before_budget_eta_and_flags_and_stays_when_there_is_room() -> None:
    assert "host" not in [c.key for c in layout_for(80, with_host=True).columns]
    assert "host" in [c.key for c in layout_for(100, with_host=True).columns]
    assert "host" in [c.key for c in layout_for(140, with_host=True).columns]


def test_at_120_columns_model_and_the_sparkline_fit() -> None:
    layout = layout_for(120)
    keys = [c.key for c in layout.columns]
    assert layout.width <= 120
    assert [c.key for c in COLUMNS] == keys  # every column, LAST 10m and MODEL too
    assert layout.gap == 1


def test_the_full_layout_when_it_fits_and_models_before_project() -> None:
    assert [c.key for c in layout_for(200).columns] == [c.key for c in COLUMNS]
    assert layout_for(200).gap == 2
    assert "models" in [c.key for c in layout_for(120).columns]
    assert "models" not in [c.key for c in layout_for(100).columns]
    assert next(c.width for c in layout_for(80).columns if c.key == "project") >= 10


def test_agent_names_are_never_cut() -> None:
    agent = next(c for c in layout_for(80).columns if c.key == "agent")
    for name in ("opencode", "openclaw", "litellm", "gemini", "claude", "codex"):
        assert fit(name, agent.width, "agent") == name


def test_narrow_cells_keep_what_matters() -> None:
    assert fit("██▌    42%", 6, "budget") == "42%"
    assert fit("3.6M/m $184.01/h", 7, "burn") == "3.6M/m"
    assert fit("payments-api-service", 10, "project") == "payments-…"


def test_model_names_keep_their_vendor_unless_the_family_says_it() -> None:
    assert short_model("claude-sonnet-4-5-20250929") == "sonnet-4-5"
    assert short_model("claude-3-5-sonnet-20241022") == "claude-3-5-sonnet"
    assert short_model("gpt-5-codex") == "gpt-5-codex"


def test_a_windows_cwd_is_a_short_project_name() -> None:
    assert row_project(r"C:\Users\dev\src\webshop") == "webshop"
    assert project_name("C:\\Users\\dev\\src\\api\\", None) == "api"
    assert row_project("/home/dev/src/webshop/") == "webshop"
    assert len(base_name("C:\\" + "x" * 200)) == 40
    assert row_project("") == "?"


@pytest.mark.parametrize("width", [80, 120, 160])
def test_every_sort_shows_its_marker_on_its_own_column(width: int) -> None:
    from tokentop.ui.views.rows import SORTS, header_label

    layout = layout_for(width)
    for sort in SORTS:
        marked = [c.key for c in layout.columns if "▼" in header_label(c, sort, True)]
        assert marked == [c.key for c in layout.columns if c.sort == sort]
        assert len(marked) == 1, (sort, width)
    last = next(c for c in layout.columns if c.key == "last")
    assert header_label(last, "recent", True) == "LAST▼"
    tokens = next(c for c in layout.columns if c.key == "tokens")
    assert header_label(tokens, "tokens", False) == "TOKEN▲"


WIDE_NAMES = (
    "/tmp/项目-日本語-프로젝트-wide",
    "/tmp/emoji-🚀-proj",
    "/tmp/very-long-project-name-v2",
)


def test_wide_characters_keep_the_apps_columns_aligned() -> None:
    from rich.cells import cell_len

    from tokentop.policy.watchdog import judge_once
    from tokentop.ui.views.rows import row_view
    from tokentop.ui.widgets.session_table import row_text
    from ui_fakes import ledger, make_session

    judged = judge_once(ledger([make_session(f"s{i}", cwd=c) for i, c in enumerate(WIDE_NAMES)]))
    for width in (80, 120, 160):
        layout = layout_for(width)
        lines = [
            row_text(row_view(j.session, j.use, j.state, False), layout) for j in judged.sessions
        ]
        assert {cell_len(line.plain) for line in lines} == {layout.width}
        assert any("…" in line.plain for line in lines)


def test_wide_characters_keep_the_sessions_table_aligned() -> None:
    from tokentop.policy.watchdog import judge_once
    from tokentop.render.records import text_table
    from tokentop.render.text import cells
    from ui_fakes import ledger, make_session

    sessions = [make_session(f"s{i}", cwd=c) for i, c in enumerate(WIDE_NAMES)]
    lines = text_table(judge_once(ledger(sessions))).splitlines()
    state = [
        cells(line[: line.index(s)])
        for line in lines
        for s in ("STATE", "ended", "live", "idle")
        if s in line
    ]
    assert len(set(state)) == 1 and len(state) == 4
    assert "…" in text_table(judge_once(ledger(sessions)))


def test_the_sessions_table_ends_with_what_its_rows_add_up_to() -> None:
    from tokentop.policy.watchdog import judge_once
    from tokentop.render.records import text_table
    from ui_fakes import ledger, make_session

    sessions = [make_session(f"s{i}", cost=c) for i, c in enumerate((1.25, 2.5, 0.25))]
    last = text_table(judge_once(ledger(sessions))).splitlines()[-1].split()
    assert last[:3] == ["Σ", "3", "sessions"] and "$4.00" in last
    one = text_table(judge_once(ledger(sessions[:1]))).splitlines()
    assert len(one) == 2  # one session: no sum to show
