"""Print the benchmark's figures as a plain table, judged against the targets of issue #23."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tools import KINDS, Corpus, Totals, differences

if TYPE_CHECKING:
    from live import LiveResult
    from run import Summary

COLD_RATIO_MAX = 0.5
COLD_RSS_MAX_MB = {"s1000": 100.0, "s5000": 150.0}
"""Peak RSS summed over processes; other corpora are held to the s1000 figure."""
WARM_WALL_MAX_S = 0.2
RESTART_RSS_MAX_MB = 60.0
REPORT_RATIO_MAX = 1.5
"""The first `report` on a fresh HOME, against tokentop-cold on the same corpus."""
HOOK_MAX_MS = 50.0
LIVE_P95_MAX_MS = 300.0
IDLE_CPU_MAX_PCT = 1.0
REFERENCE = "ccusage"
"""The native ccusage binary: the faster ccusage, so the stricter reference for ratios."""

HEADER = ("tool", "corpus", "wall s", "min-max s", "RSS MB", "x ccusage", "target", "totals")


def print_table(corpora: list[Corpus], summaries: list[Summary]) -> None:
    for c in corpora:
        kinds = ", ".join(f"{k} {c.expected[k]:,}" for k in KINDS)
        print(f"corpus {c.name}: {c.size_bytes / 2**20:.0f} MB at {c.path}; expected {kinds}")
    expected = {c.name: c.expected for c in corpora}
    rows: list[tuple[str, ...]] = [HEADER]
    colds = {x.corpus: x for x in summaries if x.tool == "tokentop-cold"}
    for s in summaries:
        rows.append(row(s, reference(summaries, s.corpus), expected[s.corpus], colds.get(s.corpus)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    print()
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    for s in summaries:
        for path in s.kept:
            print(f"kept {s.tool} output with wrong or changed totals: {path}")
    print()


def reference(summaries: list[Summary], corpus: str) -> Summary | None:
    for s in summaries:
        if s.tool == REFERENCE and s.corpus == corpus and s.error is None and s.walls:
            return s
    return None


def row(s: Summary, ref: Summary | None, expected: Totals, cold: Summary | None) -> tuple[str, ...]:
    if s.error is not None or not s.walls:
        return (s.tool, s.corpus, "-", "-", "-", "-", "-", s.error or "no runs")
    ratio = f"{s.wall / ref.wall:.2f}" if ref else "n/a"
    spread = f"{min(s.walls):.3f}-{max(s.walls):.3f}"
    rss = f"{s.peak_rss_mb:.1f} ({min(s.rss) / 2**20:.0f}-{max(s.rss) / 2**20:.0f})"
    cells = (f"{s.wall:.3f}", spread, rss, ratio)
    verdict = target(s, ref, cold)
    return (s.tool, s.corpus, *cells, verdict, totals_note(s.totals, ref, expected))


def totals_note(totals: list[Totals], ref: Summary | None, expected: Totals) -> str:
    """Compare with expected.json and the ccusage run, and flag any run that disagreed."""
    first = totals[0]
    notes = [compare(first, expected, "expected")]
    if ref is not None and ref.totals and ref.totals is not totals:
        notes.append(compare(first, ref.totals[0], REFERENCE))
    for i, other in enumerate(totals):
        if other != first:
            notes.append(
                f"UNSTABLE: run {i + 1}/{len(totals)} {compare(other, expected, 'expected')}"
            )
    return ", ".join(notes)


def target(s: Summary, ref: Summary | None, cold: Summary | None) -> str:
    if s.tool == "tokentop-warm":
        return f"{pass_fail(s.wall < WARM_WALL_MAX_S)} (< {WARM_WALL_MAX_S} s)"
    if s.tool == "tokentop-restart":
        ok = s.wall < WARM_WALL_MAX_S and s.peak_rss_mb < RESTART_RSS_MAX_MB
        return f"{pass_fail(ok)} (< {WARM_WALL_MAX_S} s, < {RESTART_RSS_MAX_MB:.0f} MB)"
    if s.tool == "tokentop-report":
        if cold is None or not cold.walls:
            return "n/a (no tokentop-cold run)"
        ratio = s.wall / cold.wall
        return f"{pass_fail(ratio <= REPORT_RATIO_MAX)} ({ratio:.2f} x cold, <= {REPORT_RATIO_MAX})"
    if s.tool != "tokentop-cold":
        return "-"
    rss_max = COLD_RSS_MAX_MB.get(s.corpus, COLD_RSS_MAX_MB["s1000"])
    rss_ok = s.peak_rss_mb <= rss_max
    if ref is None:
        return f"{pass_fail(rss_ok)} RSS only (no ccusage run)"
    verdict = rss_ok and s.wall <= COLD_RATIO_MAX * ref.wall
    return f"{pass_fail(verdict)} (<= {COLD_RATIO_MAX} x, <= {rss_max:.0f} MB)"


def pass_fail(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def compare(got: Totals, want: Totals, label: str) -> str:
    """'= label' or the signed difference on every kind both sides report."""
    diffs = differences(got, want)
    if not diffs:
        return f"= {label}"
    return f"!= {label} (" + ", ".join(f"{k} {d:+,}" for k, d in diffs.items()) + ")"


def nearest_rank(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def print_live(live: LiveResult) -> None:
    seen = [d for d in live.delays_ms if d is not None]
    missed = len(live.delays_ms) - len(seen)
    print(f"live path ({live.note})")
    if not seen:
        print("  append -> NDJSON: not available")
    else:
        p50, p95 = nearest_rank(seen, 50), nearest_rank(seen, 95)
        verdict = pass_fail(p95 < LIVE_P95_MAX_MS and missed == 0)
        print(f"  append -> NDJSON over {len(live.delays_ms)} appends ({missed} never seen):")
        print(
            f"    p50 {p50:.0f} ms  p95 {p95:.0f} ms  max {max(seen):.0f} ms  "
            f"{verdict} (p95 < {LIVE_P95_MAX_MS:.0f} ms)"
        )
    if live.idle_cpu_pct is None:
        print("  idle CPU: not available")
    else:
        verdict = pass_fail(live.idle_cpu_pct < IDLE_CPU_MAX_PCT)
        print(
            f"  idle CPU: {live.idle_cpu_pct:.2f} % of one core  "
            f"{verdict} (< {IDLE_CPU_MAX_PCT:.0f} %)"
        )
