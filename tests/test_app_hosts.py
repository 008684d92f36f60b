"""The HOST column appears once a session comes from another machine (telemetry), and the
filter matches host names."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import msgspec
import psutil

from test_app import SIZE, Harness, projects, settle, with_
from tokentop.processes.control import ProcessController
from tokentop.processes.mapper import RecordedMapper, SessionMapper
from tokentop.processes.registry import Registry, SessionRecord
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


def test_a_remote_session_maps_to_no_local_process(tmp_path: Path) -> None:
    """Even when a local process is recorded under the same session key, a session that
    runs on another machine maps to nothing: no key or policy can signal a local process."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        record = SessionRecord(
            "claude", "r1", child.pid, psutil.Process(child.pid).create_time(), "launched",
            time.time(), cwd="/srv/batch-jobs",
        )  # fmt: skip
        registry = tmp_path / "sessions.jsonl"
        registry.write_bytes(msgspec.json.encode(record) + b"\n")
        controller = ProcessController()
        mapper = RecordedMapper(Registry(registry), controller, SessionMapper())
        local = make_session("r1", cwd="/srv/batch-jobs")
        ref = mapper.processes_for(local)
        assert ref is not None and ref.pid == child.pid
        assert mapper.processes_for(with_(local, host="ci-runner-7")) is None
    finally:
        child.kill()
        child.wait()
