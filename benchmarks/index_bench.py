"""Benchmark of models.db: rebuild and tag queries on a synthetic library, and `mlib --help`.

Usage: python benchmarks/index_bench.py N [--keep DIR] [--runs R]

Generates N models (benchmarks/synth.py) in a temporary folder under the system temp dir, or in DIR
with --keep (DIR is left in place afterwards). Generating 100k models is slow on a busy filesystem:
run ``--keep DIR`` once, then point ``--keep`` at the same DIR again to reuse the library it holds
(a kept library carries a ``.index-bench.json`` summary; without one, the summary is read back from
the metadata files). Then it measures:

- ``reconciler.api.rebuild_index`` 1 + R times (R = 1 by default): first right after generation
  (files in the page cache, index created; with a reused library, the index is replaced), then
  R more times (warm, index replaced; the table shows their median, the line above it each run);
- a one-tag and a two-tag ``reconciler.api.query`` (median of 5; full rows, as ``mlib list`` gets);
- the same tag filters straight in SQLite, through ``json_each(tags_json)`` and through the indexed
  ``model_tags`` table (ids only, median of 5);
- ``mlib --help`` as a subprocess (median of 5, after one unmeasured run).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.synth import VOCABULARY, make_library
from benchmarks.timing import median_ms, mlib_script, write_json
from reconciler import api
from reconciler.index import DB_NAME, Query
from reconciler.library import model_dirs
from reconciler.metadata import METADATA_FILE

ONE_TAG = ("base",)
TWO_TAGS = ("base", "fp16")
#: One condition per tag, as SQL over the models table: through JSON1, and through the side table.
JSON_EACH = "EXISTS (SELECT 1 FROM json_each(models.tags_json) WHERE value = ?)"
SIDE_TABLE = "id IN (SELECT model_id FROM model_tags WHERE tag = ?)"


def tag_sql(condition: str, count: int) -> str:
    return f"SELECT id FROM models WHERE {' AND '.join([condition] * count)} ORDER BY id"


def fetch_all(conn: sqlite3.Connection, text: str, args: tuple[str, ...]) -> list[Any]:
    return conn.execute(text, args).fetchall()


INFO_FILE = ".index-bench.json"


def generate(root: Path, n: int) -> tuple[dict[str, Any], str]:
    """A new library of ``n`` models in ``root``, and how long making it took."""
    started = time.perf_counter()
    info = make_library(root, n)
    took = f"generated in {time.perf_counter() - started:.2f} s"
    summary = {"n": n, "models": [{"id": m["id"], "tags": m["tags"]} for m in info["models"]]}
    (root / INFO_FILE).write_text(json.dumps(summary), encoding="utf-8")
    return info, took


def reuse(root: Path, n: int) -> tuple[dict[str, Any], str]:
    """The summary of a library an earlier run kept in ``root`` (it must hold ``n`` models)."""
    try:
        info: dict[str, Any] = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:  # kept before summaries were saved: read it back from the files
        models = []
        for model_id, folder in model_dirs(root):
            with open(os.path.join(folder, METADATA_FILE), encoding="utf-8") as fh:
                models.append({"id": model_id, "tags": json.load(fh)["tags"]})
        info = {"n": len(models), "models": models}
        (root / INFO_FILE).write_text(json.dumps(info), encoding="utf-8")
    if info["n"] != n:
        raise SystemExit(f"index_bench: {root} holds {info['n']} models, not {n}")
    return info, "reused"


def bench(root: Path, n: int, runs: int = 1, *, reused: bool = False) -> dict[str, Any]:
    info, how = reuse(root, n) if reused else generate(root, n)

    timings = []
    for _ in range(1 + runs):
        started = time.perf_counter()
        report = api.rebuild_index(root)
        timings.append(time.perf_counter() - started)
        if report.indexed != n or report.skipped:
            raise SystemExit(f"index_bench: indexed {report.indexed} of {n}: {report.skipped[:3]}")
    cold, warm = timings[0], statistics.median(timings[1:])

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
        f" {how}; models.db (+wal) {db_mb:.0f} MB;"
        f" tag '{ONE_TAG[0]}' matches {expected[ONE_TAG]} models,"
        f" '{' + '.join(TWO_TAGS)}' {expected[TWO_TAGS]}"
    )
    print("  rebuild runs s: " + " ".join(f"{t:.2f}" for t in timings))
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
    return {
        "n": n,
        "rebuild_runs_s": timings,
        "rebuild_cold_s": cold,
        "rebuild_warm_s": warm,
        "query_ms": {"+".join(t): ms for t, ms in query_ms.items()},
        "json_each_ms": {"+".join(t): ms for t, ms in json_each_ms.items()},
        "model_tags_ms": {"+".join(t): ms for t, ms in side_ms.items()},
        "help_ms": help_ms,
        "db_mb": db_mb,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("n", type=int, metavar="N", help="number of models to generate")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="generate in DIR (new or empty) and keep it; reuse the library an earlier --keep left",
    )
    parser.add_argument(
        "--runs", type=int, default=1, metavar="R", help="warm rebuilds to time (median shown)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("N must be at least 1")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.keep is not None:
        kept = args.keep.exists() and any(args.keep.iterdir())
        if kept and not (args.keep / DB_NAME).exists() and not (args.keep / INFO_FILE).exists():
            parser.error(f"{args.keep} is neither empty nor a library kept by this benchmark")
        args.keep.mkdir(parents=True, exist_ok=True)
        write_json(args.json, bench(args.keep, args.n, args.runs, reused=kept))
        return 0
    with tempfile.TemporaryDirectory(prefix="mlib-bench-") as tmp:
        write_json(args.json, bench(Path(tmp), args.n, args.runs))
    return 0


if __name__ == "__main__":
    os.environ.pop("MLIB_MANIFEST", None)
    sys.exit(main())
