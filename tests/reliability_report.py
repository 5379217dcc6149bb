"""Run the suites that prove DESIGN §6 and write docs/reliability.md from what they report.

    python tests/reliability_report.py            # the published run (about 25 minutes)
    python tests/reliability_report.py --quick    # a check that it all works (a few minutes)

From the repository root, in the venv. One after the other, each in its own process:

- the fault-injection runner (``python -m tests.faults.run``): ``--kills`` SIGKILLs of
  ``mlib apply`` at random points, each followed by a re-apply that must converge;
- the fault tests (``tests/faults/test_faults.py``: ENOSPC, two applies at once, server faults,
  the kills that found bugs), the security tests (``tests/test_security.py``) and the crash
  tests of the other issues (``tests/test_crash.py``), through pytest with a JUnit report: one
  row per test, with what it proves (its docstring's first sentence, else its name);
- the published fuzz run (``tests/fuzz_run.py``): ``--examples`` hypothesis examples per target.

The document says when and where it was made, and every failure in full. Exit status 1 when
anything failed (the document is written all the same: a failure is a finding to publish, not
to hide). Everything runs in temporary folders with a fake HOME; servers listen on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOC = REPO / "docs" / "reliability.md"

#: The pytest suites shown test by test: (title, file).
SUITES = (
    ("Fault tests (CI subset of the faults, and the faults each bug was found with)",
     "tests/faults/test_faults.py"),
    ("Crash tests (SIGKILL during imports, downloads and adoption)", "tests/test_crash.py"),
    ("Security tests", "tests/test_security.py"),
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str  # the test function, with its parameters' id when there are some
    outcome: str  # passed, failed, skipped, xfailed
    seconds: float
    detail: str  # the failure's message, or the skip's reason


@dataclass(frozen=True)
class Section:
    title: str
    command: str
    seconds: float
    failed: bool
    markdown: str


def run(command: list[str], title: str) -> tuple[subprocess.CompletedProcess[str], float]:
    print(f"\n$ {' '.join(command)}", file=sys.stderr, flush=True)
    began = time.monotonic()
    proc = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, check=False, env=_environment()
    )
    seconds = time.monotonic() - began
    print(f"{title}: exit {proc.returncode} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return proc, seconds


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def faults(kills: int, seed: int) -> Section:
    command = [sys.executable, "-m", "tests.faults.run", "--kills", str(kills)]
    command += ["--seed", str(seed), "--markdown", "-q"]
    proc, seconds = run(command, "fault injection")
    text = proc.stdout
    start = text.find("## Fault injection")
    if start < 0 or proc.returncode not in (0, 1):
        body = f"The runner did not finish (exit {proc.returncode}):\n\n```\n{_tail(proc)}\n```\n"
        return Section("Fault injection", _shown(command), seconds, True, body)
    summary = text[:start].strip()
    body = text[start:].split("\n", 1)[1].strip() + "\n"
    if proc.returncode:
        body += f"\nViolations, as the runner printed them:\n\n```\n{summary}\n```\n"
    return Section(
        "Fault injection: SIGKILL of `mlib apply`", "", seconds, proc.returncode != 0, body
    )


def fuzz(examples: int, seed: int) -> Section:
    command = [sys.executable, "tests/fuzz_run.py", "--examples", str(examples)]
    command += ["--seed", str(seed), "--markdown"]
    proc, seconds = run(command, "fuzzing")
    if "| target |" not in proc.stdout:
        body = f"The fuzz run did not finish (exit {proc.returncode}):\n\n```\n{_tail(proc)}\n```\n"
        return Section("Fuzzing", _shown(command), seconds, True, body)
    intro = (
        "Hypothesis generates each input below, valid and broken; the project's own parsing and "
        "checking must answer every one with its clean error (one line naming the file, field "
        "and fix) or accept it, and never raise anything else. Each target runs in its own "
        "pytest process; *examples* counts the inputs that really ran.\n\n"
    )
    return Section("Fuzzing", "", seconds, proc.returncode != 0, intro + proc.stdout.strip() + "\n")


def suite(title: str, path: str) -> Section:
    with tempfile.TemporaryDirectory(prefix="mlib-reliability-") as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", path, "-q", "-p", "no:cacheprovider"]
        proc, seconds = run([*command, f"--junitxml={junit}"], title)
        cases = _cases(junit) if junit.exists() else []
    if not cases:
        body = f"pytest reported nothing (exit {proc.returncode}):\n\n```\n{_tail(proc)}\n```\n"
        return Section(title, _shown(command), seconds, True, body)
    proves = _docstrings(REPO / path)
    counts: dict[str, int] = {}
    grouped: dict[str, list[Case]] = {}
    for c in cases:
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
        grouped.setdefault(c.name.split("[", 1)[0], []).append(c)
    found = sum(1 for name in grouped if proves.get(name, "").startswith("Found"))
    lines = [
        ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        + f" ({len(grouped)} tests, counting each parameter set once) in {seconds:.0f} s."
        + (
            f" {found} of the tests record a bug the suites found (their row starts with "
            "*Found*); each is fixed: its test passes."
            if found
            else ""
        ),
        "",
        "| test | what it shows | cases | result |",
        "|---|---|--:|---|",
    ]
    for name, group in grouped.items():
        shown = proves.get(name) or name.removeprefix("test_").replace("_", " ")
        outcomes = sorted({c.outcome for c in group})
        result = ", ".join(o if o == "passed" else f"**{o}**" for o in outcomes)
        lines.append(f"| `{name}` | {_cell(shown)} | {len(group)} | {result} |")
    problems = [c for c in cases if c.outcome not in ("passed", "skipped")]
    for c in problems:
        lines += ["", f"`{c.name}` {c.outcome}:", "", "```", c.detail.strip()[:2000], "```"]
    failed = proc.returncode != 0 or any(c.outcome == "failed" for c in cases)
    return Section(title, _shown(command), seconds, failed, "\n".join(lines) + "\n")


def _cases(junit: Path) -> list[Case]:
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, detail = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                outcome = name
                detail = (found.get("message") or "") + "\n" + (found.text or "")
                if tag == "skipped" and found.get("type") == "pytest.xfail":
                    outcome = "xfailed"
                break
        out.append(Case(case.get("name", "?"), outcome, float(case.get("time", 0)), detail))
    return out


def _docstrings(path: Path) -> dict[str, str]:
    """The first sentence of each test function's docstring in ``path``, on one line (a bug's
    story, "Found by ...: what went wrong.", is kept whole up to its full stop)."""
    out = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            doc = ast.get_docstring(node)
            if doc:
                text = " ".join(doc.split()).replace("``", "`")
                match = re.match(r"(.+?\.)(\s|$)", text)
                out[node.name] = match.group(1) if match else text
    return out


def _shown(command: list[str]) -> str:
    return " ".join(["python", *command[1:]])


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    return (proc.stdout[-1500:] + "\n" + proc.stderr[-1500:]).strip()


def document(sections: list[Section], began: datetime, seconds: float, quick: bool) -> str:
    kind = "a **quick** run (`--quick`): a check that the suites work, not the published figures"
    kind = kind if quick else "the published run"
    verdict = [
        f"| {s.title.split(':')[0].split(' (')[0]} | {'**failed**' if s.failed else 'passed'} "
        f"| {s.seconds:.0f} s |"
        for s in sections
    ]
    lines = [
        "# Reliability",
        "",
        "<!-- Written by tests/reliability_report.py: edit the script, not this file. -->",
        "",
        "What this page proves is DESIGN.md §6: an apply killed at any point converges on the "
        "next one, no partial model folder is ever visible, nothing mlib did not create is "
        "changed or deleted, every download is verified before it is installed, and bad input "
        "gets one clean error. Regenerate it with `python tests/reliability_report.py` "
        "(`--quick` for a short check).",
        "",
        f"Made on {began:%Y-%m-%d %H:%M} UTC by {kind}, in {seconds / 60:.1f} minutes, on "
        f"{os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
        f"{platform.python_implementation()} {platform.python_version()}.",
        "",
        "| suite | result | time |",
        "|---|---|---|",
        *verdict,
        "",
    ]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.command:
            lines += [f"`{s.command}`", ""]
        lines += [s.markdown]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 kills, 300 examples per target")
    parser.add_argument("--kills", type=int, help="killed applies (default 60; quick 6)")
    parser.add_argument("--examples", type=int, help="per fuzz target (default 10000; quick 300)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kills and the fuzzing")
    parser.add_argument("--out", type=Path, default=DOC, help="where to write the document")
    args = parser.parse_args(argv)
    kills = args.kills if args.kills is not None else (6 if args.quick else 60)
    examples = args.examples if args.examples is not None else (300 if args.quick else 10_000)
    if kills < 1 or examples < 1:
        parser.error("--kills and --examples must be at least 1")
    began, start = datetime.now(UTC), time.monotonic()
    sections = [faults(kills, args.seed)]
    sections += [suite(title, path) for title, path in SUITES]
    sections.append(fuzz(examples, args.seed))
    text = document(sections, began, time.monotonic() - start, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, args.out)
    failed = [s.title for s in sections if s.failed]
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
