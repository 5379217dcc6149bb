"""The plan: ordered actions with reasons, no-ops with reasons, conflicts and drift (frozen values).

A plan is data. ``mlib plan`` renders it, ``mlib plan -o`` saves it, ``mlib apply`` executes exactly
these actions in this order. Paths in actions are absolute strings, so a saved plan is unambiguous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class ActionKind(StrEnum):
    """What an action does, in make-before-break order (DESIGN section 4)."""

    CLEAR_STAGING = "clear_staging"  # remove a partial import left in .mlib/staging (ours)
    MKDIR = "mkdir"  # create an app's models folder that does not exist yet
    DOWNLOAD = "download"  # fetch a remote model's files, verify them, and build its folder
    IMPORT = "import"  # bring a source into a complete model folder (staging, then rename)
    FINISH_MOVE = "finish_move"  # remove a moved source that is already the library's file
    RENAME = "rename"  # move a model folder to its new id (no re-import)
    WRITE_METADATA = "write_metadata"
    WRITE_OVERRIDES = "write_overrides"
    INDEX_UPSERT = "index_upsert"
    WRITE_CONFIG = "write_config"  # mlib's section of ComfyUI's extra_model_paths.yaml
    SET_ASIDE = "set_aside"  # an adopted copy of a library file, to .mlib/trash/ for its link
    LINK = "link"
    RELINK = "relink"  # a link of ours points at the wrong target
    UNLINK = "unlink"  # a link of ours that is no longer wanted
    TRASH = "trash"  # a model that left the manifest, moved to .mlib/trash/ (--prune only)
    INDEX_DELETE = "index_delete"


#: Sort rank of each kind: make before break.
ORDER: dict[ActionKind, int] = {kind: rank for rank, kind in enumerate(ActionKind)}

#: Symbols of the rendered plan, Terraform-like.
SYMBOL: dict[ActionKind, str] = {
    ActionKind.CLEAR_STAGING: "-",
    ActionKind.MKDIR: "+",
    ActionKind.DOWNLOAD: "+",
    ActionKind.IMPORT: "+",
    ActionKind.RENAME: "~",
    ActionKind.WRITE_METADATA: "~",
    ActionKind.WRITE_OVERRIDES: "~",
    ActionKind.INDEX_UPSERT: "~",
    ActionKind.WRITE_CONFIG: "~",
    ActionKind.SET_ASIDE: "-",
    ActionKind.LINK: "+",
    ActionKind.RELINK: "~",
    ActionKind.UNLINK: "-",
    ActionKind.FINISH_MOVE: "-",
    ActionKind.TRASH: "-",
    ActionKind.INDEX_DELETE: "-",
}


@dataclass(frozen=True)
class ImportFile:
    """One file of an import or a download: where it comes from (a path or a URL), its path
    inside the model folder, its size (-1: unknown until fetched) and, when known beforehand, the
    sha256 it must have."""

    source: str
    dest: str
    size: int
    sha256: str = ""


@dataclass(frozen=True)
class Action:
    """One step of a plan.

    ``model`` is the model id it concerns; ``path`` the main path it changes (model folder, link);
    ``target`` what a link points to, the new folder of a rename, or the source folder of an
    import of a folder; ``mode`` the import or link
    mode; ``files`` the files of an import; ``data`` the JSON text a write action writes.
    """

    kind: ActionKind
    model: str
    reason: str
    path: str = ""
    target: str = ""
    mode: str = ""
    app: str = ""
    files: tuple[ImportFile, ...] = ()
    data: str = ""
    size: int = 0

    @property
    def symbol(self) -> str:
        return SYMBOL[self.kind]


@dataclass(frozen=True)
class NoOp:
    """Something already as wanted, or deliberately left alone, and why."""

    model: str
    reason: str
    path: str = ""


class ConflictKind(StrEnum):
    FILE_IN_THE_WAY = "file_in_the_way"  # a real file or folder where a link should go
    FOREIGN_LINK = "foreign_link"  # a link mlib did not make where one of its links should go
    CLAIMED_TWICE = "claimed_twice"  # two models want the same link path
    SOURCE = "source"  # a source that cannot be imported (missing, unreadable, loop)
    UNSUPPORTED = "unsupported"  # a model this version of mlib cannot install yet
    TRANSLATION = "translation"  # no translation for an app target, or no rule for a model


@dataclass(frozen=True)
class Conflict:
    """Something the plan will not touch and the user has to decide; never overwritten."""

    kind: ConflictKind
    model: str
    path: str
    message: str
    fix: str


class DriftKind(StrEnum):
    MODEL_MISSING = "model_missing"  # in the manifest, not in the library
    MODEL_UNMANAGED = "model_unmanaged"  # in the library, not in the manifest
    METADATA_BROKEN = "metadata_broken"  # metadata.json unreadable or invalid
    METADATA_STALE = "metadata_stale"  # metadata.json differs from the manifest
    FILE_MISSING = "file_missing"  # a file listed in metadata is not in the folder
    FILE_CHANGED = "file_changed"  # size differs from metadata
    FILE_EXTRA = "file_extra"  # a file in the folder that metadata does not list
    INDEX_STALE = "index_stale"  # models.db row missing, extra or out of date
    LINK_MISSING = "link_missing"
    LINK_BROKEN = "link_broken"  # a registered link whose target is gone
    LINK_WRONG = "link_wrong"  # a registered link pointing elsewhere
    LINK_EXTRA = "link_extra"  # a registered link no longer wanted
    FOREIGN = "foreign"  # a file or link not ours in the way of a link
    CONFIG_STALE = "config_stale"  # mlib's section of extra_model_paths.yaml differs or is missing


@dataclass(frozen=True)
class Drift:
    kind: DriftKind
    model: str
    path: str
    message: str


@dataclass(frozen=True)
class Plan:
    """Everything ``apply`` would do, in order, plus what it leaves and why."""

    actions: tuple[Action, ...] = ()
    #: Often one or two a model: a plan replayed from the cache reads them only when asked.
    noops: Sequence[NoOp] = ()
    conflicts: tuple[Conflict, ...] = ()
    drift: tuple[Drift, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.actions

    def count(self, *kinds: ActionKind) -> int:
        return sum(1 for a in self.actions if a.kind in kinds)

    @property
    def import_bytes(self) -> int:
        return sum(a.size for a in self.actions if a.kind is ActionKind.IMPORT)

    @property
    def download_bytes(self) -> int:
        return sum(a.size for a in self.actions if a.kind is ActionKind.DOWNLOAD)


def human_bytes(n: int) -> str:
    """A size as people read it, in powers of 1000: ``14.1 KB``, ``4.3 GB``."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
