"""Run the fault-injection suite: SIGKILL ``mlib apply`` at N random points (see harness.py).

From the repository root, in the venv::

    python -m tests.faults.run --kills 50 --seed 1             # a summary; exit 1 on a violation
    python -m tests.faults.run --kills 50 --seed 1 --markdown  # + a section for docs/reliability.md

Everything happens in a temporary folder (``--keep DIR`` to keep it there instead), with a fake
HOME; the URL server listens on 127.0.0.1 only. ``pytest -m slow tests/faults`` runs a smaller
subset of the same code.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # scenario.py, servers.py

from .harness import apply_environment, isolated_environment, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.run", description=__doc__)
    parser.add_argument("--kills", type=int, default=50, help="killed applies (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill delays")
    parser.add_argument("--chain", type=int, default=10, help="transitions per fresh scenario")
    parser.add_argument("--markdown", action="store_true", help="print a docs section too")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("-q", "--quiet", action="store_true", help="no line per kill")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mlib-faults-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        apply_environment(isolated_environment(Path(tmp) / "home"))
        log = None if args.quiet else (lambda line: print(line, flush=True))
        summary = run(base / "work", kills=args.kills, seed=args.seed, chain=args.chain, log=log)
    print(summary.text())
    if args.markdown:
        command = f"python -m tests.faults.run --kills {args.kills} --seed {args.seed}"
        print()
        print(summary.markdown(command))
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
