"""The benchmark harness itself: shared timing helpers and the report writer (no timed assertions).

The figures belong in docs/performance.md, written by ``python benchmarks/report.py``; here only the
machinery is checked: rounds interleave cases and count them right, and a report is written from
made-up figures with every target judged and a well-formed SVG plot.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from benchmarks import report, timing


def test_rounds_warm_up_once_then_interleave() -> None:
    calls: list[str] = []
    cleaned: list[str] = []

    def case(name: str, value: int) -> timing.Case:
        def run() -> int:
            calls.append(name)
            return value

        return (name, run, (lambda: cleaned.append(name)) if name == "a" else None)

    cases = [case("a", 1), case("b", 2)]
    samples, results = timing.rounds(cases, 3, sync=False)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three
    assert cleaned == ["a"] * 4
    assert results == {"a": 1, "b": 2}
    figures = timing.summary(samples)
    assert set(figures) == {"a", "b"}
    assert len(figures["a"]["runs_s"]) == 3
    assert figures["a"]["best_s"] <= figures["a"]["median_s"]


def test_sha256_file_and_random_file(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "f.bin"
    timing.make_random_file(path, 3 * timing.MiB + 5)
    data = path.read_bytes()
    assert len(data) == 3 * timing.MiB + 5
    assert timing.sha256_file(path) == hashlib.sha256(data).hexdigest()


def _scale(n: int, apps: int) -> dict[str, Any]:
    k = n / 1000
    phases = {
        "load manifest": 0.001 * k,
        "observe library": 0.04 * k,
        "desire": 0.02 * k * apps,
        "observe links + index": 0.02 * k * apps,
        "plan": 0.01 * k,
        "total": 0.09 * k,
    }
    return {
        "n": n,
        "apps": apps,
        "links": n * apps,
        "runs": 3,
        "rebuild_s": 0.035 * k,
        "phases_s": phases,
        "manifest_full_read_s": 0.06 * k,
        "plan_full_s": 0.2 + 0.15 * k,
        "plan_s": 0.15 + 0.008 * k,
        "status_s": 0.15 + 0.008 * k,
        "status_full_s": 0.2 + 0.15 * k,
        "query_s": {"base": 0.0015 * k, "base+fp16": 0.0005 * k},
        "list_s": 0.2 + 0.07 * k,
        "list_root_s": 0.2,
    }


def _data(sizes: list[int]) -> dict[str, Any]:
    size = 256 * timing.MiB
    cases = {
        name: {"median_s": s, "best_s": s * 0.9, "cpu_s": s, "runs_s": [s, s]}
        for name, s in {
            "cp": 0.07,
            "cp + fsync": 0.19,
            "sha256sum": 0.75,
            "sha256 alone (hashlib)": 0.16,
            "b3sum": 0.04,
            "b3sum --num-threads 1": 0.06,
            "blake3 alone (py, 1 thread)": 0.06,
            "blake3 alone (py, mmap AUTO)": 0.04,
            "hash_file (dual)": 0.17,
            "mlib verify (api.verify)": 0.17,
            "python copy, no hashing": 0.2,
            "copy_and_hash": 0.25,
        }.items()
    }
    return {
        "quick": 100_000 not in sizes,
        "date": "2026-01-01 00:00 UTC",
        "took_s": 120.0,
        "load_before": [0.1, 0.2, 0.3],
        "load_after": [0.4, 0.5, 0.6],
        "machine": {"CPU": "test", "logical CPUs": "2"},
        "scale": [_scale(n, apps) for n in sizes for apps in (1, 3)],
        "hashing": {
            "size_bytes": size,
            "runs": 2,
            "b3sum": True,
            "cases": cases,
            "ratios": {
                "import / cp": 0.25 / 0.07,
                "import / cp + fsync": 0.25 / 0.19,
                "dual / sha256 alone": 0.17 / 0.16,
            },
            "load_before": 0.1,
            "load_after": 0.2,
            "failed_checks": [],
        },
        "download": {
            "size_bytes": size,
            "runs": 2,
            "cases": {
                name: {"median_s": s, "best_s": s, "cpu_s": s, "runs_s": [s]}
                for name, s in {
                    "curl -o FILE": 0.4,
                    "mlib download (hash + verify)": 0.6,
                    "sha256 alone (memory)": 0.16,
                }.items()
            },
            "ratio_throughput_vs_curl": 0.4 / 0.6,
            "resume_refetched_bytes": 0,
            "load_before": 0.1,
            "load_after": 0.2,
        },
    }


def test_report_judges_every_target() -> None:
    rows = report.targets(_data([1_000, 10_000, 100_000]))
    verdicts = {row[0]: row[4] for row in rows}
    assert len(rows) == 7  # plan and rebuild for 1 and 3 apps, import, dual hash, download
    assert verdicts["no-op `mlib plan`, 100k, 1 app, warm"].startswith("**met**")
    assert verdicts["import (copy_and_hash), 256 MiB"].startswith("**missed**")
    assert verdicts["loopback download, 256 MiB"].startswith("**missed**")
    assert all(row[5] for row in rows)  # every verdict says why


def test_quick_report_says_what_it_did_not_measure(tmp_path: Path) -> None:
    data = _data([1_000, 10_000])
    text = report.document(data, "performance.svg")
    assert "**quick** run" in text
    assert "not measured" in text
    assert "![time against N](performance.svg)" in text


def test_plot_is_well_formed_svg() -> None:
    svg = report.svg_plot(_data([1_000, 10_000, 100_000])["scale"])
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2 * len(report.PLOT_SERIES)  # one per measure and app count
