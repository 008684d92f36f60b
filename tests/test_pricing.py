"""Pricing: exact costs from the bundled table, name normalisation, tiers, and the generator."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from tokentop.model import TokenCounts
from tokentop.pricing import (
    ModelPrice,
    PriceData,
    PriceMeta,
    PriceTable,
    PriceTier,
    model_key,
    parse_model_name,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "pricing"
SAMPLE = FIXTURES / "litellm_sample.json"
EXPECTED = FIXTURES / "expected_prices.json"
BUNDLED = ROOT / "src" / "tokentop" / "data" / "prices.json"


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=0)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.default()


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "update_prices", ROOT / "scripts" / "update_prices.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["update_prices"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- bundled table


def test_bundled_table_records_its_source_and_is_compact(table: PriceTable) -> None:
    assert table.meta.source_version == "1.109.1"
    assert table.meta.source.startswith("litellm 1.109.1")
    assert table.meta.prices_date == "2026-11-12"
    assert "SBOM" in table.meta.date_basis
    assert table.meta.models == len(table) > 300
    assert BUNDLED.stat().st_size < 1_000_000


def test_sonnet_4_5_response_with_both_cache_write_durations(table: PriceTable) -> None:
    tokens = TokenCounts(
        input=1_000, output=2_000, cache_read=50_000, cache_write_5m=10_000, cache_write_1h=4_000
    )
    expected = 1_000 * 3e-6 + 2_000 * 15e-6 + 50_000 * 0.3e-6 + 10_000 * 3.75e-6 + 4_000 * 6e-6
    assert expected == approx(0.1095)
    assert table.cost("claude-sonnet-4-5-20250929", tokens) == approx(expected)


def test_long_context_prices_the_whole_request_once_input_exceeds_threshold(
    table: PriceTable,
) -> None:
    model = "vertex_ai/claude-sonnet-4-5@20250929"  # LiteLLM lists the 200k tier here
    at_threshold = TokenCounts(input=100_000, cache_read=90_000, cache_write_5m=10_000, output=1)
    assert table.cost(model, at_threshold) == approx(0.3 + 0.027 + 0.0375 + 15e-6)
    over = TokenCounts(
        input=100_001, cache_read=90_000, cache_write_5m=6_000, cache_write_1h=4_000, output=1_000
    )
    expected = 100_001 * 6e-6 + 90_000 * 0.6e-6 + 6_000 * 7.5e-6 + 4_000 * 12e-6 + 1_000 * 22.5e-6
    assert table.cost(model, over) == approx(expected)


def test_anthropic_rule_differs_from_ccusage_per_kind_split() -> None:
    sonnet = ModelPrice(
        input=3e-6,
        output=15e-6,
        cache_read=0.3e-6,
        cache_write_5m=3.75e-6,
        cache_write_1h=6e-6,
        tiers=(PriceTier(200_000, 6e-6, 22.5e-6, 0.6e-6, 7.5e-6, 12e-6),),
    )
    # No single kind exceeds 200k, so ccusage would use base prices; the total input does.
    tokens = TokenCounts(input=150_000, cache_read=150_000, output=100)
    assert sonnet.cost(tokens) == approx(150_000 * 6e-6 + 150_000 * 0.6e-6 + 100 * 22.5e-6)
    below = TokenCounts(input=150_000, cache_read=50_000, output=100)
    assert sonnet.cost(below) == approx(150_000 * 3e-6 + 50_000 * 0.3e-6 + 100 * 15e-6)


def test_codex_gpt5_response_with_cached_input_and_reasoning(table: PriceTable) -> None:
    tokens = TokenCounts(input=2_000, cache_read=30_000, output=500, reasoning=1_500)
    expected = 2_000 * 1.25e-6 + 30_000 * 0.125e-6 + (500 + 1_500) * 10e-6
    assert expected == approx(0.02625)
    assert table.cost("gpt-5", tokens) == approx(expected)
    assert table.cost("gpt-5-codex", tokens) == approx(expected)


def test_openai_272k_tier(table: PriceTable) -> None:
    tokens = TokenCounts(input=200_000, cache_read=80_000, output=1_000)
    assert table.cost("gpt-5.4", tokens) == approx(
        200_000 * 5e-6 + 80_000 * 0.5e-6 + 1_000 * 22.5e-6
    )


def test_gemini_2_5_pro_below_and_above_200k(table: PriceTable) -> None:
    small = TokenCounts(input=10_000, cache_read=5_000, output=800, reasoning=200)
    assert table.cost("gemini-2.5-pro", small) == approx(
        10_000 * 1.25e-6 + 5_000 * 0.125e-6 + 1_000 * 10e-6
    )
    large = TokenCounts(input=250_000, output=1_000)
    assert table.cost("gemini-2.5-pro", large) == approx(250_000 * 2.5e-6 + 1_000 * 15e-6)


@pytest.mark.parametrize(
    "name",
    [
        "anthropic/claude-sonnet-4-5-20250929",
        "Claude-Sonnet-4-5-20250929",
        "claude-sonnet-4-5@20250929",
        "claude-sonnet-4-5[1m]",
        "claude-sonnet-4.5",
        " claude-sonnet-4-5 ",
    ],
)
def test_spellings_of_sonnet_4_5_share_its_price(table: PriceTable, name: str) -> None:
    price = table.lookup(name)
    assert price is not None
    assert (price.input, price.output, price.cache_write_1h) == (3e-6, 15e-6, 6e-6)


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("openai/gpt-5", "gpt-5"),
        ("google/gemini-2.5-pro", "gemini/gemini-2.5-pro"),
        ("gemini/gemini-2.5-pro", "gemini/gemini-2.5-pro"),
        ("models/gemini-2.5-flash", "gemini/gemini-2.5-flash"),
        ("vertex_ai/gemini-2.5-pro", "gemini-2.5-pro"),
        (
            "bedrock/anthropic.claude-sonnet-4-20250514-v1:0",
            "anthropic.claude-sonnet-4-20250514-v1:0",
        ),
        (
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ),
        ("xai/grok-code-fast-1", "xai/grok-code-fast-1"),
        ("claude-sonnet-4", "anthropic.claude-sonnet-4-20250514-v1:0"),
        ("claude-sonnet-4-6-20260101", "claude-sonnet-4-6"),  # Claude date suffix dropped
    ],
)
def test_provider_prefixed_names(table: PriceTable, name: str, source: str) -> None:
    price = table.lookup(name)
    assert price is not None
    assert price.source == source


def test_regional_bedrock_keeps_its_premium_and_never_falls_back(table: PriceTable) -> None:
    regional = table.lookup("bedrock/eu.anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert regional is not None
    assert regional.input == approx(3.3e-6)
    assert table.lookup("xx.anthropic.claude-sonnet-4-5-20250929-v1:0") is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "<synthetic>",
        "mystery-model",
        "claude-sonnet-9-9",
        "openrouter/anthropic/claude-sonnet-4.5",
        "gpt-5-turbo-ultra",
        "claude-sonnet-4-5-extra",
        "azure/gpt-5",
    ],
)
def test_unknown_models_cost_none_not_zero(table: PriceTable, name: str) -> None:
    assert table.lookup(name) is None
    assert table.cost(name, TokenCounts(input=1_000, output=1_000)) is None


def test_fast_suffix_uses_fast_prices_or_stays_unknown(table: PriceTable) -> None:
    tokens = TokenCounts(input=1_000, output=1_000)
    assert table.cost("claude-opus-4-8-fast", tokens) == approx(2 * (1_000 * 5e-6 + 1_000 * 25e-6))
    assert table.cost("gpt-5-fast", tokens) == approx(1_000 * 2.5e-6 + 1_000 * 20e-6)
    assert table.lookup("claude-sonnet-4-5-fast") is None  # no known fast price: not guessed


def test_missing_cache_prices_fall_back_to_input() -> None:
    price = ModelPrice(input=1e-6, output=2e-6)
    tokens = TokenCounts(cache_read=10, cache_write_5m=20, cache_write_1h=30)
    assert price.cost(tokens) == approx(60 * 1e-6)


def test_overrides_replace_any_spelling_and_keep_the_rest(table: PriceTable) -> None:
    custom = ModelPrice(input=1e-6, output=1e-6)
    overridden = table.with_overrides({"anthropic/claude-sonnet-4-5": custom, "my-local": custom})
    tokens = TokenCounts(input=1_000, output=1_000)
    assert overridden.cost("claude-sonnet-4-5-20250929", tokens) == approx(0.002)
    assert overridden.cost("vertex_ai/claude-sonnet-4-5", tokens) == approx(0.002)
    assert overridden.cost("my-local", tokens) == approx(0.002)
    assert overridden.cost("gpt-5", tokens) == table.cost("gpt-5", tokens)
    assert table.cost("claude-sonnet-4-5", tokens) == approx(0.018)  # original untouched
    assert overridden.meta == table.meta


def test_lookup_results_are_cached(table: PriceTable) -> None:
    assert table.lookup("claude-opus-4-8") is table.lookup("claude-opus-4-8")


def test_corrupt_price_file_is_reported_not_raised() -> None:
    with pytest.raises(msgspec.DecodeError):
        PriceTable.from_json(b"{not json")
    data = PriceData(PriceMeta("test", "0", "2026-01-01", "test"), {"m": ModelPrice(1e-6, 1e-6)})
    assert PriceTable.from_json(msgspec.json.encode(data)).lookup("M") == ModelPrice(1e-6, 1e-6)


def test_parse_model_name() -> None:
    assert parse_model_name("bedrock/us-gov.anthropic.claude-opus-4-8") == (
        "bedrock.us-gov",
        "claude-opus-4-8",
    )
    assert parse_model_name("vertex_ai/claude-opus-4-6@default") == ("vertex_ai", "claude-opus-4-6")
    assert parse_model_name("vertex_ai/xai/grok-4.3") == ("vertex_ai", "grok-4.3")
    assert model_key("anthropic/claude-opus-4-8") == "claude-opus-4-8"
    assert model_key("vertex_ai/claude-opus-4-8") == "vertex_ai/claude-opus-4-8"


# ---------------------------------------------------------------- generator script


def test_script_regenerates_expected_file(script: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "prices.json"
    args = [str(SAMPLE), "--date", "2026-01-02", "--source-version", "0.0-test", "--out", str(out)]
    assert script.main(args) == 0
    assert out.read_bytes() == EXPECTED.read_bytes()


def test_derivation_rules(script: ModuleType) -> None:
    raw = json.loads(SAMPLE.read_bytes())
    meta = PriceMeta("t", "0", "2026-01-02", "t")
    models = script.derive_prices(raw, meta).models
    assert {
        "sample_spec",
        "ft:gpt-4o-2024-08-06",
        "text-embedding-3-small",
        "gpt-broken",
    }.isdisjoint(models)
    assert "amazon.nova-pro-v1:0" not in models and "gpt-5.3-codex" not in models
    haiku = models["claude-3-haiku-20240307"]  # LiteLLM lists no cache prices for it
    assert haiku.derived == ("cache_read", "cache_write_5m", "cache_write_1h")
    assert (haiku.cache_read, haiku.cache_write_5m, haiku.cache_write_1h) == (
        2.5e-8,
        3.125e-7,
        5e-7,
    )
    assert models["claude-sonnet-4-5"].derived == ()  # 1h price read from LiteLLM
    assert models["claude-sonnet-4"].tiers[0].cache_write_1h == 12e-6  # 2 x tier input
    assert models["deepseek-chat"].cache_read == 2.8e-8  # input_cost_per_token_cache_hit
    assert models["dashscope/deepseek-chat"].input == 5e-7  # a reseller never wins the bare name
    assert "vertex_ai/gemini-2.5-pro" not in models  # same prices as the vendor entry
    assert models["bedrock.eu/claude-sonnet-4-20250514"].input == 3.3e-6
    gpt54 = models["gpt-5.4"]
    assert gpt54.priority is not None and gpt54.priority.tiers[0].input == 1e-5
    assert models["claude-opus-4-8"].fast_multiplier == 2.0


def test_script_reads_a_wheel(script: ModuleType, tmp_path: Path) -> None:
    wheel = tmp_path / "litellm-9.9.9-py3-none-any.whl"
    sbom = {"metadata": {"timestamp": "2026-03-04T05:06:07.123456789Z"}}
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("litellm/model_prices_and_context_window_backup.json", SAMPLE.read_bytes())
        zf.writestr("litellm-9.9.9.dist-info/METADATA", "Name: litellm\nVersion: 9.9.9\n")
        zf.writestr("litellm-9.9.9.dist-info/sboms/x.cyclonedx.json", json.dumps(sbom))
    source = script.load_source(str(wheel), None, None)
    assert (source.version, source.prices_date) == ("9.9.9", "2026-03-04")
    out = tmp_path / "prices.json"
    assert script.main([str(wheel), "--out", str(out)]) == 0
    table = PriceTable.from_json(out.read_bytes())
    assert table.meta.source_version == "9.9.9"
    assert (
        table.lookup("gpt-5")
        == script.derive_prices(json.loads(SAMPLE.read_bytes()), table.meta).models["gpt-5"]
    )


def test_script_reports_bad_sources(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert script.main([str(bad), "--out", str(tmp_path / "o.json")]) == 1
    assert script.main([str(tmp_path / "missing.json"), "--out", str(tmp_path / "o.json")]) == 1
    err = capsys.readouterr().err
    assert "expected a JSON object" in err and "missing.json" in err
    assert not (tmp_path / "o.json").exists()


def test_script_reads_an_installed_package(script: ModuleType, tmp_path: Path) -> None:
    package = tmp_path / "litellm"
    package.mkdir()
    (package / "model_prices_and_context_window_backup.json").write_bytes(SAMPLE.read_bytes())
    dist = tmp_path / "litellm-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.4\nName: litellm\nVersion: 1.2.3\n")
    source = script.load_source(str(tmp_path), None, None)
    assert source.version == "1.2.3"
    assert source.date_basis == "file mtime"
    assert source.raw == SAMPLE.read_bytes()
