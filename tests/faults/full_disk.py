"""Run inside a private mount namespace (``unshare --user --map-root-user --mount``): a library
on a size-limited tmpfs that fills up during an apply, then grows, then the apply again.

``python full_disk.py CONFIG.json``: CONFIG names ``mlib`` (the console script), ``library`` (an
empty folder: the tmpfs is mounted on it), ``before`` and ``after`` (two manifests: the library
as it is, and the one that brings ``new_bytes`` more), ``margin`` (the tmpfs is resized to what
the library uses after ``before``, plus ``new_bytes``, plus ``margin``: negative fills up in
the middle of the new file), ``fill`` (true: the apply starts with room enough, and another
program fills the disk once it has begun writing) and ``out`` (where the results go, as JSON). The mount disappears
with the namespace when this ends, whatever happens.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TIMEOUT = 60
BIG = 256 << 20


def run(cfg: dict[str, Any], manifest: str, *args: str) -> dict[str, Any]:
    r = subprocess.run(
        [cfg["mlib"], "-m", manifest, *args],
        cwd=Path(manifest).parent,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return {"code": r.returncode, "out": r.stdout, "err": r.stderr}


def state(lib: Path) -> dict[str, Any]:
    """Files below the library (sha256), mlib's staging, model folders and indexed ids."""
    files: dict[str, str] = {}
    staging: dict[str, int] = {}
    for path in sorted(lib.rglob("*")):
        rel = path.relative_to(lib).as_posix()
        if not path.is_file() or path.is_symlink():
            continue
        if rel.startswith(".mlib/staging/"):
            staging[rel] = path.stat().st_size
        elif not rel.startswith((".mlib", "models.db")):
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    folders = sorted(
        p.relative_to(lib).as_posix()
        for p in lib.glob("*/*/*")
        if p.is_dir() and not p.relative_to(lib).as_posix().startswith(".mlib")
    )
    try:
        with sqlite3.connect(f"file:{lib / 'models.db'}?mode=ro", uri=True) as db:
            indexed: list[str] | str = sorted(r[0] for r in db.execute("SELECT id FROM models"))
    except sqlite3.Error as exc:
        indexed = f"unreadable: {exc}"
    return {"files": files, "staging": staging, "folders": folders, "indexed": indexed}


FILLER = "someone-elses-file.bin"


def run_and_fill(cfg: dict[str, Any], lib: Path) -> dict[str, Any]:
    """Apply ``after``; the moment a file in staging has bytes, another program fills the
    disk (the space check of the plan passed: the room goes while apply works)."""
    proc = subprocess.Popen(
        [cfg["mlib"], "-m", cfg["after"], "apply", "-y"],
        cwd=Path(cfg["after"]).parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    filled = False
    try:
        while proc.poll() is None and not filled:
            if _staging_has_bytes(lib / ".mlib" / "staging"):
                _fill(lib / FILLER)
                filled = True
            time.sleep(0.001)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return {"code": proc.returncode, "out": stdout, "err": stderr, "filled": filled}


def _staging_has_bytes(staging: Path) -> bool:
    try:
        return any(
            p.is_file() and p.stat().st_size > 0 and not p.name.endswith(".json")
            for p in staging.rglob("*")
        )
    except OSError:  # a folder renamed away while it was listed
        return False


def _fill(path: Path) -> None:
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        while True:  # the last pages
            try:
                fh.write(b"\0" * 4096)
            except OSError:
                break


def used(lib: Path) -> int:
    st = os.statvfs(lib)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def main(config: Path) -> None:
    cfg = json.loads(config.read_text())
    lib = Path(cfg["library"])
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={BIG}", "tmpfs", str(lib)], check=True)
    out: dict[str, Any] = {"first": run(cfg, cfg["before"], "apply", "-y")}
    out["before"] = state(lib)
    size = used(lib) + cfg["new_bytes"] + cfg["margin"]
    subprocess.run(["mount", "-o", f"remount,size={size}", str(lib)], check=True)
    out["size"] = size
    if cfg.get("fill"):
        out["full"] = run_and_fill(cfg, lib)
    else:
        out["full"] = run(cfg, cfg["after"], "apply", "-y")
    out["after_full"] = state(lib)
    (lib / FILLER).unlink(missing_ok=True)
    out["verify_full"] = run(cfg, cfg["after"], "verify")
    subprocess.run(["mount", "-o", f"remount,size={BIG}", str(lib)], check=True)
    out["again"] = run(cfg, cfg["after"], "apply", "-y")
    out["plan"] = run(cfg, cfg["after"], "plan", "--detailed-exitcode")
    out["verify"] = run(cfg, cfg["after"], "verify")
    out["final"] = state(lib)
    Path(cfg["out"]).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
