"""Typed user configuration, loaded from TOML; a bad file becomes one clear ConfigError line.

Sections whose keys are user-chosen names (project budgets, agent budgets, prices, keys,
roots) are converted entry by entry, because msgspec reports a dict key only as `[...]`
and the message must name the key the user wrote.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from tokentop import agents
from tokentop.model import path_tail
from tokentop.policy.settings import Policy, policy_problem

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Percent = Annotated[float, msgspec.Meta(gt=0, le=1000)]
TokenLimit = Annotated[int, msgspec.Meta(ge=0, le=10**15)]
Dollars = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
"""A budget in dollars: finite (TOML allows inf) and at most a billion, as quantities.py."""
Activity = Literal["live", "idle", "ended"]

KEY_ACTIONS: Final[dict[str, str]] = {
    "filter": "Filter sessions by text",
    "sort-next": "Sort by the next column",
    "sort-prev": "Sort by the previous column",
    "sort-reverse": "Reverse the sort order",
    "open-details": "Open the selected session's details",
    "tag": "Tag or untag the session (actions apply to tagged rows)",
    "pause-resume": "Pause or resume the session's process",
    "terminate": "Terminate the session's process (SIGTERM, then SIGKILL)",
    "kill": "Kill the session's process (SIGKILL)",
    "budget": "Edit the selected session's budget",
    "faster": "Refresh faster",
    "slower": "Refresh slower",
    "show-errors": "Show files with unparseable lines",
    "history": "Show recorded sessions (history)",
    "show-all": "Show sessions older than hide_after_h too (again: hide them)",
    "help": "Show keys and columns",
    "quit": "Quit",
    "back": "Back / clear filter and tags",
}
"""Binding ids that `[keys]` may rebind, with what each does (the UI binds exactly these)."""

DEFAULT_KEYS: Final[dict[str, str]] = {
    "filter": "/,f4",
    "sort-next": "s,>,f6",
    "sort-prev": "<",
    "sort-reverse": "I",
    "open-details": "enter",
    "tag": "space",
    "pause-resume": "p",
    "terminate": "t",
    "kill": "k,f9",
    "budget": "b",
    "faster": "+",
    "slower": "-",
    "show-errors": "e",
    "history": "h",
    "show-all": "a",
    "help": "?,f1",
    "quit": "q,f10",
    "back": "escape",
}
"""The keys of each binding id unless `[keys]` rebinds it; here so that a clash is a config
error (ui/keys.py builds its bindings from these)."""


ROOT_KINDS: Final = agents.ROOT_KINDS
"""`[roots]` keys: agent directories (one per row of `tokentop.agents`), then LiteLLM proxy
logs and generic JSONL files."""


class Budget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A session budget; a field left out inherits from the less specific level."""

    usd: Dollars | None = None
    """Dollars per session."""
    tokens: TokenLimit | None = None
    """Tokens per session, all kinds counted (input, output, cache read/write, reasoning)."""

    def over(self, base: Budget) -> Budget:
        """This budget with unset fields taken from `base`."""
        return Budget(
            self.usd if self.usd is not None else base.usd,
            self.tokens if self.tokens is not None else base.tokens,
        )

    @property
    def is_set(self) -> bool:
        return self.usd is not None or self.tokens is not None

    def removed_by(self, new: Budget) -> list[str]:
        """The limits ("usd", "tokens") this budget has and `new` lacks: an edit that drops
        one is asked about first (a field emptied by accident must not lift a limit)."""
        return [
            k for k in ("usd", "tokens") if getattr(self, k) is not None and getattr(new, k) is None
        ]


class SessionBudget(msgspec.Struct, frozen=True):
    """A budget set for one session, by whom and when: `b` in an app ("app"), `tokentop run
    --budget` ("run"). Kept in the store, so every tokentop process honours the same one;
    it beats the config's rules, and of two the later one wins."""

    budget: Budget
    origin: str = "app"
    set_at: float = 0.0


class Budgets(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[budgets]`: the default per-session budget and its overrides."""

    usd: Dollars | None = None
    """Default dollar budget per session."""
    tokens: TokenLimit | None = None
    """Default token budget per session."""
    projects: dict[str, Budget] = {}
    """`[budgets.projects."NAME"]`: by cwd or its basename; globs allowed; beats agents."""
    agents: dict[str, Budget] = {}
    """`[budgets.agents.AGENT]`: by agent name ("claude", "codex", ...)."""

    @property
    def default(self) -> Budget:
        return Budget(self.usd, self.tokens)


class Alerts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[alerts]`: budget thresholds, in percent of the budget."""

    warn_pct: Percent = 80.0
    """Warn (yellow, one notification) when a session reaches this share of its budget."""
    over_pct: Percent = 100.0
    """Over budget (red, one notification) from this share on."""
    bell: bool = True
    """Ring the terminal bell with each alert."""


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[prices."MODEL"]`: USD per million tokens; a field left out keeps the bundled price."""

    input: NonNegative | None = None
    output: NonNegative | None = None
    cache_read: NonNegative | None = None
    cache_write_5m: NonNegative | None = None
    cache_write_1h: NonNegative | None = None


class History(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[history]`: when a session's summary is recorded and how its git output is judged."""

    idle_end_s: Positive = 1800.0
    """A session quiet for this long has ended; its summary is recorded."""
    active_gap_s: Positive = 300.0
    """Quiet gaps shorter than this count as active time (the agent was thinking or waiting)."""
    min_spend_usd: NonNegative = 0.01
    """Sessions that spent less are labelled "trivial" rather than "theater"."""
    commit_slack_s: NonNegative = 300.0
    """Commits authored up to this long after a session's last activity still count for it."""
    my_commits_only: bool = True
    """Count only commits whose author email is the repository's `user.email`."""
    git: bool = True
    """Ask git what a session produced; false never runs git in any repository."""
    git_timeout_s: Positive = 10.0
    """Seconds before a git command is abandoned (the summary then says so)."""
    top_consumers: Annotated[int, msgspec.Meta(ge=0, le=100)] = 8
    """How many tools and files to list as the top token consumers."""


class Jobs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[jobs]`: recurring jobs (one task run again and again), judged week over week."""

    regress_pct: Positive = 30.0
    """A job whose median cost per run over the last 7 days is more than this % above the 7
    days before is flagged, with the first run where it changed."""
    min_runs: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 2
    """Sessions sharing a cwd and first prompt form a job from this many runs on (a job named
    by OpenClaw's cron or `tokentop run --job` is one from its first run)."""


class Routing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[routing]`: when a session is flagged as premium model for little output."""

    premium_ratio: Positive = 20.0
    """A model is premium for a session when its tokens cost at least this many times what
    they would on the cheapest model of the same vendor in the price table."""
    low_output_per_response: NonNegative = 300.0
    """Output tokens per response below which a session produced little."""
    reads_share: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.6
    """Share of tool calls that only read (Read, Grep, Glob, web fetches ...) from which a
    session was mostly reading."""


class Otlp(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[otlp]`: the receiver of the agents' OpenTelemetry (docs/fleet.md)."""

    listen: str = ""
    """`[HOST:]PORT` to receive OTLP/HTTP on, e.g. "127.0.0.1:4318"; "" is off."""
    token: str = ""
    """Bearer token the senders must present; required to listen beyond loopback."""
    prometheus: str = ""
    """`[HOST:]PORT` to serve Prometheus /metrics on; "" is off (never 9464, Claude Code's)."""
    gemini_outfile: str = ""
    """Gemini CLI's telemetry outfile to follow (its `telemetry.outfile` setting); "" is off."""


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole configuration file."""

    refresh_s: Positive = 1.0
    """Seconds between re-evaluations of burn rates (the + and - keys change it live)."""
    live_timeout_s: Positive = 120.0
    """A session with activity within this many seconds is live; idle after that."""
    ended_after_s: Positive = 1800.0
    """A session with no activity for this long is shown as ended."""
    hide_after_h: NonNegative = 24.0
    """Sessions quiet for longer than this many hours are not listed; 0 lists them all."""
    read_only: bool = False
    """Hide the pause/terminate/kill actions."""
    budgets: Budgets = msgspec.field(default_factory=Budgets)
    alerts: Alerts = msgspec.field(default_factory=Alerts)
    keys: dict[str, str] = {}
    """`[keys]`: binding id -> key(s), e.g. `kill = "K"` or `filter = "/,f"`."""
    prices: dict[str, Price] = {}
    roots: dict[str, list[str]] = {}
    """`[roots]`: directories read for an agent besides its defaults, e.g.
    `claude = ["~/work/.claude"]`, and log files: `proxy_log = [...]`, `jsonl = [...]`."""
    policy: Policy = msgspec.field(default_factory=Policy)
    """`[policy.*]`: detector thresholds and actions (see policy_config.py)."""
    history: History = msgspec.field(default_factory=History)
    """`[history]`: session summaries and accepted output from git."""
    session_budgets: Mapping[str, SessionBudget] = {}
    """Budgets set for one session ("agent:session_id") with `b` or `run --budget`, from the
    store (read live), never from TOML."""
    otlp: Otlp = msgspec.field(default_factory=Otlp)
    """`[otlp]`: telemetry receiver and Prometheus exposition."""
    jobs: Jobs = msgspec.field(default_factory=Jobs)
    """`[jobs]`: recurring jobs and their week-over-week check."""
    routing: Routing = msgspec.field(default_factory=Routing)
    """`[routing]`: the premium-model-for-little-output flag."""

    def activity(self, last_ts: float, now: float) -> Activity:
        """Live, idle or ended, from the time since the session's last activity."""
        quiet = now - last_ts
        if quiet <= self.live_timeout_s:
            return "live"
        return "idle" if quiet <= self.ended_after_s else "ended"

    def budget_for(self, agent: str, cwd: str, session_id: str = "") -> Budget:
        """The session's own budget if one was set with `b`; else the configured one: the
        default, then the agent's, then the project's fields."""
        own = self.session_budgets.get(f"{agent}:{session_id}") if session_id else None
        return own.budget if own is not None else self.configured_budget(agent, cwd)[0]

    def configured_budget(self, agent: str, cwd: str) -> tuple[Budget, str]:
        """The budget the config gives a session, and the most specific rule it comes from
        ("default", "agent codex", "project payments-*"; "" when none is set)."""
        budget, origin = self.budgets.default, "default"
        agent_budget = self.budgets.agents.get(agent)
        if agent_budget is not None:
            budget, origin = agent_budget.over(budget), f"agent {agent}"
        project = match_project(self.budgets.projects, cwd)
        if project is not None:
            budget, origin = project[1].over(budget), f"project {project[0]}"
        return budget, origin if budget.is_set else ""


def match_project(projects: dict[str, Budget], cwd: str) -> tuple[str, Budget] | None:
    """The first entry naming `cwd` or its basename exactly, else the first glob that matches,
    with the pattern as written."""
    if not cwd:
        return None
    base = path_tail(cwd)
    candidates = (cwd, base)
    for pattern, budget in projects.items():
        if os.path.expanduser(pattern) in candidates:
            return pattern, budget
    for pattern, budget in projects.items():
        expanded = os.path.expanduser(pattern)
        if any(fnmatch.fnmatchcase(c, expanded) for c in candidates):
            return pattern, budget
    return None


class ConfigError(Exception):
    """A config problem, worded for one line: file, line, key and what was expected."""


def default_path() -> Path:
    from tokentop.dirs import user_dir  # the XDG rule without importing platformdirs (Linux)

    return user_dir("config") / "config.toml"


def load_config(path: Path | None = None) -> Config:
    """Read `path` (or the default file, which may be absent) into a Config."""
    explicit = path is not None
    target = path if path is not None else default_path()
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{target}: no such file") from None
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{target}: cannot read: {exc}") from None
    return parse_config(text, str(target))


def parse_config(text: str, origin: str = "config") -> Config:
    """Parse TOML text; errors name the origin, line and dotted key."""
    import tomllib  # ~10 ms: only when there is a file (the hook runs on every tool call)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from None
    try:
        return _convert(data)
    except _KeyError as exc:
        line = find_line(text, exc.key)
        where = f"{origin}:{line}" if line else origin
        raise ConfigError(f"{where}: {dotted(exc.key)}: {exc.problem}") from None


class _KeyError(Exception):
    def __init__(self, key: list[str], problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


_KEYED: Final = {
    ("budgets", "projects"): Budget,
    ("budgets", "agents"): Budget,
    ("prices",): Price,
    ("keys",): str,
    ("roots",): list[str],
}
"""Tables whose keys the user names; each entry is converted on its own (see module doc)."""


def _convert(data: dict[str, Any]) -> Config:
    if "session_budgets" in data:  # kept in the store by the `b` key, never in the file
        raise _KeyError(["session_budgets"], "unknown setting (set with the b key instead)")
    entries = {section: _pop_entries(data, section, typ) for section, typ in _KEYED.items()}
    base: Config = _convert_value(data, Config, [])
    budgets = msgspec.structs.replace(
        base.budgets,
        projects=entries["budgets", "projects"],
        agents=entries["budgets", "agents"],
    )
    config: Config = msgspec.structs.replace(
        base,
        budgets=budgets,
        prices=entries["prices",],
        keys=entries["keys",],
        roots=entries["roots",],
    )
    _check(config)
    return config


def _pop_entries(data: dict[str, Any], section: tuple[str, ...], typ: Any) -> dict[str, Any]:
    """Remove a user-keyed table from `data` and convert each of its entries."""
    parent: Any = data
    for name in section[:-1]:
        parent = parent.get(name) if isinstance(parent, dict) else None
    if not isinstance(parent, dict) or section[-1] not in parent:
        return {}
    table = parent.pop(section[-1])
    if not isinstance(table, dict):
        raise _KeyError(list(section), f"expected a table, got {_toml_type(table)}")
    return {k: _convert_value(v, typ, [*section, k]) for k, v in table.items()}


def _convert_value(value: Any, typ: Any, key: list[str]) -> Any:
    try:
        return msgspec.convert(value, typ, strict=True)
    except msgspec.ValidationError as exc:
        raise _explain(exc, key) from None


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`(?P<rest>.*?)(?:, got `(?P<got>[^`]+)`)?$")


def _explain(exc: msgspec.ValidationError, key: list[str]) -> _KeyError:
    """Turn msgspec's message into plain words and the full key path."""
    m = _AT.match(str(exc))
    what = m["what"] if m else str(exc)
    path = [*key, *_split_path(m["path"] if m and m["path"] else "")]
    unknown = _UNKNOWN.match(what)
    if unknown:
        return _KeyError([*path, unknown["field"]], "unknown setting (check the spelling)")
    expected = _EXPECTED.match(what)
    if expected:
        got_type = expected["got"]
        got = f", got {_GOT_WORDS.get(got_type, got_type)}" if got_type else ""
        want = _TYPE_WORDS.get(expected["want"], expected["want"])
        return _KeyError(path, f"expected {want}{expected['rest']}{got}")
    return _KeyError(path, what)


_TYPE_WORDS: Final = {
    "float": "a number",
    "float | null": "a number",
    "int": "an integer",
    "int | null": "an integer",
    "str": "a string",
    "bool": "true or false",
    "object": "a table",
    "array": "an array",
    "null": "nothing",
}
_GOT_WORDS: Final = {**_TYPE_WORDS, "bool": "a boolean"}


def _split_path(path: str) -> list[str]:
    """`.budgets.usd` or `.roots.claude[2]` -> ["budgets", "usd"] / ["roots", "claude", "[2]"]."""
    return re.findall(r"\[\d+\]|[^.\[\]]+", path)


def _check(config: Config) -> None:
    """Rules that span fields or need the list of binding ids."""
    if config.alerts.warn_pct >= config.alerts.over_pct:
        raise _KeyError(
            ["alerts", "warn_pct"],
            f"must be below alerts.over_pct ({config.alerts.over_pct:g})",
        )
    for action, keys in config.keys.items():
        if action not in KEY_ACTIONS:
            raise _KeyError(["keys", action], f"unknown action; known: {', '.join(KEY_ACTIONS)}")
        if not keys.strip() or any(not k.strip() for k in keys.split(",")):
            raise _KeyError(["keys", action], 'expected a key name such as "k" or "ctrl+k"')
    _check_key_clashes(config.keys)
    for name in config.roots:
        if name not in ROOT_KINDS:
            raise _KeyError(["roots", name], f"unknown; known: {', '.join(ROOT_KINDS)}")
    problem = policy_problem(config.policy)
    if problem is not None:
        raise _KeyError(*problem)


def _check_key_clashes(keys: dict[str, str]) -> None:
    """One key bound to two ids would make one of them unreachable: name both."""
    owner: dict[str, str] = {}
    for binding_id in KEY_ACTIONS:
        for key in keys.get(binding_id, DEFAULT_KEYS[binding_id]).split(","):
            other = owner.setdefault(key.strip(), binding_id)
            if other != binding_id:
                culprit, first = (binding_id, other) if binding_id in keys else (other, binding_id)
                raise _KeyError(
                    ["keys", culprit],
                    f"{key.strip()!r} is bound to both {first} and {culprit}; "
                    f"rebind one of them in [keys]",
                )


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_INDEX = re.compile(r"^\[\d+\]$")
_HEADER = re.compile(r"^\[\[?(?P<name>[^\]]*)\]\]?\s*(#.*)?$")
_KEY_PART = re.compile(r"\s*(?:\"([^\"]*)\"|'([^']*)'|([^.\"'\s]+))\s*")


def dotted(key: list[str]) -> str:
    """A key path as TOML would write it: budgets.projects."my.app".usd."""
    text = ".".join(k if _BARE.match(k) or _INDEX.match(k) else f'"{k}"' for k in key)
    return text.replace(".[", "[")


def find_line(text: str, key: list[str]) -> int | None:
    """The 1-based line where `key` (or its nearest written parent) is set, if found."""
    key = [k for k in key if not _INDEX.match(k)]
    lines: dict[tuple[str, ...], int] = {}
    table: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        header = _HEADER.match(line)
        if header:
            table = _split_key(header["name"])
            lines.setdefault(tuple(table), number)
        elif "=" in line and not line.startswith("#"):
            name = _split_key(_key_part(line))
            for depth in range(1, len(name) + 1):
                lines.setdefault((*table, *name[:depth]), number)
    for depth in range(len(key), 0, -1):
        if tuple(key[:depth]) in lines:
            return lines[tuple(key[:depth])]
    return None


def _key_part(line: str) -> str:
    """The text before the first `=` that is not inside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "=":
            return line[:i]
    return line


def _split_key(key: str) -> list[str]:
    """Split a TOML dotted key, honouring quoted parts: a."b.c".d -> [a, b.c, d]."""
    return ["".join(part) for part in _KEY_PART.findall(key)]


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(value), "an array" if isinstance(value, list) else "a table")
