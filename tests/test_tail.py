"""Tailer behaviour on real files: partial lines, truncation, rotation, deletion, junk."""

from __future__ import annotations

import errno
import itertools
import os
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentop.engine.tail import ReadResult, Tailer, TailState
from tokentop.sources import base


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def drain(tailer: Tailer) -> list[ReadResult]:
    """`read_new` until the file has no more (each result may carry reset/gone)."""
    results = [tailer.read_new()]
    while results[-1].more:
        results.append(tailer.read_new())
    return results


def joined(results: list[ReadResult]) -> bytes:
    return b"".join(result.data for result in results)


def test_partial_line_is_carried_until_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    tailer = Tailer(path)
    assert tailer.read_new().data == b'{"a":1}\n'
    assert tailer.state.offset == 8
    assert tailer.read_new().data == b""
    append(path, b"2}")
    assert tailer.read_new().data == b""
    assert tailer.pending_bytes == len(b'{"b":2}')
    append(path, b'\n{"c":3}\n')
    assert tailer.read_new() == ReadResult(data=b'{"b":2}\n{"c":3}\n')
    assert tailer.state.offset == path.stat().st_size


def test_many_appends_yield_every_line_once(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.touch()
    tailer = Tailer(path)
    got = bytearray()
    for i in range(300):
        append(path, f'{{"n":{i}}}\n'.encode())
        if i % 7 == 0:
            got += tailer.read_new().data
    got += tailer.read_new().data
    assert bytes(got) == path.read_bytes()


def test_persisted_state_resumes_and_rereads_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"one\ntw")
    first = Tailer(path)
    assert first.read_new().data == b"one\n"
    saved = msgspec.json.encode(first.state)
    append(path, b"o\n")
    second = Tailer(msgspec.json.decode(saved, type=TailState))
    assert second.read_new() == ReadResult(data=b"two\n")


def test_truncation_resets_and_rereads_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"aaaa\nbbbb\n")
    tailer = Tailer(path)
    tailer.read_new()
    path.write_bytes(b"c\n")
    result = tailer.read_new()
    assert result.reset and result.data == b"c\n"
    assert tailer.state.offset == 2
    append(path, b"d\n")
    assert tailer.read_new() == ReadResult(data=b"d\n")


def test_replacement_by_new_inode_resets(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"old line\n")
    tailer = Tailer(path)
    tailer.read_new()
    temp = tmp_path / "s.jsonl.tmp"
    temp.write_bytes(b"old line\nnew one\n")  # longer than before: only the inode tells
    os.replace(temp, path)
    result = tailer.read_new()
    assert result.reset
    assert result.data == b"old line\nnew one\n"


def test_deletion_is_gone_and_recreation_resets(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"x\npart")
    tailer = Tailer(path)
    tailer.read_new()
    path.unlink()
    gone = tailer.read_new()
    assert gone.gone and not gone.error and not gone.reset
    assert tailer.read_new().gone
    path.write_bytes(b"y\n")  # may reuse the old inode number: still a reset
    again = tailer.read_new()
    assert again.reset and again.data == b"y\n" and not again.gone


def test_never_existing_file_is_gone_without_error(tmp_path: Path) -> None:
    result = Tailer(tmp_path / "nope" / "s.jsonl").read_new()
    assert result.gone and result.error == ""


def test_directory_in_place_of_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.mkdir()
    result = Tailer(path).read_new()
    assert result.gone
    assert "not a regular file" in result.error


def test_fifo_in_place_of_file_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    os.mkfifo(path)
    result = Tailer(path).read_new()
    assert result.gone and "not a regular file" in result.error


def test_permission_denied_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"x\n")
    path.chmod(0)
    tmp_path.chmod(0o755)
    try:
        gone, error = _read_as_unprivileged(path) if os.geteuid() == 0 else _read(path)
    finally:
        path.chmod(0o600)
    assert gone
    assert "Permission denied" in error


def _read(path: Path) -> tuple[bool, str]:
    result = Tailer(path).read_new()
    return result.gone, result.error


def _read_as_unprivileged(path: Path) -> tuple[bool, str]:
    """Root reads any file, so read from a forked child that has dropped to `nobody`."""
    receive, send = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            gone, error = _read(path)
            os.write(send, f"{int(gone)}{error}".encode())
        finally:
            os._exit(0)
    os.close(send)
    with os.fdopen(receive, "rb") as pipe:
        reply = pipe.read().decode()
    os.waitpid(pid, 0)
    assert reply, "the unprivileged child reported nothing"
    return reply[0] == "1", reply[1:]


def test_open_failure_other_than_missing_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"x\n")
    tailer = Tailer(path)
    assert tailer.read_new().data == b"x\n"

    def denied(*_args: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("tokentop.engine.tail.os.open", denied)
    result = tailer.read_new()
    assert result.gone and result.error == f"cannot read {path}: Permission denied"
    monkeypatch.undo()
    append(path, b"y\n")
    assert tailer.read_new() == ReadResult(data=b"y\n")  # same inode: no reset


def test_overlong_partial_line_is_skipped_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "junk.bin"
    path.write_bytes(b"ok\n" + bytes(range(256)).replace(b"\n", b"") * 8)  # no newline, 2 KB
    tailer = Tailer(path)
    first = tailer.read_new()
    assert first.data == b"ok\n"
    assert first.skipped_lines == 1 and first.skipped_bytes == 255 * 8
    assert tailer.state.skipping and tailer.pending_bytes == 0
    assert tailer.read_new() == ReadResult()  # not re-read forever
    append(path, b"more junk\nnext\n")
    after = tailer.read_new()
    assert after.data == b"next\n"
    assert after.skipped_bytes == len(b"more junk\n") and after.skipped_lines == 0
    assert not tailer.state.skipping
    assert tailer.state.offset == path.stat().st_size


def test_overlong_line_grown_through_small_chunks_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "MAX_LINE_BYTES", 100)
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"a\n" + b"z" * 500 + b"\nb\n")
    results = drain(Tailer(path, max_bytes=30))
    assert joined(results) == b"a\nb\n"
    assert sum(r.skipped_lines for r in results) == 1
    assert sum(r.skipped_bytes for r in results) == 501


def test_ten_megabyte_line_is_handed_out_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = b'{"x":"' + b"y" * (10 * 1024 * 1024) + b'"}\n'
    path.write_bytes(b"first\n" + line[: len(line) // 2])
    tailer = Tailer(path)
    assert joined(drain(tailer)) == b"first\n"
    assert tailer.pending_bytes == len(line) // 2
    append(path, line[len(line) // 2 :])
    results = drain(tailer)
    assert [r.data for r in results if r.data] == [line]
    assert tailer.state.offset == path.stat().st_size


def test_small_max_bytes_gives_identical_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    content = b"".join(f'{{"i":{i},"pad":"{"p" * (i % 97)}"}}\n'.encode() for i in range(2000))
    path.write_bytes(content + b"tail-without-newline")
    results = drain(Tailer(path, max_bytes=4096))
    assert len(results) > 10
    assert all(r.more for r in results[:-1]) and not results[-1].more
    assert all(r.data.endswith(b"\n") for r in results if r.data)
    assert joined(results) == content


def test_unchanged_file_reads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"a\n")
    tailer = Tailer(path)
    tailer.read_new()
    assert tailer.read_new() == ReadResult()
    assert tailer.state.size_seen == 2


@settings(max_examples=150, deadline=None)
@given(
    content=st.binary(max_size=400).map(lambda b: b.replace(b"\r", b"\n")),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    max_bytes=st.integers(min_value=1, max_value=64),
)
def test_any_split_into_appends_yields_exactly_the_complete_lines(
    content: bytes, cuts: list[int], max_bytes: int
) -> None:
    bounds = sorted({0, len(content), *(min(c, len(content)) for c in cuts)})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.jsonl"
        path.touch()
        tailer = Tailer(path, max_bytes=max_bytes)
        pieces: list[bytes] = []
        for start, end in itertools.pairwise(bounds):
            append(path, content[start:end])
            results = drain(tailer)
            assert not any(r.reset or r.gone or r.error for r in results)
            pieces.extend(r.data for r in results)
    assert all(piece.endswith(b"\n") for piece in pieces if piece)
    assert b"".join(pieces) == content[: content.rfind(b"\n") + 1]
