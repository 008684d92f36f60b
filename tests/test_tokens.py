"""Tokenizer: exact offline o200k_base from the packaged file, labelled heuristic fallback."""

from __future__ import annotations

import socket
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken

from tokentop import tokens
from tokentop.tokens import (
    O200K_CACHE_KEY,
    HeuristicTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    candidate_files,
    get_tokenizer,
    load_tokenizer,
    packaged_file,
)

SAMPLES = [
    "hello world",
    "",
    "def f(x):\n    return x ** 2  # square\n\n\n",
    '{"type":"assistant","message":{"usage":{"input_tokens":12,"cache_read_input_tokens":9}}}',
    "Привет, мир! 这是一个测试。日本語のテキスト 🚀🚀 naïve café",
    "literal <|endoftext|> in user text is counted as text",
    "1234567890 3.14159 " * 20,
]


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Any socket use or requests call fails; TIKTOKEN_CACHE_DIR points at an empty dir."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise NetworkUsed("network used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    fake_requests = types.ModuleType("requests")
    fake_requests.get = refuse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "requests", fake_requests)
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    yield cache


@pytest.fixture(scope="module")
def packaged() -> Tokenizer:
    return load_tokenizer([packaged_file()])


def test_packaged_encoding_is_exact_o200k(packaged: Tokenizer) -> None:
    assert (packaged.name, packaged.exact) == ("o200k_base", True)
    assert packaged.count("hello world") == 2
    assert packaged.count("") == 0


def test_packaged_encoding_matches_tiktokens_own_o200k(
    packaged: Tokenizer, no_network: Path, tmp_path: Path
) -> None:
    # tiktoken builds o200k_base itself (its own pattern and special tokens) from a cached copy.
    (no_network / O200K_CACHE_KEY).write_bytes(packaged_file().read_bytes())
    reference = tiktoken.get_encoding("o200k_base")
    for text in SAMPLES:
        assert packaged.count(text) == len(reference.encode_ordinary(text)), text


def test_user_tiktoken_cache_is_tried_first(no_network: Path) -> None:
    files = candidate_files()
    assert files[0] == no_network / O200K_CACHE_KEY
    assert str(files[-1]).endswith("o200k_base.tiktoken")


def test_offline_load_skips_corrupt_user_cache_and_writes_nothing(no_network: Path) -> None:
    corrupt = no_network / O200K_CACHE_KEY
    corrupt.write_bytes(b"aGVsbG8= 0\n")
    tokenizer = load_tokenizer()
    assert (tokenizer.name, tokenizer.exact) == ("o200k_base", True)
    assert tokenizer.count("hello world") == 2
    assert list(no_network.iterdir()) == [corrupt]  # tiktoken's loader would add a cache copy
    assert corrupt.read_bytes() == b"aGVsbG8= 0\n"


def test_corrupt_file_falls_back_to_labelled_heuristic(tmp_path: Path) -> None:
    corrupt = tmp_path / "o200k_base.tiktoken"
    corrupt.write_bytes(packaged_file().read_bytes()[:-100])
    tokenizer = load_tokenizer([corrupt])
    assert isinstance(tokenizer, HeuristicTokenizer)
    assert (tokenizer.name, tokenizer.exact) == ("heuristic", False)
    assert "sha256 mismatch" in tokenizer.reason
    assert tokenizer.count("hello world") == 2


def test_missing_file_falls_back_to_labelled_heuristic(tmp_path: Path) -> None:
    tokenizer = load_tokenizer([tmp_path / "absent.tiktoken"])
    assert (tokenizer.name, tokenizer.exact) == ("heuristic", False)
    assert isinstance(tokenizer, HeuristicTokenizer)
    assert "absent.tiktoken: not found" in tokenizer.reason


def test_heuristic_is_close_on_prose_and_cjk(packaged: Tokenizer) -> None:
    heuristic = HeuristicTokenizer()
    texts = [
        "The ledger counts each response once, at its largest total, even when a transcript "
        "repeats the same message id on every content block of a streamed reply. " * 5,
        "这是一个测试。我们正在计算令牌的数量，看看启发式方法的效果如何。" * 5,
        '{"input_tokens": 1200, "output_tokens": 35, "model": "claude-sonnet-4-5"}\n' * 5,
    ]
    for text in texts:
        exact = packaged.count(text)
        assert abs(heuristic.count(text) - exact) <= 0.25 * exact, text[:30]
        assert abs(len(text) / 4 - exact) > abs(heuristic.count(text) - exact)


def test_tiny_encoding_works_through_the_protocol() -> None:
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"ab"] = 256
    ranks[b"abab"] = 257
    tiny = tiktoken.Encoding(
        name="tiny", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={}
    )
    tokenizer: Tokenizer = TiktokenTokenizer(tiny)
    assert (tokenizer.name, tokenizer.exact) == ("tiny", True)
    assert tokenizer.count("abab") == 1
    assert tokenizer.count("abab ab x") == 5  # abab, " ", ab, " ", x


def test_get_tokenizer_loads_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_load() -> Tokenizer:
        calls.append(1)
        return HeuristicTokenizer("fake")

    monkeypatch.setattr(tokens, "_tokenizer", None)
    monkeypatch.setattr(tokens, "load_tokenizer", fake_load)
    results: list[Tokenizer] = []
    threads = [threading.Thread(target=lambda: results.append(get_tokenizer())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)
