"""Benchmark of models.db: rebuild and tag queries on a synthetic library, and `mlib --help`.

Usage: python benchmarks/index_bench.py N [--keep DIR]

Generates N models (benchmarks/synth.py) in a temporary folder under the system temp dir, or in DIR
with --keep (DIR is left in place afterwards), then measures:

- ``reconciler.api.rebuild_index`` twice: first right after generation (files in the page cache,
  index created), then again (warm, index replaced);
- a one-tag and a two-tag ``reconciler.api.query`` (median of 5; full rows, as ``mlib list`` gets);
- the same tag filters straight in SQLite, through ``json_each(tags_json)`` and through the indexed
  ``model_tags`` table (ids only, median of 5);
- ``mlib --help`` as a subprocess (median of 5, after one unmeasured run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.synth import VOCABULARY, make_library
from reconciler import api
from reconciler.index import DB_NAME, Query

RUNS = 5
ONE_TAG = ("base",)
TWO_TAGS = ("base", "fp16")
#: One condition per tag, as SQL over the models table: through JSON1, and through the side table.
JSON_EACH = "EXISTS (SELECT 1 FROM json_each(models.tags_json) WHERE value = ?)"
SIDE_TABLE = "id IN (SELECT model_id FROM model_tags WHERE tag = ?)"


def tag_sql(condition: str, count: int) -> str:
    return f"SELECT id FROM models WHERE {' AND '.join([condition] * count)} ORDER BY id"


def median_ms(fn: Callable[[], Any], runs: int = RUNS) -> tuple[float, Any]:
    """Median wall time of ``runs`` calls in milliseconds, and the last result."""
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, result


def fetch_all(conn: sqlite3.Connection, text: str, args: tuple[str, ...]) -> list[Any]:
    return conn.execute(text, args).fetchall()


def mlib_script() -> str:
    beside = Path(sys.executable).parent / "mlib"
    found = str(beside) if beside.exists() else shutil.which("mlib")
    if found is None:
        raise SystemExit("index_bench: the 'mlib' console script is not installed")
    return found


def bench(root: Path, n: int) -> None:
    started = time.perf_counter()
    info = make_library(root, n)
    generated = time.perf_counter() - started

    timings = []
    for _ in range(2):
        started = time.perf_counter()
        report = api.rebuild_index(root)
        timings.append(time.perf_counter() - started)
        if report.indexed != n or report.skipped:
            raise SystemExit(f"index_bench: indexed {report.indexed} of {n}: {report.skipped[:3]}")
    cold, warm = timings

    expected = {
        tags: sum(set(tags) <= set(m["tags"]) for m in info["models"])
        for tags in (ONE_TAG, TWO_TAGS)
    }
    query_ms: dict[tuple[str, ...], float] = {}
    for tags in (ONE_TAG, TWO_TAGS):
        ms, rows = median_ms(partial(api.query, root, Query(tags=tags)))
        if len(rows) != expected[tags]:
            raise SystemExit(f"index_bench: query {tags} gave {len(rows)}, not {expected[tags]}")
        query_ms[tags] = ms

    json_each_ms: dict[tuple[str, ...], float] = {}
    side_ms: dict[tuple[str, ...], float] = {}
    conn = sqlite3.connect(root / DB_NAME)
    try:
        for tags in (ONE_TAG, TWO_TAGS):
            for template, out in ((JSON_EACH, json_each_ms), (SIDE_TABLE, side_ms)):
                text = tag_sql(template, len(tags))
                ms, ids = median_ms(partial(fetch_all, conn, text, tags))
                if len(ids) != expected[tags]:
                    raise SystemExit(f"index_bench: {text!r} gave {len(ids)} rows")
                out[tags] = ms
    finally:
        conn.close()

    script = mlib_script()
    subprocess.run([script, "--help"], check=True, capture_output=True)  # not measured
    help_ms, _ = median_ms(
        lambda: subprocess.run([script, "--help"], check=True, capture_output=True)
    )
    db_mb = sum(f.stat().st_size for f in root.iterdir() if f.name.startswith(DB_NAME)) / 1_000_000

    print(f"mlib index benchmark: {root}")
    print(
        f"  {n} models, {len(info['models'][0]['tags'])} tags each from {len(VOCABULARY)};"
        f" generated in {generated:.2f} s; models.db (+wal) {db_mb:.0f} MB;"
        f" tag '{ONE_TAG[0]}' matches {expected[ONE_TAG]} models,"
        f" '{' + '.join(TWO_TAGS)}' {expected[TWO_TAGS]}"
    )
    header = (
        "N",
        "rebuild s (cold / warm)",
        "rows/s (warm)",
        "tag query ms (1 tag / 2 tags)",
        "json_each ms (1 / 2)",
        "model_tags ms (1 / 2)",
        "--help ms",
    )
    values = (
        str(n),
        f"{cold:.2f} / {warm:.2f}",
        f"{n / warm:,.0f}",
        f"{query_ms[ONE_TAG]:.1f} / {query_ms[TWO_TAGS]:.1f}",
        f"{json_each_ms[ONE_TAG]:.1f} / {json_each_ms[TWO_TAGS]:.1f}",
        f"{side_ms[ONE_TAG]:.1f} / {side_ms[TWO_TAGS]:.1f}",
        f"{help_ms:.0f}",
    )
    widths = [max(len(h), len(v)) for h, v in zip(header, values, strict=True)]
    for line in (header, values):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("n", type=int, metavar="N", help="number of models to generate")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="generate in DIR (new or empty) and keep it"
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("N must be at least 1")
    if args.keep is not None:
        if args.keep.exists() and any(args.keep.iterdir()):
            parser.error(f"{args.keep} is not empty")
        args.keep.mkdir(parents=True, exist_ok=True)
        bench(args.keep, args.n)
        return 0
    with tempfile.TemporaryDirectory(prefix="mlib-bench-") as tmp:
        bench(Path(tmp), args.n)
    return 0


if __name__ == "__main__":
    os.environ.pop("MLIB_MANIFEST", None)
    sys.exit(main())
