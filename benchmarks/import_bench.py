"""Hashing throughput: import (copy and hash) and verify against cp, sha256sum, b3sum, hashlib.

Usage: python benchmarks/import_bench.py [SIZE_MB] [--dir DIR] [--runs N] [--json PATH]

Writes a random file of SIZE_MB MiB (default 1024; 4096 for the 4 GiB figure) in a temporary folder
under DIR (default: the system temp folder), reads it once so it sits in the page cache, then
measures, each as the median of N rounds (default 3) after one unmeasured warm-up round (a round
runs every case once, so all of them see the same drift in the machine's load), all on that file:

- ``cp`` of the file, and ``cp`` followed by an fsync of the copy (copy_and_hash fsyncs, cp does
  not; both are shown so the ratio can be read either way);
- ``sha256sum`` (coreutils), and ``b3sum`` with its default threads and with one thread, when it
  is installed (Debian's ``b3sum`` package; the rows are left out otherwise);
- hashlib sha256 alone, a ``readinto`` loop over a 1 MiB buffer;
- blake3 alone (the Python package): ``update_mmap`` on one thread, and with ``max_threads=AUTO``;
- ``reconciler.hashing.hash_file`` (both hashes, one read): the dual hash;
- ``reconciler.api.verify`` of a one-model library whose file is a hard link to the test file
  (what ``mlib verify`` does per file: the dual hash, the comparison, the hash cache row);
- a plain Python copy loop: copy_and_hash without the hashing (a control: what reading,
  writing and fsyncing cost on this machine right now);
- ``reconciler.hashing.copy_and_hash`` (copy + both hashes, one read, fsync): an import.

"cpu s" is the median user + system CPU time of the run (children included): wall time well above
it means waiting (for the disk, or for a core another process holds).

``os.sync()`` runs before every measured run, so dirty pages of an earlier copy are not charged to
the next one. Every result is checked against the others (same digests, same bytes). The machine
may be shared: the load average is printed before and after; "best" shows the least disturbed run.
Everything the benchmark writes is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import blake3

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import (
    Case,
    MiB,
    make_random_file,
    rounds,
    sha256_file,
    summary,
    warm,
    write_json,
)
from reconciler import api
from reconciler.hashing import StreamingWriter, copy_and_hash, hash_file
from reconciler.metadata import dumps, metadata_to_dict
from reconciler.model import FileEntry, LocalSource, Metadata, ModelType

#: The cases the figures are read from (and the ratios between them).
CP, CP_FSYNC, SHA256SUM, SHA256 = "cp", "cp + fsync", "sha256sum", "sha256 alone (hashlib)"
B3SUM, B3SUM_1 = "b3sum", "b3sum --num-threads 1"
BLAKE3_1, BLAKE3_AUTO = "blake3 alone (py, 1 thread)", "blake3 alone (py, mmap AUTO)"
DUAL, VERIFY = "hash_file (dual)", "mlib verify (api.verify)"
PY_COPY, IMPORT = "python copy, no hashing", "copy_and_hash"


def blake3_alone(path: Path, threads: int = 1) -> str:
    h = blake3.blake3(max_threads=threads)
    h.update_mmap(path)
    return h.hexdigest()


def sha256sum(path: Path) -> str:
    out = subprocess.run(["sha256sum", "--", str(path)], check=True, capture_output=True, text=True)
    return out.stdout.split()[0]


def b3sum(path: Path, threads: int | None = None) -> str:
    args = ["b3sum", "--no-names"] + ([] if threads is None else [f"--num-threads={threads}"])
    out = subprocess.run([*args, "--", str(path)], check=True, capture_output=True, text=True)
    return out.stdout.split()[0]


def verify_library(work: Path, src: Path) -> Path:
    """A library of one model whose file is a hard link to ``src``, with its true hashes."""
    lib = work / "lib"
    folder = lib / "other" / "bench" / "model"
    folder.mkdir(parents=True)
    os.link(src, folder / "model.bin")
    got = hash_file(src)
    meta = Metadata(
        id="other/bench/model",
        official_name="model",
        cleaned_name="model",
        model_type=ModelType.OTHER,
        family="bench",
        kind="other",
        source=LocalSource(str(src)),
        files=(FileEntry("model.bin", got.size, got.sha256, got.blake3),),
        added_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
    )
    (folder / "metadata.json").write_bytes(dumps(metadata_to_dict(meta)))
    api.rebuild_index(lib)
    return lib


def run_verify(lib: Path) -> tuple[int, int]:
    result = api.verify(lib)
    if result.mismatches:
        raise SystemExit(f"import_bench: verify found {result.mismatches}")
    return result.checked_files, result.checked_bytes


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("size_mb", nargs="?", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp files")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    size = args.size_mb * MiB
    base = args.dir if args.dir is not None else Path(tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    if free < 2 * size + 512 * MiB:
        print(f"not enough room in {base}: need {2 * size + 512 * MiB} bytes, have {free}")
        return 1

    work = Path(tempfile.mkdtemp(prefix="mlib-import-bench-", dir=base))
    try:
        out = _run(work, size, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.json, out)
    return 1 if out["failed_checks"] else 0


def _run(work: Path, size: int, runs: int) -> dict[str, Any]:
    src = work / "model.bin"
    dest = work / "copy.bin"

    def drop_dest() -> None:
        dest.unlink(missing_ok=True)

    load_before = os.getloadavg()[0]
    print(f"file: {size // MiB} MiB random in {work} (page cache warm); cpus: {os.cpu_count()}")
    print(f"load average before: {load_before:.2f}")
    make_random_file(src, size)
    lib = verify_library(work, src)
    warm(src)

    have_b3sum = shutil.which("b3sum") is not None
    cases: list[Case] = [
        (CP, lambda: cp(src, dest, fsync=False), drop_dest),
        (CP_FSYNC, lambda: cp(src, dest, fsync=True), drop_dest),
        (SHA256SUM, lambda: sha256sum(src), None),
        (SHA256, lambda: sha256_file(src), None),
        *(
            [(B3SUM, lambda: b3sum(src), None), (B3SUM_1, lambda: b3sum(src, 1), None)]
            if have_b3sum
            else []
        ),
        (BLAKE3_1, lambda: blake3_alone(src), None),
        (BLAKE3_AUTO, lambda: blake3_alone(src, blake3.blake3.AUTO), None),
        (DUAL, lambda: hash_file(src), None),
        (VERIFY, lambda: run_verify(lib), None),
        (PY_COPY, lambda: python_copy(src, dest), drop_dest),
        (IMPORT, lambda: copy_and_hash(src, dest), drop_dest),
    ]
    samples, results = rounds(cases, runs)

    dual = hash_file(src)
    copied = copy_and_hash(src, dest)
    same_bytes = hash_file(dest) == dual
    drop_dest()
    checks = {
        "sha256sum = hashlib": results[SHA256SUM] == results[SHA256],
        "hash_file sha256 = hashlib": dual.sha256 == results[SHA256],
        "hash_file blake3 = blake3 (1 thread)": dual.blake3 == results[BLAKE3_1],
        "blake3 AUTO = blake3 (1 thread)": results[BLAKE3_AUTO] == results[BLAKE3_1],
        "copy_and_hash = hash_file": copied == dual,
        "copy has the same bytes": same_bytes,
        "verify read the file": results[VERIFY] == (1, size),
    }
    if have_b3sum:
        checks["b3sum = blake3"] = results[B3SUM] == results[B3SUM_1] == dual.blake3

    figures = summary(samples)
    gb = size / 1e9
    print(f"\n{'what':30} {'median s':>9} {'best s':>8} {'GB/s':>7} {'cpu s':>7}")
    for name, f in figures.items():
        med = f["median_s"]
        print(f"{name:30} {med:9.3f} {f['best_s']:8.3f} {gb / med:7.2f} {f['cpu_s']:7.3f}")

    def ratio(a: str, b: str) -> float:
        return float(figures[a]["median_s"] / figures[b]["median_s"])

    ratios = {
        "import / cp": ratio(IMPORT, CP),
        "import / cp + fsync": ratio(IMPORT, CP_FSYNC),
        "python copy / cp + fsync": ratio(PY_COPY, CP_FSYNC),
        "dual / sha256 alone": ratio(DUAL, SHA256),
        "verify / sha256sum": ratio(VERIFY, SHA256SUM),
        "verify / sha256 alone": ratio(VERIFY, SHA256),
        "sha256 alone / sha256sum": ratio(SHA256, SHA256SUM),
        "blake3 py 1 thread / sha256 alone": ratio(BLAKE3_1, SHA256),
    }
    if have_b3sum:
        ratios["blake3 py 1 thread / b3sum 1 thread"] = ratio(BLAKE3_1, B3SUM_1)
    two_pass = figures[SHA256]["median_s"] + figures[BLAKE3_1]["median_s"]
    ratios["dual / (sha256 + blake3 passes)"] = figures[DUAL]["median_s"] / two_pass
    print()
    for name, value in ratios.items():
        print(f"{name:38} {value:5.2f}x")
    load_after = os.getloadavg()[0]
    print(f"\nload average after: {load_after:.2f}")
    bad = [name for name, ok in checks.items() if not ok]
    print("checks: " + ("all passed" if not bad else "FAILED: " + ", ".join(bad)))
    return {
        "size_bytes": size,
        "runs": runs,
        "b3sum": have_b3sum,
        "cases": figures,
        "ratios": ratios,
        "load_before": load_before,
        "load_after": load_after,
        "failed_checks": bad,
    }


if __name__ == "__main__":
    sys.exit(main())
