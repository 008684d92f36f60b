"""Reconciliation: the same session seen in an agent's transcript and in proxy logs.

A transcript says what the agent thinks it used; the proxy log is what went through the
gateway (and was billed). When both show the same session, the difference is the point:
a positive delta means the proxy saw more than the transcript recorded (retries, calls the
transcript does not log, other tools on the same session id), a negative one that the
transcript counted something the proxy did not (double counting, or traffic that bypassed
the gateway).

Pairs are matched, in order:
1. **session id**: the proxy session id equals the transcript's, or contains it when the
   transcript id is long enough to be unique (Claude Code puts `session_<uuid>` inside
   the `user` metadata it sends);
2. **time window + model + cwd**: the proxy session's activity lies within the transcript's
   (widened by `window_s`), they share a model (provider prefixes and date suffixes
   ignored), and their cwds agree when both are known. Only an unambiguous match counts: a
   proxy session that fits several transcripts (a shared API key, say) is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import msgspec

from tokentop.model import LedgerSnapshot, SessionKey, SessionSnapshot, TokenCounts

PROXY_AGENTS = frozenset({"litellm"})
MIN_CONTAINED_ID = 16
"""Shorter transcript ids must match exactly: a short id could occur inside anything."""
_DATE_SUFFIX = re.compile(r"[-@]\d{8}$|-\d{4}-\d{2}-\d{2}$")


class Reconciliation(msgspec.Struct, frozen=True):
    """Both views of one session and their difference (`delta` = proxy - transcript)."""

    transcript: SessionKey
    proxy: SessionKey
    matched_by: str
    """"session_id" or "time_window"."""
    transcript_tokens: TokenCounts
    proxy_tokens: TokenCounts
    delta_tokens: TokenCounts
    transcript_cost_usd: float
    proxy_cost_usd: float
    delta_cost_usd: float
    transcript_responses: int
    proxy_responses: int
    unconfirmed_tokens: TokenCounts = TokenCounts()
    """Telemetry about a local session that no transcript response confirms (no matching
    request id): shown, never counted, never acted on."""
    unconfirmed_cost_usd: float = 0.0
    unconfirmed_responses: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "matched_by": self.matched_by,
            "transcript": str(self.transcript),
            "proxy": str(self.proxy),
            "transcript_tokens": self.transcript_tokens.as_dict(),
            "proxy_tokens": self.proxy_tokens.as_dict(),
            "delta_tokens": self.delta_tokens.as_dict(),
            "transcript_cost_usd": round(self.transcript_cost_usd, 6),
            "proxy_cost_usd": round(self.proxy_cost_usd, 6),
            "delta_cost_usd": round(self.delta_cost_usd, 6),
            "transcript_responses": self.transcript_responses,
            "proxy_responses": self.proxy_responses,
            "unconfirmed_tokens": self.unconfirmed_tokens.as_dict(),
            "unconfirmed_cost_usd": round(self.unconfirmed_cost_usd, 6),
            "unconfirmed_responses": self.unconfirmed_responses,
        }


PairSource = Callable[[], Iterable["Reconciliation"]]
PAIR_SOURCES: list[PairSource] = []
"""Other views of sessions that pair themselves (the telemetry receiver registers one)."""


def reconcile(snap: LedgerSnapshot, window_s: float = 120.0) -> tuple[Reconciliation, ...]:
    """Every transcript/proxy pair found in the snapshot, by session id first, then the
    pairs of the registered PAIR_SOURCES whose session is in the snapshot."""
    proxies = [s for s in snap.sessions if s.key.agent in PROXY_AGENTS]
    transcripts = [s for s in snap.sessions if s.key.agent not in PROXY_AGENTS]
    pairs: list[Reconciliation] = []
    used: set[SessionKey] = set()
    for proxy in proxies:
        found = [t for t in transcripts if same_id(t, proxy) and t.key not in used]
        if len(found) == 1:
            used.add(found[0].key)
            pairs.append(pair(found[0], proxy, "session_id"))
    paired = {p.proxy for p in pairs}
    for proxy in proxies:
        if proxy.key in paired:
            continue
        found = [t for t in transcripts if t.key not in used and overlaps(t, proxy, window_s)]
        if len(found) == 1:
            used.add(found[0].key)
            pairs.append(pair(found[0], proxy, "time_window"))
    keys = {s.key for s in snap.sessions}
    pairs += [p for source in list(PAIR_SOURCES) for p in source() if p.transcript in keys]
    return tuple(pairs)


def by_session(pairs: tuple[Reconciliation, ...]) -> dict[SessionKey, Reconciliation]:
    """Each pair under both of its sessions, for attaching to per-session output."""
    found: dict[SessionKey, Reconciliation] = {}
    for p in pairs:
        found[p.transcript] = found[p.proxy] = p
    return found


def same_id(transcript: SessionSnapshot, proxy: SessionSnapshot) -> bool:
    tid, pid = transcript.key.session_id, proxy.key.session_id
    return tid == pid or (len(tid) >= MIN_CONTAINED_ID and tid in pid)


def overlaps(transcript: SessionSnapshot, proxy: SessionSnapshot, window_s: float) -> bool:
    """Proxy activity within the transcript's (widened), a shared model, agreeing cwds."""
    if not (transcript.first_ts and proxy.first_ts):
        return False
    inside = (
        transcript.first_ts - window_s <= proxy.first_ts
        and proxy.last_ts <= transcript.last_ts + window_s
    )
    cwd_ok = not (transcript.cwd and proxy.cwd) or transcript.cwd == proxy.cwd
    shared = {model_family(m.model) for m in transcript.models} & {
        model_family(m.model) for m in proxy.models
    }
    return inside and cwd_ok and bool(shared - {""})


def model_family(model: str) -> str:
    """`anthropic/claude-sonnet-4-5-20250929` and `claude-sonnet-4-5` compare equal."""
    return _DATE_SUFFIX.sub("", model.rsplit("/", 1)[-1].lower())


def pair(transcript: SessionSnapshot, proxy: SessionSnapshot, how: str) -> Reconciliation:
    return Reconciliation(
        transcript=transcript.key,
        proxy=proxy.key,
        matched_by=how,
        transcript_tokens=transcript.tokens,
        proxy_tokens=proxy.tokens,
        delta_tokens=proxy.tokens - transcript.tokens,
        transcript_cost_usd=transcript.cost_usd,
        proxy_cost_usd=proxy.cost_usd,
        delta_cost_usd=proxy.cost_usd - transcript.cost_usd,
        transcript_responses=transcript.responses,
        proxy_responses=proxy.responses,
    )
