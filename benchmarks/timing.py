"""What the benchmarks share: timing, rounds of interleaved cases, test files, the mlib command.

Every benchmark script prints its figures and, with ``--json PATH``, also writes them as JSON for
``benchmarks/report.py`` (which runs each script as a child process, so one measurement's memory
and garbage do not weigh on the next).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MiB = 1 << 20
#: Size of one ``os.urandom`` write when making a test file.
CHUNK = 64 * MiB

#: A case of :func:`rounds`: its name, what to time, and what to do after it (untimed) or None.
Case = tuple[str, Callable[[], object], Callable[[], None] | None]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call, and its result."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median_s(fn: Callable[[], Any], runs: int) -> tuple[float, list[float], Any]:
    """Median wall seconds of ``runs`` calls, every run's seconds, and the last result."""
    times = []
    result = None
    for _ in range(runs):
        took, result = timed(fn)
        times.append(took)
    return statistics.median(times), times, result


def median_ms(fn: Callable[[], Any], runs: int = 5) -> tuple[float, Any]:
    """Median wall time of ``runs`` calls in milliseconds, and the last result."""
    med, _, result = median_s(fn, runs)
    return med * 1000, result


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children so far."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def rounds(
    cases: Sequence[Case], runs: int, *, sync: bool = True
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, object]]:
    """One unmeasured warm-up round, then ``runs`` timed rounds of every case in turn.

    Rounds rather than one case after the other: on a shared machine the load drifts, and
    interleaving exposes every case to the same drift, which keeps the ratios honest. With
    ``sync``, ``os.sync()`` runs (untimed) before every case, so dirty pages an earlier case left
    are not charged to the next. Returns (wall seconds, CPU seconds) per run and case, and each
    case's last result.
    """
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases}
    results: dict[str, object] = {}
    for round_ in range(runs + 1):
        for name, fn, cleanup in cases:
            if sync:
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


def summary(samples: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, Any]]:
    """Per case: median and best wall seconds, median CPU seconds, and every run's wall seconds."""
    return {
        name: {
            "median_s": statistics.median(w for w, _ in runs),
            "best_s": min(w for w, _ in runs),
            "cpu_s": statistics.median(c for _, c in runs),
            "runs_s": [w for w, _ in runs],
        }
        for name, runs in samples.items()
    }


def make_random_file(path: Path, size: int) -> None:
    """``size`` random bytes in the new file ``path``, fsynced."""
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(CHUNK, left)
            fh.write(os.urandom(n))
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


def warm(path: Path) -> None:
    """Read ``path`` once, so that it sits in the page cache."""
    buf = bytearray(4 * MiB)
    with path.open("rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass


def sha256_file(path: Path) -> str:
    """hashlib sha256 of a file alone: a ``readinto`` loop over a 1 MiB buffer."""
    h = hashlib.sha256()
    buf = bytearray(MiB)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def mlib_script() -> str:
    """The ``mlib`` console script of this environment."""
    beside = Path(sys.executable).parent / "mlib"
    found = str(beside) if beside.exists() else shutil.which("mlib")
    if found is None:
        raise SystemExit("benchmarks: the 'mlib' console script is not installed")
    return found


def run_quiet(
    args: Sequence[str], *, ok: Sequence[int] = (0,), cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command (in ``cwd``), its output captured; fail unless it exits with one of ``ok``."""
    done = subprocess.run(list(args), capture_output=True, text=True, check=False, cwd=cwd)
    if done.returncode not in ok:
        raise SystemExit(
            f"benchmarks: {' '.join(args)} exited with {done.returncode}: {done.stderr[-2000:]}"
        )
    return done


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Write a benchmark's figures to ``path`` (nothing without one)."""
    if path is not None:
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """A plain-text table, columns right-aligned except the first."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(c) for c in cells)
        out = [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        return indent + "  ".join(out).rstrip()

    return "\n".join(line(r) for r in [header, *rows])
