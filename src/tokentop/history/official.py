"""The vendors' own usage windows as tokentop last heard them, kept for the app.

Claude Code hands its status-line command the account's windows (`rate_limits.five_hour` and
`.seven_day`, each `used_percentage` 0-100 and `resets_at` in Unix seconds, for Pro and Max
subscribers after a session's first response; see commands/statusline.py for where that was
checked). `tokentop statusline` writes them here, with when it heard them, and a few recent
(time, cost) samples per session for its burn figure. The file is small, written atomically
and read by the app's window watch (history/windows.py); it is owner-only.

Loaded with a size cap and decoded strictly: a damaged file reads as empty, never raises.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from tokentop.dirs import user_dir
from tokentop.files import read_bounded, write_atomic
from tokentop.model import RateLimits

MAX_STATE_BYTES = 256 << 10
MAX_SESSIONS = 64
"""Sessions whose samples are kept (the least recently seen go first)."""
SAMPLE_WINDOW_S = 600.0
"""Samples older than this are dropped: burn is the recent pace."""
MAX_SAMPLES = 120


class Sample(msgspec.Struct, array_like=True, gc=False):
    ts: float
    cost_usd: float


class CachedBudget(msgspec.Struct, frozen=True):
    """The session's budget as the config and the store said when `key` was current."""

    key: str
    """The config's and the store's mtimes and the session's cwd: any change misses."""
    usd: float | None = None
    tokens: int | None = None


class Track(msgspec.Struct):
    """What the status line keeps of one session between its calls."""

    samples: list[Sample] = []
    budget: CachedBudget | None = None


class StatusState(msgspec.Struct):
    claude: RateLimits | None = None
    """The newest windows Claude Code reported (any session: they are the account's)."""
    claude_session: str = ""
    sessions: dict[str, Track] = {}


_DECODER = msgspec.json.Decoder(StatusState)


def state_path() -> Path:
    return user_dir("state") / "statusline.json"


def read_state(path: Path | None = None) -> StatusState:
    """The state, or an empty one when the file is missing, not a regular file, too big or
    not ours."""
    got = read_bounded(path or state_path(), MAX_STATE_BYTES)
    if got is None or got[1] > MAX_STATE_BYTES:
        return StatusState()
    try:
        return _DECODER.decode(got[0])
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return StatusState()


def write_state(state: StatusState, path: Path | None = None) -> None:
    target = path or state_path()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(target, msgspec.json.encode(state))


def note_sample(track: Track, now: float, cost: float) -> None:
    """Keep the session's recent (time, cost): the last SAMPLE_WINDOW_S, at most MAX_SAMPLES."""
    kept = [s for s in track.samples if now - SAMPLE_WINDOW_S <= s.ts <= now]
    if not kept or kept[-1].cost_usd != cost or now - kept[-1].ts >= 30:
        kept.append(Sample(now, cost))
    track.samples = kept[-MAX_SAMPLES:]


def burn_usd_per_hour(track: Track, now: float, span_s: float = 300.0) -> float | None:
    """Dollars per hour over the last `span_s` of samples; None until two samples 10 s
    apart exist (a first call knows no pace)."""
    recent = [s for s in track.samples if now - s.ts <= span_s]
    if len(recent) < 2 or recent[-1].ts - recent[0].ts < 10:
        return None
    spent = max(recent[-1].cost_usd - recent[0].cost_usd, 0.0)
    return spent / (recent[-1].ts - recent[0].ts) * 3600


def forget_old_sessions(state: StatusState) -> None:
    if len(state.sessions) <= MAX_SESSIONS:
        return

    def newest(item: tuple[str, Track]) -> float:
        return item[1].samples[-1].ts if item[1].samples else 0.0

    kept = sorted(state.sessions.items(), key=newest)[-MAX_SESSIONS:]
    state.sessions = dict(kept)
