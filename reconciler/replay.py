"""A plan replayed from the cache, and the values every plan is returned as (layer L4, beside
:mod:`reconciler.api`).

``mlib plan`` and ``mlib status`` with nothing changed since the last plan need only the cache
(:mod:`reconciler.cache`) and the stamps of its probes (:mod:`reconciler.stamps`): this module
answers them without importing the planner, the observers, the index or the download code (a
third of such a command's time). :func:`make_plan` imports :mod:`reconciler.api` only when the
plan has to be made; ``api.make_plan`` is this function.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from reconciler import cache, stamps
from reconciler.actions import ActionKind, Plan
from reconciler.model import Manifest

_TRUE = frozenset({"1", "true", "yes", "on"})


def offline_from_environment() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, as huggingface_hub reads them
    (without importing it)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return True
    return False


@dataclass(frozen=True)
class PlanOptions:
    """How a plan is asked for, beyond the manifest."""

    prune: bool = False
    #: Resolve remote sources from mlib.lock only (``--offline``, or ``HF_HUB_OFFLINE`` set).
    offline: bool = False
    #: Resolve remote sources from mlib.lock only, and only from a current entry (``--locked``).
    locked: bool = False

    def effective(self) -> PlanOptions:
        return replace(self, offline=self.offline or offline_from_environment())

    def asked(self) -> str:
        """What a kept plan depends on besides the manifest and the disk."""
        endpoint = os.environ.get("HF_ENDPOINT", "")
        return f"offline={self.offline}|locked={self.locked}|endpoint={endpoint}"


@dataclass(frozen=True)
class PlanResult:
    manifest_path: Path
    plan: Plan
    options: PlanOptions = PlanOptions()
    #: Everything the plan was computed from (manifest, translations, observed facts, options);
    #: None for a plan replayed from the cache (its inputs were proved unchanged, not kept).
    seen: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def prune(self) -> bool:
        return self.options.prune

    @property
    def replayed(self) -> bool:
        """Whether the plan came from the cache (:mod:`reconciler.cache`)."""
        return self.seen is None

    @cached_property
    def manifest(self) -> Manifest:
        if self.seen is not None:
            manifest: Manifest = self.seen[0]
            return manifest
        return cache.remembered_manifest(cache.ManifestInput.read(self.manifest_path))

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over :attr:`seen`; computed when asked for (``plan -o``, applying a saved plan):
        on 100k models it costs as much as the rest of a no-op plan, and a replayed plan has to
        observe everything again for it."""
        seen = self.seen
        if seen is None:
            from reconciler import api

            seen = api._make_plan(self.manifest_path, self.options, replay=False).seen
        assert seen is not None  # a plan made in full keeps what it saw
        manifest, *rest = seen
        # the manifest as a file, however its path was spelled (a plan saved with a relative
        # -m is applied from the absolute path the saved plan records)
        seen = (replace(manifest, path=Path(os.path.abspath(manifest.path))), *rest)
        return hashlib.sha256(repr(seen).encode("utf-8")).hexdigest()


def make_plan(
    manifest_path: Path, *, prune: bool = False, offline: bool = False, locked: bool = False
) -> PlanResult:
    """Load, observe, resolve remote sources, and plan. Changes nothing on disk but mlib's caches:
    the plan is replayed from :mod:`reconciler.cache` when nothing it was made from changed."""
    options = PlanOptions(prune, offline, locked).effective()
    found = cache.ManifestInput.read(manifest_path)
    kept = replayed_plan(found, manifest_path, options)
    if kept is not None:
        return kept
    from reconciler import api

    return api._make_plan(manifest_path, options, replay=False, found=found)


def replayed_plan(
    found: cache.ManifestInput, manifest_path: Path, options: PlanOptions
) -> PlanResult | None:
    """The kept plan of this manifest and these options, when every probe's stamp is as it was."""
    memo = cache.remembered_plan(found, options.prune, options.asked())
    if memo is not None and stamps.unchanged(memo.probes, memo.stamp):
        return PlanResult(manifest_path, memo.replayed(), options)
    return None


@dataclass(frozen=True)
class Space:
    """Bytes a plan writes into the library (downloads and copies), and what its filesystem has."""

    needed: int
    free: int
    where: Path

    @property
    def short(self) -> bool:
        return self.needed > self.free


def space_needed(result: PlanResult) -> Space | None:
    """The space ``result`` needs (None when it writes no model files). Measured now, never
    kept with a replayed plan: free space changes all the time."""
    plan = result.plan
    copies = sum(a.size for a in plan.actions if a.kind is ActionKind.IMPORT and a.mode == "copy")
    needed = plan.download_bytes + copies
    if not needed:
        return None
    where = result.manifest.library
    while not where.exists() and where != where.parent:
        where = where.parent
    return Space(needed, shutil.disk_usage(where).free, where)
