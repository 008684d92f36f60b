#!/usr/bin/env python3
"""Regenerate tokentop's bundled price table (src/tokentop/data/prices.json) in one command.

    python scripts/update_prices.py                    # newest litellm wheel via pip download
    python scripts/update_prices.py --pin 1.109.1      # a given litellm version
    python scripts/update_prices.py path/to/litellm-*.whl
    python scripts/update_prices.py path/to/site-packages/litellm
    python scripts/update_prices.py model_prices_and_context_window.json --source-version main

The peers (ccusage, claude-monitor) price tokens from LiteLLM's
`model_prices_and_context_window.json`; the litellm wheel ships a copy. We keep only the chat
models of the vendors tokentop watches and the fields `tokentop.pricing` uses, so the bundled
file stays small and a price change shows up as a readable one-line-per-model diff.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from tokentop.pricing import (
    DATA_FILE,
    VENDOR_ROUTES,
    ModelPrice,
    PriceData,
    PriceMeta,
    PriceTier,
    parse_model_name,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "src" / "tokentop" / "data" / DATA_FILE
JSON_IN_PACKAGE = "model_prices_and_context_window_backup.json"
JSON_IN_WHEEL = f"litellm/{JSON_IN_PACKAGE}"

FAMILY_RANK = (
    *("anthropic", "openai", "gemini", "deepseek", "xai", "mistral", "moonshot", "zai"),
    *("dashscope", "bedrock", "vertex_ai"),
)
"""Who prices a bare model name when several list it: its vendor first, resellers last."""
PROVIDER_FAMILY = {
    **{vendor: vendor for vendor in VENDOR_ROUTES},
    "bedrock": "bedrock",
    "bedrock_converse": "bedrock",
    "vertex_ai": "vertex_ai",
    "vertex_ai-language-models": "vertex_ai",
    "vertex_ai-anthropic_models": "vertex_ai",
}
MODES = frozenset({"chat", "responses"})
FIELDS = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cache_read": "cache_read_input_token_cost",
    "cache_write_5m": "cache_creation_input_token_cost",
    "cache_write_1h": "cache_creation_input_token_cost_above_1hr",
}
_TIER_KEY = re.compile(r"^(?P<field>\w+?)_above_(?P<k>\d+)k_tokens(?P<priority>_priority)?$")
CLAUDE_CACHE_RULES = {"cache_read": 0.1, "cache_write_5m": 1.25, "cache_write_1h": 2.0}
"""Anthropic's published multipliers of the input price, used when LiteLLM lists no cache price."""
_CLAUDE_DATE = re.compile(r"^(claude-.+)-\d{8}$")


class SourceError(Exception):
    """The price source could not be read; the message says why."""


class Source(NamedTuple):
    raw: bytes
    label: str
    version: str
    prices_date: str
    date_basis: str


class Offer(NamedTuple):
    """One LiteLLM entry that survived filtering, with where it would be keyed."""

    family: str
    route: str
    name: str
    litellm_key: str
    price: ModelPrice

    @property
    def key(self) -> str:
        """Where this price is stored when it is not the bare name's winner."""
        return f"{self.route}/{self.name}"


# ---------------------------------------------------------------- pure derivation


def _number(value: object) -> float | None:
    """A usable price: a finite, non-negative number (JSON booleans and strings are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _tidy(price: float) -> float:
    """Drop float noise from derived prices (1.25 × 1e-6 -> 1.25e-6, not 1.2499999999999999e-6)."""
    return float(f"{price:.12g}")


def _read(entry: Mapping[str, Any], suffix: str = "") -> dict[str, float]:
    found = {field: _number(entry.get(key + suffix)) for field, key in FIELDS.items()}
    if found["cache_read"] is None:  # DeepSeek names its cache-hit price differently
        found["cache_read"] = _number(entry.get("input_cost_per_token_cache_hit" + suffix))
    return {field: value for field, value in found.items() if value is not None}


def _tiers(entry: Mapping[str, Any], priority: bool) -> tuple[PriceTier, ...]:
    by_threshold: dict[int, dict[str, float]] = {}
    names = {key: field for field, key in FIELDS.items()}
    for key, value in entry.items():
        match = _TIER_KEY.match(key)
        number = _number(value)
        if number is None or not match or match["field"] not in names:
            continue
        if bool(match["priority"]) == priority:
            fields = by_threshold.setdefault(int(match["k"]) * 1000, {})
            fields[names[match["field"]]] = number
    return tuple(PriceTier(t, **by_threshold[t]) for t in sorted(by_threshold))


def _with_rules(fields: dict[str, float], claude: bool, derived: list[str]) -> dict[str, float]:
    """Fill cache prices by rule: Claude's published multipliers; 1h write = 2 × input."""
    rules = CLAUDE_CACHE_RULES if claude else {}
    if "cache_write_5m" in fields:
        rules = {**rules, "cache_write_1h": CLAUDE_CACHE_RULES["cache_write_1h"]}
    for field, factor in rules.items():
        if field not in fields:
            fields[field] = _tidy(fields["input"] * factor)
            derived.append(field)
    return fields


def _tier_rules(tiers: tuple[PriceTier, ...], derived: list[str]) -> tuple[PriceTier, ...]:
    """A tier that lists input but no 1h write gets 2 × its input, like the base price."""
    out = []
    for tier in tiers:
        if tier.cache_write_1h is None and tier.input is not None:
            tier = msgspec.structs.replace(tier, cache_write_1h=_tidy(tier.input * 2))
            derived.append(f"tier_{tier.threshold}.cache_write_1h")
        out.append(tier)
    return tuple(out)


def _model_price(fields: Mapping[str, float], **extra: Any) -> ModelPrice:
    return ModelPrice(
        input=fields["input"],
        output=fields["output"],
        cache_read=fields.get("cache_read"),
        cache_write_5m=fields.get("cache_write_5m"),
        cache_write_1h=fields.get("cache_write_1h"),
        **extra,
    )


def _priority(entry: Mapping[str, Any]) -> ModelPrice | None:
    fields = _read(entry, "_priority")
    if "input" not in fields or "output" not in fields:
        return None
    return _model_price(fields, tiers=_tiers(entry, priority=True))


def _fast_multiplier(entry: Mapping[str, Any]) -> float | None:
    extra = entry.get("provider_specific_entry")
    return _number(extra.get("fast")) if isinstance(extra, dict) else None


def price_from_entry(
    entry: Mapping[str, Any], name: str, family: str, key: str
) -> ModelPrice | None:
    """tokentop's view of one LiteLLM entry, or None when it has no token prices."""
    fields = _read(entry)
    if "input" not in fields or "output" not in fields:
        return None
    derived: list[str] = []
    fields = _with_rules(fields, name.startswith("claude-"), derived)
    tiers = _tiers(entry, priority=False)
    if "cache_write_5m" in fields:
        tiers = _tier_rules(tiers, derived)
    return _model_price(
        fields,
        tiers=tiers,
        priority=_priority(entry),
        fast_multiplier=_fast_multiplier(entry),
        derived=tuple(derived),
        provider=family,
        source=key,
    )


def offer_from_entry(key: str, entry: object) -> Offer | None:
    """Keep chat models of the watched vendors (Bedrock: Claude only) that have token prices."""
    if not isinstance(entry, dict) or key.startswith("ft:") or entry.get("mode") not in MODES:
        return None
    family = PROVIDER_FAMILY.get(str(entry.get("litellm_provider")))
    route, name = parse_model_name(key)
    if family is None or "/" in name or (family == "bedrock" and not route.startswith("bedrock")):
        return None
    route = route if family == "bedrock" else family
    price = price_from_entry(entry, name, family, key)
    return None if price is None else Offer(family, route, name, key, price)


def _same(a: ModelPrice, b: ModelPrice) -> bool:
    def bare(p: ModelPrice) -> ModelPrice:
        return msgspec.structs.replace(p, provider="", source="")

    return bare(a) == bare(b)


def _best_per_key(offers: Iterable[Offer]) -> dict[str, Offer]:
    """Within one route, prefer the entry LiteLLM keys without a prefix, then the shortest."""
    best: dict[str, Offer] = {}
    order = sorted(
        offers, key=lambda o: (o.litellm_key.lower() != o.name, len(o.litellm_key), o.litellm_key)
    )
    for offer in order:
        best.setdefault(offer.key, offer)
    return best


def _bare_winners(offers: Iterable[Offer]) -> dict[str, Offer]:
    winners: dict[str, Offer] = {}
    for offer in sorted(offers, key=lambda o: FAMILY_RANK.index(o.family)):
        if "." not in offer.route:  # a regional Bedrock price never stands for the model
            winners.setdefault(offer.name, offer)
    return winners


def _claude_aliases(models: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
    """`claude-x` for `claude-x-YYYYMMDD` when every dated snapshot has the same prices."""
    groups: dict[str, list[ModelPrice]] = {}
    for name, price in sorted(models.items()):
        match = _CLAUDE_DATE.match(name)
        if match and match[1] not in models:
            groups.setdefault(match[1], []).append(price)
    return {
        alias: prices[-1]
        for alias, prices in groups.items()
        if all(_same(p, prices[0]) for p in prices)
    }


def derive_prices(raw: Mapping[str, object], meta: PriceMeta) -> PriceData:
    """The compact table from a parsed LiteLLM price list (pure: same input, same output)."""
    offers = [o for key, entry in raw.items() if (o := offer_from_entry(key, entry))]
    per_key = _best_per_key(offers)
    winners = _bare_winners(per_key.values())
    models = {name: offer.price for name, offer in winners.items()}
    for key, offer in per_key.items():
        winner = winners.get(offer.name)
        regional = "." in offer.route
        if winner is not offer and (
            regional or winner is None or not _same(winner.price, offer.price)
        ):
            models[key] = offer.price
    models.update(_claude_aliases(models))
    ordered = dict(sorted(models.items()))
    return PriceData(msgspec.structs.replace(meta, models=len(ordered)), ordered)


def encode_price_data(data: PriceData) -> bytes:
    """Deterministic JSON, one model per line so that price updates diff readably."""
    enc = msgspec.json.encode
    rows = [b"  " + enc(key) + b": " + enc(price) for key, price in data.models.items()]
    head = b'{\n "meta": ' + enc(data.meta) + b',\n "models": {\n'
    return head + b",\n".join(rows) + b"\n }\n}\n"


def build(raw_json: bytes, source: Source) -> bytes:
    """Parse LiteLLM's JSON and return the bundled file's bytes."""
    try:
        raw = json.loads(raw_json)
    except ValueError as exc:
        raise SourceError(f"{source.label}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SourceError(f"{source.label}: expected a JSON object of models")
    meta = PriceMeta(
        source=f"litellm {source.version} ({source.label})",
        source_version=source.version,
        prices_date=source.prices_date,
        date_basis=source.date_basis,
        source_sha256=hashlib.sha256(raw_json).hexdigest(),
    )
    return encode_price_data(derive_prices(raw, meta))


# ---------------------------------------------------------------- reading sources


def _mtime_date(path: Path) -> str:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date().isoformat()


def _sbom_date(texts: Iterable[bytes]) -> str | None:
    """The wheel's build date from its CycloneDX SBOM (wheel file dates are all 1980)."""
    for text in texts:
        try:
            stamp = json.loads(text)["metadata"]["timestamp"]
            return dt.datetime.fromisoformat(stamp[:19]).date().isoformat()
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _metadata_version(text: str) -> str:
    found = re.search(r"^Version:\s*(\S+)", text, re.MULTILINE)
    return found[1] if found else "unknown"


def from_wheel(path: Path) -> Source:
    try:
        with zipfile.ZipFile(path) as wheel:
            names = wheel.namelist()
            raw = wheel.read(JSON_IN_WHEEL)
            meta = [n for n in names if n.endswith(".dist-info/METADATA")]
            version = _metadata_version(wheel.read(meta[0]).decode()) if meta else "unknown"
            sboms = (wheel.read(n) for n in names if ".dist-info/sboms/" in n)
            date = _sbom_date(sboms)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{path}: cannot read {JSON_IN_WHEEL}: {exc}") from exc
    label = f"{path.name}:{JSON_IN_WHEEL}"
    if date:
        return Source(raw, label, version, date, "wheel build (SBOM timestamp)")
    return Source(raw, label, version, _mtime_date(path), "wheel file mtime")


def from_installed(path: Path) -> Source:
    """A litellm package directory (or the site-packages holding it)."""
    package = path if (path / JSON_IN_PACKAGE).is_file() else path / "litellm"
    json_path = package / JSON_IN_PACKAGE
    if not json_path.is_file():
        raise SourceError(f"{path}: no {JSON_IN_PACKAGE} (is this a litellm package?)")
    dist = sorted(package.parent.glob("litellm-*.dist-info"))
    version = "unknown"
    date = None
    if dist:
        version = _metadata_version((dist[-1] / "METADATA").read_text(errors="replace"))
        date = _sbom_date(p.read_bytes() for p in sorted(dist[-1].glob("sboms/*.json")))
    basis = "wheel build (SBOM timestamp)" if date else "file mtime"
    date = date or _mtime_date(json_path)
    return Source(json_path.read_bytes(), f"litellm/{JSON_IN_PACKAGE}", version, date, basis)


def from_json(path: Path, version: str | None) -> Source:
    raw = path.read_bytes()
    return Source(raw, path.name, version or "unknown", _mtime_date(path), "file mtime")


def from_download(pin: str | None) -> Source:
    """Fetch the newest (or pinned) litellm wheel with pip into a temp dir and read it."""
    spec = f"litellm=={pin}" if pin else "litellm"
    with tempfile.TemporaryDirectory(prefix="tokentop-prices-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", spec, "--no-deps"]
        cmd += ["--only-binary=:all:", "--quiet", "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SourceError(f"pip download {spec} failed:\n{result.stderr.strip()}")
        wheels = sorted(Path(tmp).glob("litellm-*.whl"))
        if not wheels:
            raise SourceError(f"pip download {spec} produced no wheel")
        return from_wheel(wheels[-1])


def load_source(arg: str | None, pin: str | None, version: str | None) -> Source:
    """Read LiteLLM's JSON from a file, wheel or package dir, or download the wheel."""
    if arg is None:
        return from_download(pin)
    path = Path(arg)
    try:
        if path.is_dir():
            return from_installed(path)
        if path.suffix == ".whl":
            return from_wheel(path)
        return from_json(path, version)
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("source", nargs="?", help="price JSON, litellm wheel or package dir")
    parser.add_argument("--pin", help="litellm version to download (default: newest)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="file to write")
    parser.add_argument("--date", help="override the prices date (YYYY-MM-DD)")
    parser.add_argument("--source-version", help="version label for a bare JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        source = load_source(args.source, args.pin, args.source_version)
        if args.date:
            source = source._replace(prices_date=args.date, date_basis="given on command line")
        data = build(source.raw, source)
    except SourceError as exc:
        print(f"update_prices: {exc}", file=sys.stderr)
        return 1
    args.out.write_bytes(data)
    table = msgspec.json.decode(data, type=PriceData)
    print(
        f"wrote {args.out} ({len(data) / 1024:.0f} KiB, {table.meta.models} models) "
        f"from {table.meta.source}, prices of {table.meta.prices_date} ({table.meta.date_basis})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
