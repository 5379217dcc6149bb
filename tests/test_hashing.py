"""hash_file and copy_and_hash on real files: digests, copies, progress and change detection."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
import sys
from pathlib import Path

import blake3
import pytest

from reconciler import hashing
from reconciler.errors import FileChangedError
from reconciler.hashing import BUFFER_SIZE, POOL_SIZE, FileHashes, copy_and_hash, hash_file

SIZES = {
    "empty": 0,
    "one byte": 1,
    "one buffer less one": BUFFER_SIZE - 1,
    "exactly one buffer": BUFFER_SIZE,
    "one buffer and one byte": BUFFER_SIZE + 1,
    "a full pool and a bit": POOL_SIZE * BUFFER_SIZE + 7,
    "a few MB": 5 * 1024 * 1024 + 12345,
}


def _data(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def _expected(data: bytes) -> FileHashes:
    return FileHashes(len(data), hashlib.sha256(data).hexdigest(), blake3.blake3(data).hexdigest())


def _umasked(mode: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_hash_file_matches_hashlib_and_blake3(tmp_path: Path, size: int) -> None:
    data = _data(size)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    done: list[int] = []

    assert hash_file(path, done.append) == _expected(data)
    assert sum(done) == size
    assert all(0 < n <= BUFFER_SIZE for n in done)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_copy_and_hash_copies_exactly_and_hashes_the_bytes(tmp_path: Path, size: int) -> None:
    data = _data(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    os.chmod(src, 0o600)
    dest = tmp_path / "dest.tmp"
    done: list[int] = []

    assert copy_and_hash(src, dest, done.append) == _expected(data)
    assert dest.read_bytes() == data
    assert sum(done) == size
    assert stat.S_IMODE(dest.stat().st_mode) == _umasked(0o644)  # content only, not the mode
    assert src.read_bytes() == data


def test_digests_are_lowercase_hex(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    got = hash_file(path)
    assert got.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert got.blake3 == "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


def test_a_file_that_grows_while_hashed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "growing.bin"
    path.write_bytes(_data(3 * BUFFER_SIZE))

    def append(n: int) -> None:
        with path.open("ab") as fh:
            fh.write(b"more")

    with pytest.raises(FileChangedError, match=r"growing\.bin"):
        hash_file(path, append)


def test_a_file_that_grows_by_a_little_at_the_end_is_refused(tmp_path: Path) -> None:
    # the extra bytes arrive after the last read: only the stat after the read can tell
    path = tmp_path / "small.bin"
    path.write_bytes(b"x" * 10)
    calls = 0

    def append_once(n: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            with path.open("ab") as fh:
                fh.write(b"y")

    with pytest.raises(FileChangedError):
        hash_file(path, append_once)


def test_a_file_modified_in_place_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edited.bin"
    path.write_bytes(_data(2 * BUFFER_SIZE))
    st = path.stat()

    def touch(n: int) -> None:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    with pytest.raises(FileChangedError, match="modified"):
        hash_file(path, touch)


def test_a_file_replaced_while_hashed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "replaced.bin"
    path.write_bytes(_data(2 * BUFFER_SIZE))
    other = tmp_path / "other.bin"
    other.write_bytes(b"new")

    def replace(n: int) -> None:
        if other.exists():
            os.replace(other, path)

    with pytest.raises(FileChangedError, match="replaced"):
        hash_file(path, replace)


def test_copy_of_a_growing_file_is_refused_and_leaves_no_dest(tmp_path: Path) -> None:
    src = tmp_path / "growing.bin"
    src.write_bytes(_data(3 * BUFFER_SIZE))
    dest = tmp_path / "dest.tmp"

    def append(n: int) -> None:
        with src.open("ab") as fh:
            fh.write(b"more")

    with pytest.raises(FileChangedError):
        copy_and_hash(src, dest, append)
    assert not dest.exists()


def test_copy_never_overwrites_dest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"new")
    dest = tmp_path / "dest"
    dest.write_bytes(b"keep me")

    with pytest.raises(FileExistsError):
        copy_and_hash(src, dest)
    assert dest.read_bytes() == b"keep me"


def test_errors_of_the_os_come_through_as_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        hash_file(tmp_path)
    with pytest.raises(FileNotFoundError):
        copy_and_hash(tmp_path / "missing", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        hash_file(fifo)


def test_an_error_in_progress_stops_the_worker_and_comes_through(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(_data(3 * BUFFER_SIZE))

    def boom(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hash_file(path, boom)
    dest = tmp_path / "dest"
    with pytest.raises(KeyboardInterrupt):
        copy_and_hash(path, dest, boom)
    assert not dest.exists()


def test_copy_streams_to_disk_on_the_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # stream after every buffer, so writeback, waiting and dropping all run on a small file
    monkeypatch.setattr(hashing, "WRITEBACK_EVERY", BUFFER_SIZE)
    data = _data(7 * BUFFER_SIZE + 3)
    src = tmp_path / "src"
    src.write_bytes(data)
    dest = tmp_path / "dest"

    assert copy_and_hash(src, dest) == _expected(data)
    assert dest.read_bytes() == data
    if sys.platform.startswith("linux"):
        assert hashing._sync_file_range() is not None


@pytest.mark.parametrize("failure", [errno.ENOSYS, errno.EIO])
def test_sync_file_range_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: int
) -> None:
    """Fault injection at the syscall: missing support turns streaming off; a write error fails
    the copy (fsync would not report it a second time)."""
    calls: list[int] = []

    def sync_range(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append(flags)
        return failure

    monkeypatch.setattr(hashing, "_sync_file_range", lambda: sync_range)
    monkeypatch.setattr(hashing, "WRITEBACK_EVERY", BUFFER_SIZE)
    data = _data(4 * BUFFER_SIZE)
    src = tmp_path / "src"
    src.write_bytes(data)
    dest = tmp_path / "dest"

    if failure == errno.EIO:
        with pytest.raises(OSError) as info:
            copy_and_hash(src, dest)
        assert info.value.errno == errno.EIO
        assert not dest.exists()
    else:
        assert copy_and_hash(src, dest) == _expected(data)
        assert dest.read_bytes() == data
    assert len(calls) == 1  # no second try either way
