"""A LiteLLM proxy callback that appends each call's StandardLoggingPayload to a JSONL file.

LiteLLM has no built-in file logger for per-call usage. Put this in the proxy's config.yaml:

    litellm_settings:
      callbacks: tokentop.integrations.litellm_callback.proxy_handler_instance

and set `TOKENTOP_PROXY_LOG=/path/to/litellm.jsonl` in the proxy's environment (default
`~/.tokentop/litellm-proxy.jsonl`). Then `tokentop --proxy-log /path/to/litellm.jsonl`.
See docs/proxy.md.

This module imports only the standard library and LiteLLM's `CustomLogger` base (and works
without LiteLLM, as a plain class, so it can be tested and copied on its own). It adds one
field to each payload: `tokentop_session_id`, the session id the caller gave (empty when
none was given, so a reader knows LiteLLM's `trace_id` was invented for that one call).
A write failure is reported once on stderr and never raised into the proxy.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

ENV_VAR = "TOKENTOP_PROXY_LOG"
DEFAULT_PATH = "~/.tokentop/litellm-proxy.jsonl"
SESSION_FIELD = "tokentop_session_id"
_RECENT = 4096
"""Call ids remembered to drop a second copy (LiteLLM may run both sync and async hooks)."""

if TYPE_CHECKING:
    _Base = object
else:
    try:
        from litellm.integrations.custom_logger import CustomLogger as _Base
    except ImportError:  # LiteLLM absent: still importable, e.g. for tests
        _Base = object


def log_path(env: Mapping[str, str] | None = None) -> str:
    """Where payloads go: `$TOKENTOP_PROXY_LOG`, else the default, with `~` expanded."""
    env = os.environ if env is None else env
    return os.path.expanduser(env.get(ENV_VAR) or DEFAULT_PATH)


def caller_session(kwargs: Mapping[str, Any]) -> str:
    """The session id the caller sent (`litellm_session_id`, `metadata.session_id`, the
    `x-litellm-session-id` header), or "" if none or if the proxy generated one."""
    params = kwargs.get("litellm_params") or {}
    meta = params.get("metadata") or {}
    if meta.get("litellm_session_id_generated"):
        return ""
    payload = kwargs.get("standard_logging_object") or {}
    for found in (
        params.get("litellm_session_id"),
        meta.get("session_id"),
        payload.get("session_id"),
    ):
        if isinstance(found, str) and found:
            return found
    return ""


def payload_line(kwargs: Mapping[str, Any]) -> bytes | None:
    """One JSON line for a callback's kwargs, or None if it carries no payload."""
    payload = kwargs.get("standard_logging_object")
    if not isinstance(payload, Mapping):
        return None
    record = {**payload, SESSION_FIELD: caller_session(kwargs)}
    text = json.dumps(record, default=str, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "replace") + b"\n"


class PayloadWriter:
    """Appends lines with O_APPEND and one write each, so several proxy workers writing the
    same file never interleave a line; skips a call id already written."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.error = ""
        self._lock = threading.Lock()
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()

    def write(self, kwargs: Mapping[str, Any]) -> bool:
        """Append the payload in `kwargs`; True if a line was written. Never raises."""
        try:
            line = payload_line(kwargs)
            if line is None or self._seen(kwargs):
                return False
            with self._lock:
                self._append(self.path or log_path(), line)
            return True
        except Exception as exc:  # the proxy must keep serving whatever happens here
            self._report(f"tokentop: cannot write the proxy log: {exc}")
            return False

    def _seen(self, kwargs: Mapping[str, Any]) -> bool:
        payload = kwargs.get("standard_logging_object") or {}
        key = f"{payload.get('id')}/{payload.get('status')}"
        with self._lock:
            if key in self._recent:
                return True
            self._recent[key] = None
            if len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        return False

    @staticmethod
    def _append(path: str, line: bytes) -> None:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def _report(self, message: str) -> None:
        if message != self.error:
            print(message, file=sys.stderr)
        self.error = message


class TokentopLogger(_Base):
    """The callback: every success and failure hook writes the call's payload. (LiteLLM
    passes the hook arguments by keyword: the parameter names are part of its API.)"""

    def __init__(self, writer: PayloadWriter | None = None) -> None:
        super().__init__()
        self.writer = writer or PayloadWriter()

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.writer.write(kwargs)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.writer.write(kwargs)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.writer.write(kwargs)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.writer.write(kwargs)


proxy_handler_instance = TokentopLogger()
"""The name to put under `litellm_settings.callbacks` in the proxy's config.yaml."""
