"""The one entry point: what the CLI (and a launcher, or ``mlib serve``) calls.

Each function takes plain arguments, returns frozen values, and raises
:class:`~reconciler.errors.ReconcilerError` subclasses for anything a user can fix.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from reconciler.doctor import Check, Status
from reconciler.errors import InvalidInputError, Problem, VersionRangeError
from reconciler.fsops import atomic_write
from reconciler.index import Query, Row, open_index
from reconciler.library import Skipped, read_entries
from reconciler.loaders import load_manifest
from reconciler.model import Manifest
from reconciler.versions import parse_range

log = logging.getLogger(__name__)

MANIFEST_NAME = "mlib.yaml"


def load(manifest: Path) -> Manifest:
    """Read and check a manifest; raises :class:`InvalidInputError` with every problem."""
    return load_manifest(manifest)


@dataclass(frozen=True)
class RebuildReport:
    root: Path
    indexed: int
    skipped: tuple[Skipped, ...]
    seconds: float

    @property
    def found(self) -> int:
        return self.indexed + len(self.skipped)


def rebuild_index(root: Path) -> RebuildReport:
    """Rebuild ``models.db`` from every ``metadata.json`` under ``root``, in one transaction."""
    _require_root(root)
    started = time.perf_counter()
    entries, skipped = read_entries(root)
    with open_index(root) as index:
        indexed = index.rebuild(entries)
    seconds = time.perf_counter() - started
    log.info("indexed %d models in %.2f s (%d skipped)", indexed, seconds, len(skipped))
    return RebuildReport(root, indexed, tuple(skipped), seconds)


def query(root: Path, q: Query, manifest: Manifest | None = None) -> list[Row]:
    """Models in the index matching ``q``.

    With ``q.app`` and a manifest that defines that target, a model also has to admit the target's
    app version in its override's range; without a manifest only ``enabled`` is checked.
    """
    _require_root(root)
    with open_index(root) as index:
        rows = index.query(q)
    target = manifest.app(q.app) if manifest is not None and q.app is not None else None
    if target is None:
        return rows
    return [r for r in rows if _admits(r, target.name, target.version)]


def _admits(row: Row, target: str, version: str) -> bool:
    override = row.overrides.get(target)
    if override is None:
        return True
    try:
        return parse_range(override["versions"]).contains(version)
    except VersionRangeError:
        return False


def _require_root(root: Path) -> None:
    if not root.is_dir():
        raise InvalidInputError(
            [Problem(str(root), None, "", "library root not found", "check --root or 'library:'")]
        )


def doctor(root: Path) -> list[Check]:
    from reconciler import doctor as checks

    return checks.run(root)


def install_missing(found: list[Check]) -> int:
    """``pip install`` what :func:`doctor` found missing, with the running interpreter."""
    wanted = [c.install for c in found if c.status is Status.MISSING and c.install]
    if not wanted:
        return 0
    log.info("installing %s", " ".join(wanted))
    return subprocess.call([sys.executable, "-m", "pip", "install", *wanted])


STARTER = """\
# mlib manifest: the wanted state of your model library. Edit, then run `mlib plan`.
# Format: see the README of mlib; check it with `mlib validate`.
version: 1

# The canonical library, relative to this file. Every model lives here once.
library: shared-resources/models

# Extra folders of app translations, searched before the bundled ones.
# translations: [my-translations/]

# The apps that should see the models, each with its installed version and models folder.
apps:
  comfy:
    app: comfyui
    version: "0.3.62"
    models_dir: ../ComfyUI/models
    link: auto          # auto | symlink | hardlink | copy

# The models. A source is one of  hf: org/repo,  url: https://...,  path: /local/file.
models: []
#  - name: SDXL Base 1.0
#    type: diffusion          # llm | diffusion | embedding | audio | vision | other
#    family: sdxl
#    kind: checkpoint
#    source: {hf: stabilityai/stable-diffusion-xl-base-1.0, files: [sd_xl_base_1.0.safetensors]}
#    tags: [base]
#    apps: {comfy: ">=0.3"}   # a version range, false, or {versions, enabled, folder, filename}
"""


def init(path: Path, force: bool = False) -> None:
    """Write a commented starter manifest; never overwrites one unless ``force``."""
    if path.exists() and not force:
        raise InvalidInputError(
            [Problem(str(path), None, "", "already exists", "edit it, or pass --force to replace")]
        )
    atomic_write(path, STARTER.encode("utf-8"))
