"""Benchmark of importing a model file: copy and hash against cp, sha256sum and single hashes.

Usage: python benchmarks/import_bench.py [SIZE_MB] [--dir DIR] [--runs N]

Writes a random file of SIZE_MB MiB (default 1024; 4096 for the 4 GiB figure) in a temporary folder
under DIR (default: the system temp folder), reads it once so it sits in the page cache, then
measures, each as the median of N rounds (default 3) after one unmeasured warm-up round (a round
runs every case once, so all of them see the same drift in the machine's load):

- ``cp`` of the file, and ``cp`` followed by an fsync of the copy (copy_and_hash fsyncs, cp does
  not; both are shown so the ratio can be read either way);
- ``sha256sum`` (coreutils);
- hashlib sha256 alone, a ``readinto`` loop over a 1 MiB buffer;
- blake3 alone, ``update_mmap`` with ``max_threads=AUTO``;
- ``reconciler.hashing.hash_file`` (both hashes, one read);
- a plain Python copy loop: copy_and_hash without the hashing (a control: what reading,
  writing and fsyncing cost on this machine right now);
- ``reconciler.hashing.copy_and_hash`` (copy + both hashes, one read, fsync).

"cpu s" is the median user + system CPU time of the run (children included): wall time well above
it means waiting (for the disk, or for a core another process holds).

``os.sync()`` runs before every measured run, so dirty pages of an earlier copy are not charged to
the next one. Every result is checked against the others (same digests, same bytes). The machine
may be shared: the load average is printed before and after; "best" shows the least disturbed run.
Everything the benchmark writes is deleted at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.hashing import StreamingWriter, copy_and_hash, hash_file

MiB = 1 << 20
CHUNK = 64 * MiB


def make_random_file(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(CHUNK, left)
            fh.write(os.urandom(n))
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


def warm(path: Path) -> None:
    buf = bytearray(4 * MiB)
    with path.open("rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass


def sha256_alone(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(MiB)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def blake3_alone(path: Path) -> str:
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    h.update_mmap(path)
    return h.hexdigest()


def sha256sum(path: Path) -> str:
    out = subprocess.run(["sha256sum", "--", str(path)], check=True, capture_output=True, text=True)
    return out.stdout.split()[0]


def python_copy(src: Path, dest: Path) -> None:
    """copy_and_hash without the hashing: the same reads, writes (streamed to disk) and fsync."""
    buf = bytearray(MiB)
    view = memoryview(buf)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        writer = StreamingWriter(fd)
        with src.open("rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                writer.write(view[:n])
        os.fsync(fd)
    finally:
        os.close(fd)


def cp(src: Path, dest: Path, fsync: bool) -> None:
    subprocess.run(["cp", "--", str(src), str(dest)], check=True)
    if fsync:
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children so far."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(
    cases: list[tuple[str, Callable[[], object], Callable[[], None] | None]], runs: int
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, object]]:
    """One unmeasured warm-up round, then ``runs`` timed rounds of every case in turn.

    Rounds rather than one case after the other: on a shared machine the load drifts, and
    interleaving exposes every case to the same drift, which keeps the ratios honest. Returns
    (wall seconds, CPU seconds) per run and case.
    """
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases}
    results: dict[str, object] = {}
    for round_ in range(runs + 1):
        for name, fn, cleanup in cases:
            os.sync()
            cpu = cpu_seconds()
            start = time.perf_counter()
            results[name] = fn()
            elapsed = time.perf_counter() - start
            cpu = cpu_seconds() - cpu
            if cleanup is not None:
                cleanup()
            if round_:
                samples[name].append((elapsed, cpu))
    return samples, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size_mb", nargs="?", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp files")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement")
    args = parser.parse_args(argv)
    size = args.size_mb * MiB
    base = args.dir if args.dir is not None else Path(tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    if free < 2 * size + 512 * MiB:
        print(f"not enough room in {base}: need {2 * size + 512 * MiB} bytes, have {free}")
        return 1

    work = Path(tempfile.mkdtemp(prefix="mlib-import-bench-", dir=base))
    try:
        return _run(work, size, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, size: int, runs: int) -> int:
    src = work / "model.bin"
    dest = work / "copy.bin"

    def drop_dest() -> None:
        dest.unlink(missing_ok=True)

    print(f"file: {size // MiB} MiB random in {work} (page cache warm); cpus: {os.cpu_count()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    make_random_file(src, size)
    warm(src)

    cases: list[tuple[str, Callable[[], object], Callable[[], None] | None]] = [
        ("cp", lambda: cp(src, dest, fsync=False), drop_dest),
        ("cp + fsync", lambda: cp(src, dest, fsync=True), drop_dest),
        ("sha256sum", lambda: sha256sum(src), None),
        ("sha256 alone (hashlib)", lambda: sha256_alone(src), None),
        ("blake3 alone (mmap, AUTO)", lambda: blake3_alone(src), None),
        ("hash_file (dual)", lambda: hash_file(src), None),
        ("python copy, no hashing", lambda: python_copy(src, dest), drop_dest),
        ("copy_and_hash", lambda: copy_and_hash(src, dest), drop_dest),
    ]
    samples, results = measure(cases, runs)

    dual = hash_file(src)
    copied = copy_and_hash(src, dest)
    same_bytes = hash_file(dest) == dual
    drop_dest()
    checks = {
        "sha256sum = hashlib": results["sha256sum"] == results["sha256 alone (hashlib)"],
        "hash_file sha256 = hashlib": dual.sha256 == results["sha256 alone (hashlib)"],
        "hash_file blake3 = blake3 mmap": dual.blake3 == results["blake3 alone (mmap, AUTO)"],
        "copy_and_hash = hash_file": copied == dual,
        "copy has the same bytes": same_bytes,
    }

    rows = {name: [wall for wall, _ in runs_] for name, runs_ in samples.items()}
    gb = size / 1e9
    print(f"\n{'what':28} {'median s':>9} {'best s':>8} {'GB/s':>7} {'cpu s':>7}")
    for name, runs_ in samples.items():
        med = statistics.median(rows[name])
        cpu = statistics.median(c for _, c in runs_)
        print(f"{name:28} {med:9.3f} {min(rows[name]):8.3f} {gb / med:7.2f} {cpu:7.3f}")

    def ratio(a: str, b: str) -> str:
        med = statistics.median(rows[a]) / statistics.median(rows[b])
        best = min(rows[a]) / min(rows[b])
        return f"{med:5.2f}x (best {best:.2f}x)"

    two_pass = statistics.median(rows["sha256 alone (hashlib)"]) + statistics.median(
        rows["blake3 alone (mmap, AUTO)"]
    )
    print()
    print(f"copy_and_hash / cp           {ratio('copy_and_hash', 'cp')}")
    print(f"copy_and_hash / cp + fsync   {ratio('copy_and_hash', 'cp + fsync')}")
    print(f"hash_file / sha256 alone     {ratio('hash_file (dual)', 'sha256 alone (hashlib)')}")
    print(
        "hash_file / (sha256 + blake3 passes) "
        f"{statistics.median(rows['hash_file (dual)']) / two_pass:5.2f}x"
    )
    print(f"copy_and_hash / sha256 alone {ratio('copy_and_hash', 'sha256 alone (hashlib)')}")
    print(f"sha256 alone / cp            {ratio('sha256 alone (hashlib)', 'cp')}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    bad = [name for name, ok in checks.items() if not ok]
    print("checks: " + ("all passed" if not bad else "FAILED: " + ", ".join(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
