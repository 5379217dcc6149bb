"""``mlib doctor``: what this machine and library root can and cannot do (reads only).

The symlink probe writes one link inside ``<root>/.mlib/`` (mlib's own folder) and removes it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from reconciler.index import json1_available

DISTRIBUTION = "mlib"


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"
    WARN = "warn"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    #: What ``pip install`` needs to fix a missing dependency (the requirement string).
    install: str | None = None


def dependency_checks(requirements: list[str] | None = None) -> list[Check]:
    """Each base requirement of the package against what is installed."""
    if requirements is None:
        try:
            requirements = metadata.requires(DISTRIBUTION) or []
        except metadata.PackageNotFoundError:
            return [Check(DISTRIBUTION, Status.WARN, "not installed as a package; skipped")]
    checks = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra (e.g. [test]) or another platform's requirement
        spec = str(req.specifier) or "any version"
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            checks.append(Check(req.name, Status.MISSING, f"not installed (needs {spec})", text))
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            checks.append(
                Check(req.name, Status.MISSING, f"{installed} installed, needs {spec}", text)
            )
        else:
            checks.append(Check(req.name, Status.OK, f"{installed} ({spec})"))
    return checks


def sqlite_check() -> Check:
    if json1_available():
        return Check("sqlite json1", Status.OK, "available")
    return Check("sqlite json1", Status.MISSING, "this Python's SQLite has no JSON functions")


def symlink_check(root: Path) -> Check:
    if not root.is_dir():
        return Check("symlinks", Status.WARN, f"{root} does not exist yet; not checked")
    own = root / ".mlib"
    try:
        own.mkdir(exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix="doctor-", dir=own))
        try:
            (probe / "target").write_bytes(b"")
            os.symlink("target", probe / "link")
            ok = (probe / "link").resolve() == (probe / "target").resolve()
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    except OSError as exc:
        return Check(
            "symlinks", Status.WARN, f"not supported at {root}: {exc.strerror}; links fall back"
        )
    status = Status.OK if ok else Status.WARN
    return Check("symlinks", status, f"supported at {root}" if ok else "links do not resolve")


def space_check(root: Path) -> Check:
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    gib = usage.free / 2**30
    status = Status.OK if gib >= 1 else Status.WARN
    return Check("free space", status, f"{gib:.1f} GiB free at {probe}")


def run(root: Path) -> list[Check]:
    return [*dependency_checks(), sqlite_check(), symlink_check(root), space_check(root)]
