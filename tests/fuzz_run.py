"""The published fuzz run: every target of tests/test_fuzz.py with many examples, one table.

    python tests/fuzz_run.py                    # 10 000 examples per target
    python tests/fuzz_run.py --examples 500 -k hub --markdown

Each target runs in its own ``pytest`` process (so one target's failure or slowness does not
hide another's) with ``MLIB_FUZZ_EXAMPLES`` set; the examples each really ran are counted by the
test module itself (``COUNTS``, written to ``MLIB_FUZZ_COUNTS``), the time is the test's own call
time from pytest's JUnit report. ``--markdown`` prints the table docs/reliability.md shows.
Exit status 1 when any target failed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FUZZ_FILE = HERE / "test_fuzz.py"


@dataclass(frozen=True)
class Result:
    test: str
    target: str
    examples: int
    failures: int
    seconds: float
    detail: str


def targets() -> list[tuple[str, str]]:
    """``(test function, target label)`` of every hypothesis target in test_fuzz.py, in order."""
    tree = ast.parse(FUZZ_FILE.read_text(encoding="utf-8"))
    out = []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_fuzz_")):
            continue
        for stmt in ast.walk(node):
            if (
                isinstance(stmt, ast.AugAssign)
                and isinstance(stmt.target, ast.Subscript)
                and isinstance(stmt.target.value, ast.Name)
                and stmt.target.value.id == "COUNTS"
                and isinstance(stmt.target.slice, ast.Constant)
            ):
                out.append((node.name, str(stmt.target.slice.value)))
                break
    return out


def run_one(test: str, target: str, examples: int, seed: int | None) -> Result:
    with tempfile.TemporaryDirectory(prefix="mlib-fuzz-") as tmp:
        counts, junit = Path(tmp) / "counts.json", Path(tmp) / "junit.xml"
        env = dict(os.environ, MLIB_FUZZ_EXAMPLES=str(examples), MLIB_FUZZ_COUNTS=str(counts))
        command = [
            sys.executable,
            "-m",
            "pytest",
            f"{FUZZ_FILE}::{test}",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
        ]
        if seed is not None:
            command.append(f"--hypothesis-seed={seed}")
        began = time.monotonic()
        proc = subprocess.run(
            command, cwd=HERE.parent, env=env, capture_output=True, text=True, check=False
        )
        wall = time.monotonic() - began
        ran = json.loads(counts.read_text()).get(target, 0) if counts.exists() else 0
        seconds, failures, detail = wall, 0, ""
        if junit.exists():
            case = ET.parse(junit).getroot().find(".//testcase")
            if case is not None:
                seconds = float(case.get("time", wall))
                failed = case.find("failure")
                if failed is None:
                    failed = case.find("error")
                if failed is not None:
                    message = failed.get("message", "")
                    failures = _distinct(message + (failed.text or ""))
                    detail = message.splitlines()[0][:160] if message else "failed"
        if proc.returncode not in (0, 1) and not failures:
            failures, detail = 1, f"pytest exited {proc.returncode}: {proc.stderr[-300:]}"
        return Result(test, target, ran, failures, seconds, detail)


def _distinct(text: str) -> int:
    """Failures hypothesis reported: ``N distinct failures`` in an ExceptionGroup, else 1."""
    marker = "distinct failures"
    if marker in text:
        before = text.split(marker, 1)[0].split()
        if before and before[-1].isdigit():
            return int(before[-1])
    return 1


def markdown(results: list[Result], examples: int, seed: int | None) -> str:
    import hypothesis

    lines = [
        f"Fuzz run: `python tests/fuzz_run.py --examples {examples}"
        + (f" --seed {seed}" if seed is not None else "")
        + "` on "
        + f"{platform.python_implementation()} {platform.python_version()}, "
        + f"hypothesis {hypothesis.__version__}, {time.strftime('%Y-%m-%d')}.",
        "",
        "| target | examples | failures | seconds |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.target} | {r.examples} | {r.failures} | {r.seconds:.1f} |")
    total = sum(r.examples for r in results)
    lines.append(
        f"| **all {len(results)} targets** | **{total}** | **{sum(r.failures for r in results)}**"
        f" | **{sum(r.seconds for r in results):.1f}** |"
    )
    failed = [r for r in results if r.failures]
    if failed:
        lines += ["", *[f"- {r.target}: {r.detail}" for r in failed]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="examples per target")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (reproducible)")
    parser.add_argument("-k", dest="only", default="", help="run targets whose name has this")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    results = []
    for test, target in targets():
        if args.only and args.only not in test and args.only not in target:
            continue
        result = run_one(test, target, args.examples, args.seed)
        results.append(result)
        state = "ok" if not result.failures else f"FAILED ({result.detail})"
        print(
            f"{target}: {result.examples} examples, {result.seconds:.1f} s, {state}",
            file=sys.stderr,
            flush=True,
        )
    if args.markdown:
        print(markdown(results, args.examples, args.seed))
    else:
        for r in results:
            print(f"{r.target}\t{r.examples}\t{r.failures}\t{r.seconds:.1f}")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
