"""The HOST column appears once a session comes from another machine (telemetry), and the
filter matches host names."""

from __future__ import annotations

import socket

from test_app import SIZE, Harness, projects, settle, with_
from ui_fakes import make_session, sample_sessions


async def test_host_column_appears_with_a_remote_session_and_the_filter_matches_it() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "HOST" not in h.table.header.plain
        remote = with_(make_session("r1", cwd="/srv/batch-jobs"), host="ci-runner-7")
        h.publish((*sample_sessions(), remote))
        await settle(pilot)
        assert "HOST" in h.table.header.plain
        hosts = dict(zip(projects(h), h.column("host"), strict=True))
        assert hosts["batch-jobs"] == "ci-runner-7"
        assert hosts["webshop"] == socket.gethostname()
        assert "ci-runner-7" in h.table.render_line(1 + projects(h).index("batch-jobs")).text
        await pilot.press("slash", *"runner-7")
        await pilot.pause()
        assert projects(h) == ["batch-jobs"]
        await pilot.press("escape")
        h.publish(sample_sessions())
        await settle(pilot)
        assert "HOST" not in h.table.header.plain
