"""Render the simulated agent's calls as Codex rollout records, in their real shape.

Shapes follow shared/formats.md §2 and the shared samples: every line is
{timestamp, type, payload}; tool calls are response_item function_call / custom_tool_call
(apply_patch) with their outputs, and token usage comes as cumulative event_msg token_count
events, sometimes re-emitted identically, as Codex does.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from tokentop.demo.claude_records import Batch, Call, Record, Usage, now_iso, random_id

CODEX_VERSION = "0.46.0"
CONTEXT_WINDOW = 258_400
ENVIRONMENT_CONTEXT = """<environment_context>
  <cwd>{cwd}</cwd>
  <approval_policy>on-request</approval_policy>
  <sandbox_mode>workspace-write</sandbox_mode>
  <network_access>restricted</network_access>
  <shell>bash</shell>
</environment_context>"""


class CodexRecords:
    """Codex rollout lines for one session (sessions/YYYY/MM/DD/rollout-<ts>-<uuid>.jsonl)."""

    def __init__(
        self, rng: random.Random, cwd: str, model: str, session_id: str, limits: bool = True
    ) -> None:
        self.rng, self.cwd, self.model, self.session_id = rng, cwd, model, session_id
        self.total = {
            "input_tokens": 0,
            "cached_input_tokens": 0,
            "output_tokens": 0,
            "reasoning_output_tokens": 0,
            "total_tokens": 0,
        }
        self.limit_used = rng.uniform(2.0, 20.0)
        self.limits = limits
        """Whether its token counts carry the account's rate limits: one demo Codex session
        does, so the header shows one account's windows, not two that disagree."""
        self.resets_at = int(datetime.now(UTC).timestamp()) + 5 * 3600

    def opening(self) -> list[Batch]:
        """session_meta and the environment context, as Codex writes them at its first persist."""
        git = {
            "commit_hash": f"{self.rng.getrandbits(160):040x}",
            "branch": "main",
            "repository_url": "git@github.com:example/demo.git",
        }
        meta = {
            "id": self.session_id,
            "timestamp": now_iso(),
            "cwd": self.cwd,
            "originator": "codex_cli_rs",
            "cli_version": CODEX_VERSION,
            "instructions": None,
            "source": "cli",
            "model_provider": "openai",
            "git": git,
        }
        env = ENVIRONMENT_CONTEXT.format(cwd=self.cwd)
        return [([self._line("session_meta", meta), self._item(_user_message(env))], 0.5)]

    def prompt(self, text: str) -> list[Batch]:
        """A user turn: the message, the event, and the turn_context naming the model."""
        sandbox = {
            "mode": "workspace-write",
            "network_access": False,
            "exclude_tmpdir_env_var": False,
            "exclude_slash_tmp": False,
        }
        context = {
            "cwd": self.cwd,
            "approval_policy": "on-request",
            "sandbox_policy": sandbox,
            "model": self.model,
            "effort": "medium",
            "summary": "auto",
        }
        records = [
            self._item(_user_message(text)),
            self._event({"type": "user_message", "message": text, "images": []}),
            self._line("turn_context", context),
        ]
        return [(records, 1.0)]

    def call(self, call: Call, usage: Usage) -> list[Batch]:
        """Reasoning, the tool call and its token_count; later the tool's output."""
        call_id = random_id(self.rng, "call_", 24)
        records = [*self._reasoning(call.thought), self._item(self._tool_call(call, call_id))]
        records += self._token_counts(usage)
        result = {"type": "function_call_output", "call_id": call_id, "output": _shell_output(call)}
        if call.tool in ("Edit", "Write"):
            result = {
                "type": "custom_tool_call_output",
                "call_id": call_id,
                "output": _patch_output(call, self.cwd),
            }
        return [(records, 0.8), ([self._item(result)], 1.2)]

    def reply(self, text: str, usage: Usage) -> list[Batch]:
        content = [{"type": "output_text", "text": text}]
        records = [
            self._event({"type": "agent_message", "message": text}),
            self._item({"type": "message", "role": "assistant", "content": content}),
            *self._token_counts(usage),
        ]
        return [(records, 1.0)]

    def _tool_call(self, call: Call, call_id: str) -> Record:
        if call.tool in ("Edit", "Write"):
            return {
                "type": "custom_tool_call",
                "status": "completed",
                "call_id": call_id,
                "name": "apply_patch",
                "input": _patch(call, self.cwd),
            }
        args = {
            "command": ["bash", "-lc", _shell_command(call)],
            "workdir": self.cwd,
            "timeout_ms": 120_000,
        }
        return {
            "type": "function_call",
            "name": "shell",
            "arguments": _compact(args),
            "call_id": call_id,
        }

    def _reasoning(self, thought: str) -> list[Record]:
        summary = f"**{thought.rstrip('.')}**"
        encrypted = random_id(self.rng, "gAAAAAB", 120)
        return [
            self._event({"type": "agent_reasoning", "text": summary}),
            self._item(
                {
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": summary}],
                    "content": None,
                    "encrypted_content": encrypted,
                }
            ),
        ]

    def _token_counts(self, usage: Usage) -> list[Record]:
        """Cumulative totals plus the last call; sometimes re-emitted identically, as Codex does."""
        last = {
            "input_tokens": usage.context + usage.fresh + usage.uncached,
            "cached_input_tokens": usage.context,
            "output_tokens": usage.output + usage.reasoning,
            "reasoning_output_tokens": usage.reasoning,
        }
        last["total_tokens"] = last["input_tokens"] + last["output_tokens"]
        self.total = {key: self.total[key] + value for key, value in last.items()}
        self.limit_used = min(100.0, self.limit_used + 0.1)
        limits = {
            "primary": {
                "used_percent": round(self.limit_used, 1),
                "window_minutes": 300,
                "resets_at": self.resets_at,
            },
            "secondary": {
                "used_percent": round(self.limit_used / 4, 1),
                "window_minutes": 10080,
                "resets_at": self.resets_at + 6 * 86400,
            },
        }
        info = {
            "total_token_usage": dict(self.total),
            "last_token_usage": last,
            "model_context_window": CONTEXT_WINDOW,
        }
        payload = {"type": "token_count", "info": info, "rate_limits": limits}
        event = self._event(payload if self.limits else {"type": "token_count", "info": info})
        return [event, event] if self.rng.random() < 0.15 else [event]

    def _item(self, payload: Record) -> Record:
        return self._line("response_item", payload)

    def _event(self, payload: Record) -> Record:
        return self._line("event_msg", payload)

    def _line(self, kind: str, payload: Record) -> Record:
        return {"timestamp": now_iso(), "type": kind, "payload": payload}


def _user_message(text: str) -> Record:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _shell_command(call: Call) -> str:
    if call.tool == "Read":
        return f"sed -n '1,200p' {call.target}"
    if call.tool == "Grep":
        return f"rg -l {json.dumps(call.target)}"
    return call.target


def _shell_output(call: Call) -> str:
    exit_code, seconds = (1, 0.8) if call.is_error else (0, 0.1)
    return _compact(
        {"output": call.output, "metadata": {"exit_code": exit_code, "duration_seconds": seconds}}
    )


def _patch_output(call: Call, cwd: str) -> str:
    letter = "A" if call.tool == "Write" else "M"
    text = f"Success. Updated the following files:\n{letter} {_relative(call.target, cwd)}\n"
    return _compact({"output": text, "metadata": {"exit_code": 0, "duration_seconds": 0.0}})


def _relative(path: str, cwd: str) -> str:
    return path.removeprefix(cwd.rstrip("/") + "/")


def _patch(call: Call, cwd: str) -> str:
    path = _relative(call.target, cwd)
    if call.tool == "Write":
        body = "".join(f"+{line}\n" for line in call.new.splitlines())
        return f"*** Begin Patch\n*** Add File: {path}\n{body}*** End Patch"
    return f"*** Begin Patch\n*** Update File: {path}\n@@\n-{call.old}\n+{call.new}\n*** End Patch"


def _compact(value: Record) -> str:
    """JSON as serde_json writes it (no spaces), for strings nested inside records."""
    return json.dumps(value, separators=(",", ":"))
