"""Run every benchmark and write docs/performance.md (and the plot docs/performance.svg).

    python benchmarks/report.py            # the published run: 1k / 10k / 100k, 4 GiB, 2 GiB
    python benchmarks/report.py --quick    # a check that it all works: 1k / 10k, 256 MiB files

Each benchmark runs as a child process (``--json``), one after the other:

- ``plan_bench.py`` for every N and for one and three app targets: index rebuild, no-op plan,
  ``mlib status`` and list by tag (the scale grid);
- ``import_bench.py``: import (copy_and_hash) and ``mlib verify``'s hashing against ``cp``,
  ``sha256sum``, ``b3sum`` (when installed) and hashlib sha256 / blake3 alone, on one file;
- ``download_bench.py``: loopback download against ``curl``.

Then it writes the document: the machine, the targets of issue 7 (met or missed, by how much and
why), a table per measurement with ratios, and a log-scale plot of time against N drawn as SVG by
this script (no plotting library). ``--keep-json DIR`` keeps the benchmarks' JSON; ``--from-json
DIR`` writes the document from JSON kept earlier without running anything. Temporary data lives
under the system temp folder and is deleted by each benchmark.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GiB = 1 << 30

#: Issue 7's targets.
PLAN_TARGET_S = 1.5
REBUILD_TARGET_S = 4.0
IMPORT_TARGET = 1.3  # x cp, at most
DUAL_TARGET = 0.90  # of sha256 alone's throughput, at least
DOWNLOAD_TARGET = 0.80  # of curl's throughput, at least
TARGET_N = 100_000


# --- running -----------------------------------------------------------------------------------


def run_bench(script: str, args: Sequence[str], out: Path) -> Any:
    """Run ``benchmarks/<script>`` with ``--json out``; its output goes to ours as it comes."""
    argv = [sys.executable, str(HERE / script), *args, "--json", str(out)]
    print(f"\n$ {' '.join(argv[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(argv, check=True, cwd=REPO)
    print(f"({script} took {time.perf_counter() - started:.0f} s)", flush=True)
    return json.loads(out.read_text(encoding="utf-8"))


def run_all(quick: bool, results: Path) -> dict[str, Any]:
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    load_before = os.getloadavg()
    started = time.perf_counter()
    scale: list[dict[str, Any]] = []
    for n in sizes:
        # one library per N, measured with 1 app target, then linked into 2 more; at 100k a plan
        # computed in full takes ~20 s: once is enough (the targets are the replayed plan and the
        # rebuild, timed 5 and 3 times there too)
        full_runs = 1 if n >= 100_000 else 3
        args = [str(n), "--apps", "1", "3", "--runs", "3", "--full-runs", str(full_runs)]
        scale.extend(run_bench("plan_bench.py", args, results / f"scale-{n}.json"))
    hashing = run_bench(
        "import_bench.py",
        ["256" if quick else "4096", "--runs", "2" if quick else "3"],
        results / "hashing.json",
    )
    download = run_bench(
        "download_bench.py",
        ["256" if quick else "2048", "--runs", "2" if quick else "3"],
        results / "download.json",
    )
    return {
        "quick": quick,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "took_s": time.perf_counter() - started,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "machine": machine(),
        "scale": scale,
        "hashing": hashing,
        "download": download,
    }


# --- the machine -------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _first_line(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else "?"


def filesystem_of(path: str) -> str:
    """Type and device of the mount that holds ``path`` (the longest matching mount point)."""
    real = os.path.realpath(path)
    best = ("", "?", "?")
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        device, point, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype, device)
    return f"{best[1]} ({best[2]} on {best[0]})"


def machine() -> dict[str, str]:
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "?",
    )
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    mem_kb = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if "MemTotal" in line
        ),
        0,
    )
    os_name = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in _read("/etc/os-release").splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        platform.system(),
    )
    tmp = tempfile.gettempdir()
    return {
        "CPU": model,
        "logical CPUs": str(os.cpu_count()),
        "SHA extensions (sha_ni)": "yes" if " sha_ni" in flags else "no",
        "RAM": f"{mem_kb / (1 << 20):.1f} GiB",
        "temp dir": f"{tmp}: {filesystem_of(tmp)}",
        "OS": os_name,
        "kernel": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OpenSSL (hashlib)": ssl.OPENSSL_VERSION,
        "SQLite": sqlite3.sqlite_version,
        "blake3 (Python)": importlib.metadata.version("blake3"),
        "sha256sum": _first_line(["sha256sum", "--version"]),
        "b3sum": _first_line(["b3sum", "--version"]),
        "curl": " ".join(_first_line(["curl", "--version"]).split()[:2]),
    }


# --- the document ------------------------------------------------------------------------------


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_n(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, numbers: bool = True) -> str:
    """A Markdown table; with ``numbers``, every column but the first is right-aligned."""
    align = ["---"] + ["--:" if numbers else "---"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def verdict(ok: bool, margin: str) -> str:
    return f"**met** ({margin})" if ok else f"**missed** ({margin})"


def targets(data: dict[str, Any]) -> list[list[str]]:
    """The rows of the targets table: what, target, measured, ratio to target, verdict, why."""
    rows: list[list[str]] = []
    at_target = [s for s in data["scale"] if s["n"] == TARGET_N]
    if not at_target:
        largest = max(s["n"] for s in data["scale"])
        for what, target in (
            ("no-op plan, 100k, warm", f"<= {PLAN_TARGET_S} s"),
            ("index rebuild, 100k, warm", f"<= {REBUILD_TARGET_S} s"),
        ):
            rows.append(
                [what, target, "not measured", "-", "-", f"quick run: largest N is {largest:,}"]
            )
    for s in at_target:
        apps = f"{s['apps']} app{'s' if s['apps'] > 1 else ''}"
        plan, full = s["plan_s"], s["plan_full_s"]
        ok = plan <= PLAN_TARGET_S
        rows.append(
            [
                f"no-op `mlib plan`, 100k, {apps}, warm",
                f"<= {PLAN_TARGET_S} s",
                fmt_s(plan),
                f"{plan / PLAN_TARGET_S:.2f}x",
                verdict(ok, f"{abs(PLAN_TARGET_S - plan):.2f} s {'under' if ok else 'over'}"),
                "replayed from the plan cache (nothing changed since the last plan); computed in "
                f"full (after any change) it takes {fmt_s(full)}, "
                f"{full / PLAN_TARGET_S:.1f}x the target" + ("" if ok else "; " + _why_plan(s)),
            ]
        )
    for s in at_target:
        apps = f"{s['apps']} app{'s' if s['apps'] > 1 else ''}"
        rebuild = s["rebuild_s"]
        ok = rebuild <= REBUILD_TARGET_S
        rows.append(
            [
                f"index rebuild, 100k, {apps}, warm",
                f"<= {REBUILD_TARGET_S} s",
                fmt_s(rebuild),
                f"{rebuild / REBUILD_TARGET_S:.2f}x",
                verdict(ok, f"{abs(REBUILD_TARGET_S - rebuild):.2f} s {'under' if ok else 'over'}"),
                f"reads 100k metadata.json and carries {s['links']:,} link rows over"
                + (
                    ""
                    if ok
                    else "; parsing the JSON and inserting the rows run on one core, and the link "
                    "rows add to it with every app target"
                ),
            ]
        )
    h = data["hashing"]
    c, r = h["cases"], h["ratios"]
    # cp + fsync does all that cp does: when cp measured slower, something else slowed it (the
    # page cache making room for a second 4 GiB), and the lower figure is the fair baseline.
    cp, cp_sync = c["cp"]["median_s"], c["cp + fsync"]["median_s"]
    base = min(cp, cp_sync)
    imp = c["copy_and_hash"]["median_s"] / base
    ok = imp <= IMPORT_TARGET
    sha_vs_cp = c["sha256 alone (hashlib)"]["median_s"] / base
    odd = (
        f"; `cp` measured slower than `cp` + fsync in this run ({fmt_s(cp)} against "
        f"{fmt_s(cp_sync)}), which is not the work itself, so the lower one is taken as `cp`"
        if cp_sync < cp
        else ""
    )
    why = (
        f"against `cp` + fsync (the same durability) it is {r['import / cp + fsync']:.2f}x{odd}"
        if ok
        else (
            "an import must compute sha256, which is sequential (one core): sha256 alone takes "
            f"{sha_vs_cp:.2f}x `cp`'s time on this CPU, a floor no hashing copy can beat, and "
            "copy_and_hash also fsyncs, which `cp` does not; against `cp` + fsync (the same "
            f"durability) it is {r['import / cp + fsync']:.2f}x{odd}"
        )
    )
    rows.append(
        [
            f"import (copy_and_hash), {h['size_bytes'] // (1 << 20)} MiB",
            f"<= {IMPORT_TARGET}x cp",
            fmt_s(c["copy_and_hash"]["median_s"]),
            f"{imp:.2f}x cp",
            verdict(
                ok, f"{abs(imp - IMPORT_TARGET) / IMPORT_TARGET:.0%} {'under' if ok else 'over'}"
            ),
            why,
        ]
    )
    dual = 1 / r["dual / sha256 alone"]
    ok = dual >= DUAL_TARGET
    two = c["hash_file (dual)"]["cpu_s"]
    why = (
        "sha256 on a worker thread, blake3 on the reading thread: they overlap on two cores"
        if ok
        else (
            "sha256 runs on a worker thread and blake3 on the reading thread; they overlap only "
            f"when a second core is free (the dual hash used {two:.2f} s of CPU for "
            f"{c['hash_file (dual)']['median_s']:.2f} s of wall time; load average "
            f"{h['load_before']:.1f} before, {h['load_after']:.1f} after)"
        )
    )
    rows.append(
        [
            "dual hash (sha256 + blake3, one pass)",
            f">= {DUAL_TARGET:.0%} of sha256 alone",
            fmt_s(c["hash_file (dual)"]["median_s"]),
            f"{dual:.0%} of sha256 alone",
            verdict(ok, f"{abs(dual - DUAL_TARGET) * 100:.0f} points {'above' if ok else 'below'}"),
            why,
        ]
    )
    d = data["download"]
    ratio = d["ratio_throughput_vs_curl"]
    ok = ratio >= DOWNLOAD_TARGET
    dc = d["cases"]
    why = (
        "mlib hashes sha256 + blake3 on the way, checks the size and sha256, fsyncs and renames; "
        "curl only writes"
    )
    if not ok:
        size = d["size_bytes"]
        sha_gbs = size / dc["sha256 alone (memory)"]["median_s"] / 1e9
        curl_gbs = size / dc["curl -o FILE"]["median_s"] / 1e9
        why += (
            f"; sha256 alone from memory runs at {sha_gbs:.2f} GB/s here against curl's "
            f"{curl_gbs:.2f} GB/s: on loopback the hashing, not the network, bounds mlib"
        )
    rows.append(
        [
            f"loopback download, {d['size_bytes'] // (1 << 20)} MiB",
            f">= {DOWNLOAD_TARGET:.0%} of curl",
            fmt_s(dc["mlib download (hash + verify)"]["median_s"]),
            f"{ratio:.0%} of curl",
            verdict(
                ok, f"{abs(ratio - DOWNLOAD_TARGET) * 100:.0f} points {'above' if ok else 'below'}"
            ),
            why,
        ]
    )
    note = busy_note(data)
    if note:
        for row in rows:
            if row[4].startswith("**missed**"):
                row[5] += "; " + note
    return rows


def busy_note(data: dict[str, Any]) -> str:
    """A word on the machine's load when other work ran beside the benchmarks."""
    cpus = int(data["machine"].get("logical CPUs") or os.cpu_count() or 1)
    peak = max(data["load_before"][0], data["load_after"][0], data["load_before"][1])
    if peak <= 0.5 * cpus:
        return ""
    return (
        f"other work ran on the machine meanwhile (load average up to {peak:.1f} on {cpus} "
        "logical CPUs): rerun on a quiet machine before reading much into a near miss"
    )


def _why_plan(s: dict[str, Any]) -> str:
    phases = s["phases_s"]
    slowest = max((k for k in phases if k != "total"), key=lambda k: phases[k])
    return (
        "a replayed plan still stats every path the plan was made from (each model's folder and "
        f"files, the app folders holding the {s['links']:,} links), in forked workers, one per "
        "CPU: it grows with N and the links and needs the cores free (the slowest phase of a full "
        f"plan is {slowest}, {fmt_s(phases[slowest])})"
    )


def scale_tables(scale: list[dict[str, Any]]) -> str:
    header = [
        "N",
        "apps",
        "links",
        "index rebuild",
        "`mlib plan` replayed",
        "`mlib plan` full",
        "`mlib status` replayed",
        "`mlib status` full",
        "`mlib list --tag` (-m)",
        "`mlib list --tag` (--root)",
        "api.query 1 tag",
    ]
    rows = [
        [
            f"{s['n']:,}",
            str(s["apps"]),
            f"{s['links']:,}",
            fmt_s(s["rebuild_s"]),
            fmt_s(s["plan_s"]),
            fmt_s(s["plan_full_s"]),
            fmt_s(s["status_s"]),
            fmt_s(s["status_full_s"]),
            fmt_s(s["list_s"]),
            fmt_s(s["list_root_s"]),
            fmt_s(s["query_s"]["base"]),
        ]
        for s in scale
    ]
    out = [md_table(header, rows), ""]

    # per model, and growth from one N to the next (10x the models: 10x would be linear)
    out.append(
        "Per 1,000 models, and growth from the previous N (N grows 10x each step: 10x is linear, "
        "less means a fixed cost such as starting Python weighs in):"
    )
    out.append("")
    keys = [
        ("rebuild_s", "index rebuild"),
        ("plan_s", "plan replayed"),
        ("plan_full_s", "plan full"),
        ("status_s", "status replayed"),
        ("list_s", "list --tag (-m)"),
    ]
    header2 = ["N", "apps"] + [f"{label} per 1k (growth)" for _, label in keys]
    rows2 = []
    by = {(s["n"], s["apps"]): s for s in scale}
    for s in scale:
        prev = by.get((s["n"] // 10, s["apps"]))
        cells = [f"{s['n']:,}", str(s["apps"])]
        for key, _ in keys:
            per = s[key] / (s["n"] / 1000)
            growth = f" ({s[key] / prev[key]:.1f}x)" if prev else ""
            cells.append(f"{per * 1000:.1f} ms{growth}")
        rows2.append(cells)
    out.append(md_table(header2, rows2))
    out.append("")
    out.append("A no-op plan computed in full, in process, by phase (seconds):")
    out.append("")
    names = list(scale[0]["phases_s"])
    header3 = ["N", "apps", *names, "manifest, full read (after an edit)"]
    rows3 = [
        [f"{s['n']:,}", str(s["apps"])]
        + [f"{s['phases_s'][k]:.3f}" for k in names]
        + [f"{s['manifest_full_read_s']:.3f}"]
        for s in scale
    ]
    out.append(md_table(header3, rows3))
    return "\n".join(out)


def observations(scale: list[dict[str, Any]]) -> str:
    """What the scale figures say at the largest N, in words."""
    top = max(s["n"] for s in scale)
    lines = [f"At {top:,} models:", ""]
    for s in (s for s in scale if s["n"] == top):
        apps = f"{s['apps']} app target{'s' if s['apps'] > 1 else ''}"
        extra = s["plan_full_s"] - s["phases_s"]["total"]
        lines.append(
            f"- {apps}: `mlib list --tag` takes {fmt_s(s['list_s'])} with the manifest against "
            f"{fmt_s(s['list_root_s'])} with `--root` alone (the manifest as remembered since the "
            f"last plan; read afresh after an edit it costs {fmt_s(s['manifest_full_read_s'])} "
            "more). A plan computed in full takes "
            f"{fmt_s(s['phases_s']['total'])} in process and {fmt_s(s['plan_full_s'])} as a "
            f"command, {fmt_s(extra)} more: starting Python and the work around the plan "
            "(keeping it in the plan cache, which makes the next one a replay at "
            f"{fmt_s(s['plan_s'])}, among others), not broken down here."
        )
    return "\n".join(lines)


def hashing_table(h: dict[str, Any]) -> str:
    c = h["cases"]
    size = h["size_bytes"]
    ref = {
        "cp": c["cp"]["median_s"],
        "sha256sum": c["sha256sum"]["median_s"],
        "sha256": c["sha256 alone (hashlib)"]["median_s"],
    }
    rows = []
    for name, f in c.items():
        med = f["median_s"]
        rows.append(
            [
                name,
                f"{med:.3f}",
                f"{f['best_s']:.3f}",
                f"{size / med / 1e9:.2f}",
                f"{f['cpu_s']:.3f}",
                f"{med / ref['cp']:.2f}x",
                f"{med / ref['sha256sum']:.2f}x",
                f"{med / ref['sha256']:.2f}x",
            ]
        )
    header = [
        "what",
        "median s",
        "best s",
        "GB/s",
        "CPU s",
        "time vs cp",
        "time vs sha256sum",
        "time vs sha256 alone",
    ]
    lines = [md_table(header, rows), ""]
    if not h["b3sum"]:
        lines.append(
            "`b3sum` was not installed (Debian: `apt-get install b3sum`): the blake3 reference is "
            "the `blake3` Python package on one thread."
        )
        lines.append("")
    sha_ratio = ref["sha256sum"] / ref["sha256"]
    if sha_ratio > 1.5:
        lines.append(
            f"`sha256sum` is {sha_ratio:.1f}x slower than hashlib's sha256 here: this build of "
            "coreutils does not use the CPU's SHA extensions, OpenSSL (behind hashlib) does. "
            "hashlib sha256 alone is the fair single-core reference."
        )
        lines.append("")
    lines.append("Ratios (time over time; below 1 is faster):")
    lines.append("")
    lines.append(md_table(["ratio", "value"], [[k, f"{v:.2f}x"] for k, v in h["ratios"].items()]))
    return "\n".join(lines)


def download_table(d: dict[str, Any]) -> str:
    c = d["cases"]
    size = d["size_bytes"]
    curl = c["curl -o FILE"]["median_s"]
    rows = [
        [
            name,
            f"{f['median_s']:.3f}",
            f"{f['best_s']:.3f}",
            f"{size / f['median_s'] / 1e9:.2f}",
            f"{curl / f['median_s']:.0%}",
        ]
        for name, f in c.items()
    ]
    return md_table(["what", "median s", "best s", "GB/s", "throughput vs curl"], rows)


# --- the plot ----------------------------------------------------------------------------------


PLOT_SERIES = [
    ("rebuild_s", "index rebuild", "#1f77b4"),
    ("plan_s", "mlib plan, replayed", "#d62728"),
    ("plan_full_s", "mlib plan, full", "#ff7f0e"),
    ("status_s", "mlib status, replayed", "#2ca02c"),
    ("list_s", "mlib list --tag (-m)", "#9467bd"),
]


def svg_plot(scale: list[dict[str, Any]]) -> str:
    """Seconds against N, both on log scales; solid lines one app target, dashed three."""
    import math

    width, height = 760, 440
    left, right, top, bottom = 70, 210, 30, 50
    ns = sorted({s["n"] for s in scale})
    values = [s[k] for s in scale for k, _, _ in PLOT_SERIES] + [PLAN_TARGET_S, REBUILD_TARGET_S]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    x_lo, x_hi = math.log10(ns[0]), math.log10(ns[-1])
    x_span = (x_hi - x_lo) or 1.0

    def x(n: float) -> float:
        return left + (math.log10(n) - x_lo) / x_span * (width - left - right)

    def y(v: float) -> float:
        frac = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return height - bottom - frac * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">mlib at scale: seconds (log) against models '
        "(log), warm</text>",
    ]
    decade = lo
    while decade <= hi * 1.0001:
        yy = y(decade)
        parts.append(
            f'<line x1="{left}" y1="{yy:.1f}" x2="{width - right}" y2="{yy:.1f}" stroke="#ddd"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{decade:g} s</text>')
        decade *= 10
    for n in ns:
        xx = x(n)
        parts.append(
            f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{height - bottom}" stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{xx:.1f}" y="{height - bottom + 18}" text-anchor="middle">{fmt_n(n)}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 12}" text-anchor="middle">'
        "models (N)</text>"
    )
    for value, label in (
        (PLAN_TARGET_S, "plan target at 100k:"),
        (REBUILD_TARGET_S, "rebuild target at 100k:"),
    ):
        yy = y(value)
        parts.append(
            f'<line x1="{left}" y1="{yy:.1f}" x2="{width - right}" y2="{yy:.1f}" '
            'stroke="#888" stroke-dasharray="2,3"/>'
        )
        parts.append(
            f'<text x="{left + 6}" y="{yy - 4:.1f}" fill="#666">{label} {value:g} s</text>'
        )
    legend_y = top + 10
    for key, label, color in PLOT_SERIES:
        for apps, dash in ((1, ""), (3, ' stroke-dasharray="6,4"')):
            points = sorted((s["n"], s[key]) for s in scale if s["apps"] == apps)
            if not points:
                continue
            path = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>'
            )
            for n, v in points:
                parts.append(f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"/>')
        lx = width - right + 15
        parts.append(
            f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 24}" y2="{legend_y}" stroke="{color}" '
            'stroke-width="2"/>'
        )
        parts.append(f'<text x="{lx + 30}" y="{legend_y + 4}">{label}</text>')
        legend_y += 20
    lx = width - right + 15
    parts.append(
        f'<line x1="{lx}" y1="{legend_y + 6}" x2="{lx + 24}" y2="{legend_y + 6}" stroke="#333" '
        'stroke-width="2"/>'
    )
    parts.append(f'<text x="{lx + 30}" y="{legend_y + 10}">1 app target</text>')
    parts.append(
        f'<line x1="{lx}" y1="{legend_y + 26}" x2="{lx + 24}" y2="{legend_y + 26}" stroke="#333" '
        'stroke-width="2" stroke-dasharray="6,4"/>'
    )
    parts.append(f'<text x="{lx + 30}" y="{legend_y + 30}">3 app targets</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def document(data: dict[str, Any], plot_name: str) -> str:
    m = data["machine"]
    kind = (
        "a **quick** run (`--quick`: 1k and 10k models, 256 MiB files): a check that the "
        "benchmarks work, not the published figures"
        if data["quick"]
        else "a full run"
    )
    lb, la = data["load_before"], data["load_after"]
    h, d = data["hashing"], data["download"]
    lines = [
        "# Performance",
        "",
        "<!-- Written by benchmarks/report.py: edit the script, not this file. -->",
        "",
        "Regenerate with `python benchmarks/report.py` (`--quick` checks that it works in a "
        "few minutes; `b3sum` comes from Debian's package of that name and is left out when "
        "missing). Measured on "
        f"{data['date']} by {kind}, which took {data['took_s'] / 60:.1f} minutes. Load average "
        f"(1/5/15 min) {lb[0]:.2f} / {lb[1]:.2f} / {lb[2]:.2f} before, "
        f"{la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} after: figures taken while other work ran "
        "on the machine are noisy, ratios between cases measured in the same rounds less so.",
        "",
        "## The machine",
        "",
        md_table(["", ""], [[k, v] for k, v in m.items()], numbers=False),
        "",
        "## Targets (issue 7)",
        "",
        md_table(
            ["what", "target", "measured", "ratio", "verdict", "why"], targets(data), numbers=False
        ),
        "",
        "## Scale: 1 and 3 app targets",
        "",
        "The state `mlib apply` leaves (`benchmarks/plan_bench.py`): N local-source models of 5 "
        "tags each in the manifest and the library, metadata.json + overrides.json + a 1-byte "
        "file per model, models.db, one symlink per model and app target. Everything is warm (in "
        "the page cache). *Replayed*: nothing changed since the last plan, so the plan comes from "
        "the plan cache; *full*: the plan cache removed first, as after any change. `mlib` rows "
        "are whole commands (starting Python included); the index rebuild and api.query are in "
        "process. Medians of 3 runs (replayed commands: 5); plans computed in full and full "
        "reads of the manifest: 3 runs, 1 at 100k. `list --tag (-m)` loads the manifest (as "
        "`mlib list` does wherever an mlib.yaml is found), remembered in the library's cache "
        "since the last plan while its text is unchanged; `--root` skips it.",
        "",
        f"![time against N]({plot_name})",
        "",
        scale_tables(data["scale"]),
        "",
        observations(data["scale"]),
        "",
        "## Hashing: import and verify",
        "",
        f"One {h['size_bytes'] // (1 << 20)} MiB random file in the page cache "
        "(`benchmarks/import_bench.py`), every case in the same rounds (one warm-up, then the "
        f"median of {h['runs']}), `os.sync()` before each. *copy_and_hash* is an import (copy, "
        "sha256 + blake3 from one read, fsync); *hash_file* is the dual hash; *mlib verify* is "
        "`api.verify` of a one-model library holding that file (a hard link). `cp` does not "
        "fsync; `cp + fsync` does, as an import must.",
        "",
        hashing_table(h),
        "",
        "## Download: loopback against curl",
        "",
        f"A {d['size_bytes'] // (1 << 20)} MiB file served from 127.0.0.1 with `sendfile` "
        f"(`benchmarks/download_bench.py`, median of {d['runs']} rounds after a warm-up). mlib "
        "hashes sha256 + blake3 on the way, checks size and sha256, fsyncs and renames; curl only "
        "writes the file. A resumed download (cut half-way by the server) fetched "
        f"{d['resume_refetched_bytes']:,} bytes again.",
        "",
        download_table(d),
        "",
        "## Method",
        "",
        "- Every figure is a wall-clock median; the benchmarks also print every run and the "
        "best one.",
        "- Cases compared in a ratio run in interleaved rounds, so that a change in the "
        "machine's load hits all of them alike.",
        "- Each benchmark checks its own results (empty plans, tag counts, identical digests and "
        "bytes); a failed check fails the run.",
        "- Temporary data lives under the system temp folder and is deleted; the download server "
        "listens on 127.0.0.1 only and is stopped.",
        "- Tests make no timed assertions: the figures are here, not in CI.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k/10k and 256 MiB files only")
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "performance.md", help="the document to write"
    )
    parser.add_argument("--keep-json", type=Path, metavar="DIR", help="keep the raw JSON here")
    parser.add_argument(
        "--from-json", type=Path, metavar="DIR", help="write the document from JSON kept earlier"
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        data = json.loads((args.from_json / "report.json").read_text(encoding="utf-8"))
    else:
        with tempfile.TemporaryDirectory(prefix="mlib-report-") as tmp:
            results = Path(tmp)
            data = run_all(args.quick, results)
            if args.keep_json is not None:
                args.keep_json.mkdir(parents=True, exist_ok=True)
                for path in results.glob("*.json"):
                    shutil.copy(path, args.keep_json / path.name)
                (args.keep_json / "report.json").write_text(json.dumps(data, indent=1))
    plot = args.out.with_suffix(".svg")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot.write_text(svg_plot(data["scale"]), encoding="utf-8")
    args.out.write_text(document(data, plot.name), encoding="utf-8")
    print(f"\nwrote {args.out} and {plot} ({data['took_s'] / 60:.1f} min of benchmarks)")
    failed = data["hashing"]["failed_checks"]
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.pop("MLIB_MANIFEST", None)
    sys.exit(main())
