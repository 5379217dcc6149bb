"""Observed facts about the disk, as frozen values (layer L0): what ``observe`` finds, what the
planner reads. Defined here, below both, so the pure planner never imports the observing code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from reconciler.model import Metadata


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime_ns: int
    inode: int
    dev: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class SourceFacts:
    """A local source as it is now: one file, or a folder of files (relative paths)."""

    path: str
    files: tuple[tuple[str, FileStat], ...] = ()
    is_dir: bool = False
    error: str | None = None
    #: The path itself is a symlink (followed for an import; never removed as a moved source).
    link: bool = False

    @property
    def size(self) -> int:
        return sum(s.size for _, s in self.files)


@dataclass(frozen=True)
class LibraryModel:
    """A model folder in the library, with what its metadata says and what is really there."""

    id: str
    folder: str
    metadata: Metadata | None
    metadata_text: str | None
    overrides_text: str | None
    error: str | None
    #: Files listed in metadata that exist, with their stat; missing ones are absent.
    present: tuple[tuple[str, FileStat], ...] = ()
    #: Files in the folder that metadata does not list, with their sizes.
    extra: tuple[tuple[str, int], ...] = ()
    #: Subfolders listed while looking for those files (relative paths).
    subdirs: tuple[str, ...] = ()


class PathKind(StrEnum):
    MISSING = "missing"
    SYMLINK = "symlink"
    FILE = "file"
    DIR = "dir"
    OTHER = "other"


@dataclass(frozen=True)
class PathFacts:
    """What stands at a path, without following a final symlink."""

    path: str
    kind: PathKind
    #: For a symlink: where it points, made absolute against the link's folder (not resolved).
    points_to: str | None = None
    #: For a symlink: whether its target exists.
    target_exists: bool = False
    inode: int = 0
    dev: int = 0
    nlink: int = 0


@dataclass(frozen=True)
class LinkRecord:
    """One row of the link registry: a link mlib made, so it only ever removes its own."""

    app: str
    link_path: str
    model_id: str
    file: str  # relative path in the model folder; "" for a folder link
    mode: str  # symlink | hardlink | copy: what was really made


@dataclass(frozen=True)
class RemoteFile:
    """One file of a remote source, as resolved: where to fetch it and what it must be."""

    path: str  # relative path in the model folder (cleaned for a single file)
    url: str
    size: int  # -1 when the server did not say
    sha256: str | None = None  # from the Hub's LFS metadata, the manifest's pin or the lock


@dataclass(frozen=True)
class RemoteFacts:
    """A remote source resolved (from the network or from the lock), or why it could not be.

    ``origin`` is what was resolved: ``hf:<repo>@<commit sha>`` or the final URL after redirects;
    ``etag`` the server's validator for a URL (empty when none). ``locked`` says the facts came from
    ``mlib.lock`` rather than the network.
    """

    model: str
    origin: str = ""
    files: tuple[RemoteFile, ...] = ()
    etag: str = ""
    locked: bool = False
    error: str | None = None
    fix: str = ""

    @property
    def size(self) -> int:
        return sum(max(f.size, 0) for f in self.files)


@dataclass(frozen=True)
class ConfigFacts:
    """A ComfyUI extra_model_paths.yaml as it is: whether it exists, and mlib's section in it
    (its keys and string values, in file order), or why it cannot be read."""

    path: str
    exists: bool = False
    section: tuple[tuple[str, str], ...] | None = None
    error: str | None = None
