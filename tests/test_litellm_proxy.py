"""The proxy callback, unit-tested without LiteLLM, then a real LiteLLM proxy end to end.

End to end: a small OpenAI-compatible upstream (stdlib http.server) and `litellm --config`
both listen on 127.0.0.1 only. The proxy loads `tokentop.integrations.litellm_callback` from this
checkout and appends payloads to a log that a running Engine tails; the session's tokens
must equal the usage the upstream returned.

LiteLLM[proxy] pins `rich<14`, which would downgrade the rich that Textual renders with (and
break the UI snapshots), so it is not a test extra: the fixture installs it once into its
own venv under the user cache dir, ~/.cache/tokentop/test-litellm-*/ (about 700 MB and 2
minutes; reused afterwards, never left in /tmp), or uses
`$TOKENTOP_PROXY_PYTHON` (a Python that has `litellm[proxy]`). The test skips with the pip
error when that install is impossible, except under CI, where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openai_upstream import reported, serving
from private_venv import private_python, venv_dir
from tokentop.dirs import user_dir
from tokentop.engine.engine import Engine
from tokentop.integrations import litellm_callback
from tokentop.pricing import PriceTable
from tokentop.sources.litellm import LiteLLMSource

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
LITELLM_SPEC = os.environ.get("TOKENTOP_LITELLM_SPEC", "litellm[proxy]==1.106.2")
START_TIMEOUT_S = 120
LOG_TIMEOUT_S = 60
MASTER_KEY = "sk-" + os.urandom(24).hex()

# -- the callback without LiteLLM ------------------------------------------------------------


def kwargs_for(call_id: str, status: str = "success", **params: Any) -> dict[str, Any]:
    payload = {"id": call_id, "status": status, "model": "gpt-4o", "prompt_tokens": 3}
    return {"standard_logging_object": payload, "litellm_params": params}


def test_writer_appends_one_line_per_call_and_drops_repeats(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "proxy.jsonl"
    logger = litellm_callback.TokentopLogger(litellm_callback.PayloadWriter(str(log)))
    asyncio.run(logger.async_log_success_event(kwargs_for("a"), None, None, None))
    logger.log_success_event(kwargs_for("a"), None, None, None)  # the sync hook's copy
    asyncio.run(logger.async_log_failure_event(kwargs_for("b", "failure"), None, None, None))
    logger.log_success_event({"no": "payload"}, None, None, None)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in lines] == [("a", "success"), ("b", "failure")]
    assert all(r["tokentop_session_id"] == "" for r in lines)


def test_caller_session_id_and_generated_ones() -> None:
    session = litellm_callback.caller_session
    assert session(kwargs_for("a", litellm_session_id="s1")) == "s1"
    assert session(kwargs_for("a", metadata={"session_id": "s2"})) == "s2"
    generated = {"session_id": "uuid", "litellm_session_id_generated": True}
    assert session(kwargs_for("a", litellm_session_id="uuid", metadata=generated)) == ""


def test_log_path_from_env_and_write_errors_never_raise(tmp_path: Path) -> None:
    assert litellm_callback.log_path({"TOKENTOP_PROXY_LOG": "~/x.jsonl"}).endswith("/x.jsonl")
    assert litellm_callback.log_path({}).endswith(".tokentop/litellm-proxy.jsonl")
    (tmp_path / "dir").mkdir()
    writer = litellm_callback.PayloadWriter(str(tmp_path / "dir"))  # a directory: unwritable
    assert not writer.write(kwargs_for("a"))
    assert "cannot write the proxy log" in writer.error


def test_callback_imports_without_litellm(tmp_path: Path) -> None:
    """The module must load in a Python that lacks LiteLLM (its base is then `object`)."""
    code = (
        "import sys; sys.modules['litellm'] = None\n"
        "from tokentop.integrations import litellm_callback as c\n"
        "assert type(c.proxy_handler_instance).__mro__[1] is object\n"
        "assert 'textual' not in sys.modules and 'msgspec' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_SRC)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# -- a real proxy ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proxy_venv() -> Path:
    """Where the proxy's venv lives: the user cache dir (XDG_CACHE_HOME), one per LiteLLM
    version and Python, so the 700 MB are neither in /tmp nor rebuilt on every run."""
    return venv_dir("litellm", [LITELLM_SPEC])


def test_the_proxy_venv_lives_in_the_user_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    venv = proxy_venv()
    assert venv.parent == user_dir("cache") and venv.name.startswith("test-litellm-")
    if sys.platform.startswith("linux"):
        assert venv.is_relative_to("/somewhere/cache/tokentop")
    assert not venv.is_relative_to(tempfile.gettempdir())


def proxy_python() -> Path:
    """A Python with litellm[proxy]: `$TOKENTOP_PROXY_PYTHON`, else a cached private venv."""
    return private_python("litellm", [LITELLM_SPEC], "TOKENTOP_PROXY_PYTHON")


def loopback_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(NO_PROXY="127.0.0.1,localhost", LITELLM_LOCAL_MODEL_COST_MAP="True", **extra)
    return env


@pytest.fixture
def upstream() -> Iterator[int]:
    with serving() as port:
        yield port


@pytest.fixture
def proxy(tmp_path: Path, upstream: int) -> Iterator[tuple[int, Path]]:
    """`litellm --config` on 127.0.0.1 with our callback; its process group is killed after."""
    python = proxy_python()
    port = free_port()
    log = tmp_path / "proxy.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: test-model\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{upstream}/v1\n"
        "      api_key: sk-test\n"
        "litellm_settings:\n"
        "  callbacks: tokentop.integrations.litellm_callback.proxy_handler_instance\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )
    env = loopback_env({"PYTHONPATH": str(REPO_SRC), "TOKENTOP_PROXY_LOG": str(log)})
    cmd = [str(python), "-m", "litellm.proxy.proxy_cli", "--config", str(config)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    out = open(tmp_path / "proxy.out", "wb")  # noqa: SIM115 - closed in the finalizer
    child = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_ready(port, child, tmp_path / "proxy.out")
        yield port, log
    finally:
        stop_group(child)
        out.close()


def wait_ready(port: int, child: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pytest.fail(f"proxy exited ({child.returncode}):\n{output.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"proxy not ready in {START_TIMEOUT_S}s:\n{output.read_text()[-3000:]}")


def stop_group(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=15)
    except ProcessLookupError:
        pass


def chat(port: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps({"model": "test-model", **body}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {MASTER_KEY}",
            **(headers or {}),
        },
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    with opener.open(request, timeout=60) as response:
        return json.loads(response.read())


def test_real_proxy_log_tailed_by_the_engine(proxy: tuple[int, Path]) -> None:
    port, log = proxy
    engine = Engine([LiteLLMSource([log])], PriceTable.default().cost, workers=1, sweep_s=0.5)
    engine.start()
    try:
        hello = [{"role": "user", "content": "hello"}]
        chat(port, {"messages": hello, "litellm_session_id": "sess-A"})  # upstream call 1
        chat(port, {"messages": hello, "metadata": {"session_id": "sess-A"}})  # call 2
        chat(port, {"messages": hello}, {"x-litellm-session-id": "sess-A"})  # call 3
        chat(port, {"messages": hello})  # call 4: no session id
        sessions = wait_for_sessions(engine, log, responses=4)
    finally:
        engine.stop()
    assert sessions["sess-A"].tokens == reported([1, 2, 3])
    assert sessions["sess-A"].responses == 3
    others = [s for sid, s in sessions.items() if sid != "sess-A"]
    assert [s.tokens for s in others] == [reported([4])]
    assert {m.model for s in sessions.values() for m in s.models} == {"gpt-4o-mini"}


def wait_for_sessions(engine: Engine, log: Path, responses: int) -> dict[str, Any]:
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while time.monotonic() < deadline:
        snap = engine.snapshot()
        if sum(s.responses for s in snap.sessions) >= responses:
            return {s.key.session_id: s for s in snap.sessions}
        time.sleep(0.2)
    text = log.read_text() if log.exists() else "(no log written)"
    pytest.fail(
        f"engine saw {engine.snapshot().sessions} after {LOG_TIMEOUT_S}s; log:\n{text[-3000:]}"
    )
