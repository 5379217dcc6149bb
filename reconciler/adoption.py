"""Scanning an app's existing models folder for ``mlib adopt`` (layer L2: reads, never writes).

Users arrive with a full ``ComfyUI/models`` folder. Adopting it means reading the app's translation
backwards: a file in ``loras/`` is a LoRA because the translation sends LoRAs there. This module
only looks; what the (pure) planner does with the result, and the moves, come later. So nothing
here renames, moves, creates or deletes anything, and no symlink is followed (a user's link points
somewhere mlib must not adopt from; a link into the library is mlib's own).

Spots, :func:`reverse_rules`
    Every target of every rule becomes a :class:`Spot`: the literal folder the app reads (the
    target's whole components before the first one holding a placeholder: ``loras/{family}`` ->
    ``loras``). A target that starts with a placeholder (LM Studio's ``{family}/{model}``) says no
    folder, so it gives no spot. Longer prefixes come first, so ``loras/sdxl`` wins over ``loras``
    when a translation names both; equal prefixes keep rule order, as the forward direction does.

Classification, :func:`scan`
    A file belongs to the longest spot prefix that holds it and whose rule's ``files`` patterns
    accept its name. Several rules can share that prefix (A1111's ``models/ControlNet`` holds
    ControlNets and IP-Adapters); the probe's kind guess picks among them, else rule order does.
    Kind, type and family come from the rule when it names exactly one, else from the probe when
    the rule allows the guess (or names none), else the rule's first value; with neither, kind
    ``other``, type ``diffusion`` and family ``unknown``. Tags the rule requires are kept, so the
    forward direction picks the same rule again. The probe
    is a check, never a gate: where it disagrees with the folder, the folder wins and the
    disagreement is reported. A ``folder`` rule (diffusers) adopts whole folders: the folder one
    level below the prefix (more when the target has placeholders below it) is one item, if any of
    its files passes the rule's patterns.

What is not adopted
    Files no spot accepts, empty files, non-regular files and files that cannot be read are listed
    with a one-line reason and never moved; folders no spot lies in or below are listed once and
    not walked (an A1111 data folder holds ``venv/`` and ``outputs/``). Hidden entries are skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from reconciler.errors import FileChangedError, NamingError, ReconcilerError
from reconciler.facts import FileStat
from reconciler.hashing import Progress, hash_file
from reconciler.model import ModelType
from reconciler.naming import check_relpath, clean_filename, clean_slug
from reconciler.planner import ADOPTING
from reconciler.probe import Probe, probe_file
from reconciler.translations import LinkScope, Match, Rule, Translation

__all__ = [
    "ADOPTING_FILE",
    "DEFAULT_KIND",
    "DEFAULT_TYPE",
    "UNKNOWN_FAMILY",
    "UNKNOWN_FOLDER",
    "Disagreement",
    "Found",
    "Proposal",
    "Scan",
    "Spot",
    "TreeFile",
    "Unclassified",
    "UserLink",
    "adopting_text",
    "propose",
    "read_adopting",
    "reverse_rules",
    "scan",
    "tree_digest",
]

log = logging.getLogger(__name__)

#: The family of a file neither its rule nor the probe names (a valid slug, as models need).
UNKNOWN_FAMILY = "unknown"
#: The type of a file neither its rule nor the probe names: apps with folders per kind are
#: image-generation apps.
DEFAULT_TYPE = ModelType.DIFFUSION
#: The kind of a file whose rule accepts any kind and the probe has no guess for.
DEFAULT_KIND = "other"
#: Why a file or folder outside every spot is not adopted.
UNKNOWN_FOLDER = "in no folder the app's translation knows"


@dataclass(frozen=True)
class Spot:
    """One folder an app reads models from, as one rule's target read backwards.

    ``prefix`` is the literal folder (``loras``); ``depth`` counts the folders the target adds
    below it through placeholders (``loras/{family}`` -> 1), which tells how deep a ``folder``
    rule's model folders sit. ``position`` is the rule's place in the translation.
    """

    prefix: str
    target: str
    rule: Rule
    position: int
    depth: int = 0

    @property
    def match(self) -> Match:
        return self.rule.match

    @property
    def scope(self) -> LinkScope:
        return self.rule.link

    def contains(self, rel: str) -> bool:
        """Whether the path ``rel`` (relative to the models folder, posix) lies below the prefix."""
        return rel.startswith(self.prefix + "/")

    def bundle_of(self, rel: str) -> str | None:
        """For a ``folder`` rule: the model folder ``rel`` lies in, or None when it lies loose
        above the model folders."""
        below = rel[len(self.prefix) + 1 :].split("/")
        if len(below) <= self.depth + 1:
            return None
        return "/".join([self.prefix, *below[: self.depth + 1]])


@dataclass(frozen=True)
class TreeFile:
    """One file of an adopted model folder: its path inside the folder, stat and hashes."""

    path: str
    stat: FileStat
    sha256: str | None = None
    blake3: str | None = None


@dataclass(frozen=True)
class Found:
    """One item to adopt: a file, or a whole model folder for a ``folder`` rule.

    ``rel`` is relative to the scanned root; ``folder`` and ``filename`` split it as a manifest's
    per-app ``folder:``/``filename:`` override needs them to link it back where the app saw it.
    ``prefix`` is the spot's literal folder: when ``folder`` is longer, the file sat in a
    subfolder. ``tags`` are those the rule requires, so the forward translation picks that rule
    again. ``stat`` is taken when the folder was walked, for the executor to check that the file
    is still the one planned (and, by ``dev``/``inode``, to recognise mlib's own hard links).
    A folder item has ``sha256``/``blake3``/``stat`` None, ``files`` and ``tree_digest``
    (see :func:`tree_digest`) instead; ``size`` is the sum of its files.
    """

    path: Path
    rel: str
    kind: str
    type: ModelType
    family: str
    scope: LinkScope
    size: int
    sha256: str | None
    blake3: str | None
    probe_reason: str
    folder: str
    filename: str
    prefix: str = ""
    probe_kind: str | None = None
    tags: tuple[str, ...] = ()
    stat: FileStat | None = None
    files: tuple[TreeFile, ...] = ()
    tree_digest: str | None = None

    @property
    def digest(self) -> str | None:
        """What identical items share: sha256 for a file, the tree digest for a folder."""
        return self.sha256 if self.scope is LinkScope.FILE else self.tree_digest


@dataclass(frozen=True)
class Unclassified:
    """A file (or, ``is_dir``, a folder not walked) that is not adopted, and why, in one line."""

    path: Path
    rel: str
    reason: str
    is_dir: bool = False


@dataclass(frozen=True)
class UserLink:
    """A symlink found in the folder. ``points_to`` is what it says; ``target`` that made absolute
    against the link's folder, not resolved; ``exists`` whether something is there."""

    path: Path
    rel: str
    points_to: str
    target: Path
    exists: bool


@dataclass(frozen=True)
class Disagreement:
    """A file whose header looks like another kind than its folder says: a warning, not a gate."""

    path: Path
    rel: str
    kind: str
    probe_kind: str
    message: str


@dataclass(frozen=True)
class Scan:
    """What :func:`scan` found in one app's models folder. Every tuple is sorted by ``rel``
    (``duplicates`` by the first path of each group); nothing in it was changed on disk."""

    root: Path
    app: str
    translation: str
    hashed: bool
    found: tuple[Found, ...]
    unclassified: tuple[Unclassified, ...]
    user_links: tuple[UserLink, ...]
    library_links: tuple[UserLink, ...]
    duplicates: tuple[tuple[Path, ...], ...]
    probe_disagreements: tuple[Disagreement, ...]

    @property
    def size(self) -> int:
        """Bytes of everything found (counted once per copy)."""
        return sum(f.size for f in self.found)


# --- spots ----------------------------------------------------------------------------------------


def reverse_rules(translation: Translation) -> tuple[Spot, ...]:
    """Every folder ``translation`` sends models to, longest prefix first, rule order kept."""
    spots: list[Spot] = []
    seen: set[tuple[str, int, int]] = set()
    for position, rule in enumerate(translation.rules):
        for target in rule.targets:
            prefix, depth = _literal_prefix(target)
            if not prefix:
                log.debug("%s: target %r names no folder to adopt from", translation.source, target)
                continue
            if (prefix, position, depth) not in seen:
                seen.add((prefix, position, depth))
                spots.append(Spot(prefix, target, rule, position, depth))
    # sorted() is stable: equal prefixes keep the order of the rules.
    return tuple(sorted(spots, key=lambda s: (-s.prefix.count("/"), -len(s.prefix))))


def _literal_prefix(target: str) -> tuple[str, int]:
    """The target's whole components before the first holding a placeholder, and how many
    components follow. A component such as ``sd-{family}`` is not literal: only its start is."""
    parts = target.split("/")
    literal: list[str] = []
    for part in parts:
        if "{" in part:
            break
        literal.append(part)
    return "/".join(literal), len(parts) - len(literal)


# --- walking --------------------------------------------------------------------------------------


@dataclass
class _Walk:
    """What one walk saw, before classification."""

    files: list[tuple[str, FileStat]]
    links: list[UserLink]
    library_links: list[UserLink]
    skipped: list[Unclassified]


def _walk(root: Path, spots: Sequence[Spot], library: Path | None) -> _Walk:
    prefixes = {s.prefix for s in spots}
    library_real = os.path.realpath(library) if library is not None else None
    out = _Walk([], [], [], [])
    todo = [""]
    while todo:
        rel_dir = todo.pop()
        folder = root / rel_dir if rel_dir else root
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if not rel_dir:
                raise ReconcilerError(f"cannot list {root}: {exc.strerror or exc}") from None
            out.skipped.append(
                Unclassified(folder, rel_dir, f"cannot list: {exc.strerror or exc}", True)
            )
            continue
        subdirs: list[str] = []
        for entry in entries:
            if entry.name.startswith("."):
                log.debug("skipped hidden %s", entry.path)
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            path = Path(entry.path)
            try:
                if entry.is_symlink():
                    _link(path, rel, library_real, out)
                elif entry.is_dir(follow_symlinks=False):
                    if library_real is not None and os.path.realpath(path) == library_real:
                        out.skipped.append(Unclassified(path, rel, "the mlib library itself", True))
                    elif _walked(rel, prefixes):
                        subdirs.append(rel)
                    else:
                        out.skipped.append(Unclassified(path, rel, UNKNOWN_FOLDER, True))
                elif entry.is_file(follow_symlinks=False):
                    out.files.append((rel, FileStat.of(entry.stat(follow_symlinks=False))))
                else:
                    reason = "not a regular file (a FIFO, socket or device)"
                    out.skipped.append(Unclassified(path, rel, reason))
            except OSError as exc:  # vanished or unreadable between listing and looking
                out.skipped.append(Unclassified(path, rel, f"cannot read: {exc.strerror or exc}"))
        todo.extend(reversed(subdirs))
    return out


def _walked(rel_dir: str, prefixes: Iterable[str]) -> bool:
    """Whether a folder is a spot, lies in one, or lies on the way to one."""
    return any(
        rel_dir == p or rel_dir.startswith(p + "/") or p.startswith(rel_dir + "/") for p in prefixes
    )


def _link(path: Path, rel: str, library_real: str | None, out: _Walk) -> None:
    points_to = os.readlink(path)
    target = Path(os.path.normpath(os.path.join(os.path.dirname(path), points_to)))
    link = UserLink(path, rel, points_to, target, os.path.exists(path))
    if library_real is not None and _inside(os.path.realpath(path), library_real):
        out.library_links.append(link)
    else:
        out.links.append(link)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


# --- classifying ----------------------------------------------------------------------------------


def scan(
    root: Path,
    translation: Translation,
    *,
    library: Path | None = None,
    hash_files: bool = True,
    progress: Progress | None = None,
) -> Scan:
    """Look at the app models folder ``root`` as ``translation`` lays it out; change nothing.

    ``library`` marks links that are already mlib's. With ``hash_files`` False no file is read
    beyond its header (a quick listing): hashes stay None and no duplicates are found.
    ``progress`` is called with the bytes just hashed. A single bad file is listed in
    ``unclassified``; only a ``root`` that is missing, not a folder or not listable raises
    :class:`~reconciler.errors.ReconcilerError`.
    """
    if not root.exists():
        raise ReconcilerError(f"{root}: no such folder (give the app's models folder)")
    if not root.is_dir():
        raise ReconcilerError(f"{root}: not a folder (give the app's models folder)")
    spots = reverse_rules(translation)
    walk = _walk(root, spots, library)
    unclassified = list(walk.skipped)
    bundles = _accepted_bundles(walk.files, spots)
    singles: list[tuple[str, FileStat, list[Spot]]] = []
    members: dict[tuple[Spot, str], list[tuple[str, FileStat]]] = {}
    for rel, st in walk.files:
        best = _best_spots(rel, spots, bundles)
        bundle = best[0].bundle_of(rel) if best and best[0].scope is LinkScope.FOLDER else None
        if bundle is not None:
            members.setdefault((best[0], bundle), []).append((rel, st))
        elif not best:
            unclassified.append(_why_not(root, rel, spots))
        elif st.size == 0:
            unclassified.append(Unclassified(root / rel, rel, "an empty file, not a model"))
        else:
            singles.append((rel, st, best))
    found: list[Found] = []
    disagreements: list[Disagreement] = []
    for rel, st, best in singles:
        single = _single(root, rel, st, best, hash_files, progress)
        if isinstance(single, Unclassified):
            unclassified.append(single)
            continue
        item, probe = single
        found.append(item)
        message = probe.disagreement(item.kind) if probe.kind is not None else None
        if message is not None and probe.kind is not None:
            disagreements.append(Disagreement(item.path, rel, item.kind, probe.kind, message))
    troubles = [u.rel for u in (*walk.links, *walk.library_links)] + [u.rel for u in walk.skipped]
    for (spot, bundle), files in members.items():
        folder_item = _folder(root, spot, bundle, files, troubles, hash_files, progress)
        if isinstance(folder_item, Unclassified):
            unclassified.append(folder_item)
        else:
            found.append(folder_item)
    result = Scan(
        root=root,
        app=translation.app,
        translation=translation.source,
        hashed=hash_files,
        found=tuple(sorted(found, key=lambda f: f.rel)),
        # Every file of a model folder no rule accepts says the same about the folder: once.
        unclassified=tuple(sorted(dict.fromkeys(unclassified), key=lambda u: u.rel)),
        user_links=tuple(sorted(walk.links, key=lambda u: u.rel)),
        library_links=tuple(sorted(walk.library_links, key=lambda u: u.rel)),
        duplicates=_duplicates(found),
        probe_disagreements=tuple(sorted(disagreements, key=lambda d: d.rel)),
    )
    log.info(
        "scanned %s as %s: %d to adopt (%d bytes), %d not adopted, %d user links, "
        "%d links into the library, %d groups of duplicates",
        root, translation.source, len(result.found), result.size, len(result.unclassified),
        len(result.user_links), len(result.library_links), len(result.duplicates),
    )  # fmt: skip
    return result


def _accepted_bundles(
    files: Sequence[tuple[str, FileStat]], spots: Sequence[Spot]
) -> set[tuple[Spot, str]]:
    """The model folders of ``folder`` rules that hold a file the rule's patterns accept."""
    accepted: set[tuple[Spot, str]] = set()
    for spot in spots:
        if spot.scope is not LinkScope.FOLDER:
            continue
        for rel, _ in files:
            if spot.contains(rel) and spot.match.accepts_file(PurePosixPath(rel).name):
                bundle = spot.bundle_of(rel)
                if bundle is not None:
                    accepted.add((spot, bundle))
    return accepted


def _best_spots(rel: str, spots: Sequence[Spot], bundles: set[tuple[Spot, str]]) -> list[Spot]:
    """The spots of the longest prefix that holds ``rel`` and accepts it, in rule order.

    A ``folder`` spot among them comes alone: its model folder moves whole, whatever file rules
    say about the files inside.
    """
    name = PurePosixPath(rel).name
    accepting: list[Spot] = []
    for spot in spots:  # longest prefix first; holding prefixes of one path nest
        if not spot.contains(rel) or (accepting and spot.prefix != accepting[0].prefix):
            continue
        if spot.scope is LinkScope.FOLDER:
            bundle = spot.bundle_of(rel)
            if bundle is not None and (spot, bundle) in bundles:
                return [spot]
        elif spot.match.accepts_file(name):
            accepting.append(spot)
    return accepting


def _why_not(root: Path, rel: str, spots: Sequence[Spot]) -> Unclassified:
    """Why no spot accepts the file ``rel``, said about the longest prefix that holds it."""
    holding = [s for s in spots if s.contains(rel)]
    if not holding:
        return Unclassified(root / rel, rel, UNKNOWN_FOLDER)
    prefix = holding[0].prefix
    group = [s for s in holding if s.prefix == prefix]
    by_file = [s for s in group if s.scope is LinkScope.FILE]
    if by_file:
        patterns = ", ".join(dict.fromkeys(p for s in by_file for p in s.match.files))
        suffix = PurePosixPath(rel).suffix.lower()
        what = f"a {suffix} file" if suffix else "a file without an extension"
        reason = f"{what} where only model files go ({prefix} takes {patterns})"
        return Unclassified(root / rel, rel, reason)
    spot = group[0]
    kinds = "/".join(spot.match.kind) or "model"
    bundle = spot.bundle_of(rel)
    if bundle is None:
        reason = f"a loose file where only {kinds} model folders go (one folder per model)"
        return Unclassified(root / rel, rel, reason)
    patterns = " or ".join(spot.match.files) or "any file"
    reason = f"a folder without {patterns} where only {kinds} model folders go"
    return Unclassified(root / bundle, bundle, reason, is_dir=True)


def _single(
    root: Path,
    rel: str,
    st: FileStat,
    best: Sequence[Spot],
    hash_files: bool,
    progress: Progress | None,
) -> tuple[Found, Probe] | Unclassified:
    """One file accepted by ``best`` (spots of one prefix), probed and maybe hashed."""
    path = root / rel
    problem = _unreadable(path)
    if problem is not None:
        return Unclassified(path, rel, problem)
    probe = probe_file(path)
    # Rules sharing a folder (A1111's ControlNet folder holds IP-Adapters too): the probe picks.
    spot = next((s for s in best if probe.kind is not None and probe.kind in s.match.kind), best[0])
    match = spot.match
    sha256 = blake3 = None
    if hash_files:
        hashed = _hash(path, rel, st, progress)
        if isinstance(hashed, Unclassified):
            return hashed
        sha256, blake3 = hashed
    pure = PurePosixPath(rel)
    item = Found(
        path=path,
        rel=rel,
        kind=_pick(match.kind, probe.kind) or DEFAULT_KIND,
        type=_model_type(match, probe),
        family=_family(match, probe),
        scope=LinkScope.FILE,
        size=st.size,
        sha256=sha256,
        blake3=blake3,
        probe_reason=probe.reason,
        folder=str(pure.parent),
        filename=pure.name,
        prefix=spot.prefix,
        probe_kind=probe.kind,
        tags=match.tags,
        stat=st,
    )
    return item, probe


def _folder(
    root: Path,
    spot: Spot,
    bundle: str,
    files: Sequence[tuple[str, FileStat]],
    troubles: Sequence[str],
    hash_files: bool,
    progress: Progress | None,
) -> Found | Unclassified:
    """One model folder of a ``folder`` rule: every file in it hashed, the largest probed."""
    path = root / bundle
    inside = [t for t in troubles if t.startswith(bundle + "/")]
    if inside:
        shown = ", ".join(t[len(bundle) + 1 :] for t in inside[:3])
        more = f" and {len(inside) - 3} more" if len(inside) > 3 else ""
        reason = (
            f"holds {shown}{more}: a symlink or something that cannot be read "
            "(see the links and the rest of this list); sort that out, then adopt again"
        )
        return Unclassified(path, bundle, reason, is_dir=True)
    hidden = _hidden_entries(path)
    if hidden:
        return Unclassified(
            path,
            bundle,
            f"holds {', '.join(hidden[:3])}, hidden, which an import leaves behind (the folder "
            "could not become a link); move it out, then adopt again",
            is_dir=True,
        )
    tree: list[TreeFile] = []
    for rel, st in sorted(files):
        inner = rel[len(bundle) + 1 :]
        problem = _unreadable(root / rel)
        if problem is not None:
            return Unclassified(path, bundle, f"{inner}: {problem}", is_dir=True)
        sha256 = blake3 = None
        if hash_files:
            hashed = _hash(root / rel, rel, st, progress)
            if isinstance(hashed, Unclassified):
                return Unclassified(path, bundle, f"{inner}: {hashed.reason}", is_dir=True)
            sha256, blake3 = hashed
        tree.append(TreeFile(inner, st, sha256, blake3))
    largest = max(tree, key=lambda f: (f.stat.size, f.path))
    probe = probe_file(path / largest.path)
    match = spot.match
    pure = PurePosixPath(bundle)
    digest = None
    if hash_files:
        digest = tree_digest((f.path, f.sha256 or "") for f in tree)
    return Found(
        path=path,
        rel=bundle,
        # The probe reads one file; a folder's kind (diffusers) is the rule's, never a guess.
        kind=_pick(match.kind, None) or DEFAULT_KIND,
        type=_model_type(match, probe),
        family=_family(match, probe),
        scope=LinkScope.FOLDER,
        size=sum(f.stat.size for f in tree),
        sha256=None,
        blake3=None,
        probe_reason=f"{largest.path}: {probe.reason}",
        folder=str(pure.parent),
        filename=pure.name,
        prefix=spot.prefix,
        probe_kind=probe.kind,
        tags=match.tags,
        files=tuple(tree),
        tree_digest=digest,
    )


def _hidden_entries(folder: Path) -> list[str]:
    """Entries whose names start with ``.`` anywhere in ``folder`` (relative paths)."""
    found = []
    for current, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            if name.startswith("."):
                found.append(os.path.relpath(os.path.join(current, name), folder))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(found)


def tree_digest(files: Iterable[tuple[str, str]]) -> str:
    """sha256 over ``(relative path, sha256)`` pairs sorted by path, one ``path NUL sha256 LF``
    line each: equal for two folders with the same files at the same places, whatever their
    names or timestamps, and computable from a library model's metadata without reading it."""
    digest = hashlib.sha256()
    for rel, sha256 in sorted(files):
        digest.update(f"{rel}\0{sha256}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _hash(
    path: Path, rel: str, st: FileStat, progress: Progress | None
) -> tuple[str, str] | Unclassified:
    """(sha256, blake3) of the file, or why it cannot be adopted as walked."""
    try:
        hashes = hash_file(path, progress)
        now = FileStat.of(os.lstat(path))
    except OSError as exc:
        return Unclassified(path, rel, f"cannot read: {exc.strerror or exc}")
    except FileChangedError:
        now = None
    if now != st:
        reason = (
            "it changed while it was scanned (wait until nothing writes to it, then scan again)"
        )
        return Unclassified(path, rel, reason)
    return hashes.sha256, hashes.blake3


def _unreadable(path: Path) -> str | None:
    """Why the file cannot be opened for reading, or None. Opening reads nothing; O_NONBLOCK
    keeps a FIFO put in place since the walk from blocking."""
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        )
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    os.close(fd)
    return None


def _pick(allowed: Sequence[str], guess: str | None) -> str | None:
    """The guess when the rule allows it (or allows anything), else the rule's first value."""
    if guess is not None and (not allowed or guess in allowed):
        return guess
    return allowed[0] if allowed else None


def _model_type(match: Match, probe: Probe) -> ModelType:
    value = _pick(match.type, None if probe.type is None else probe.type.value)
    try:
        return ModelType(value) if value is not None else DEFAULT_TYPE
    except ValueError:  # a user translation naming a type mlib does not know
        return DEFAULT_TYPE


def _family(match: Match, probe: Probe) -> str:
    """The family as a slug; a GGUF architecture is free text, so it is cleaned."""
    value = _pick(match.family, probe.family)
    if value is None:
        return UNKNOWN_FAMILY
    try:
        return clean_slug(value)
    except NamingError:
        return UNKNOWN_FAMILY


def _duplicates(found: Iterable[Found]) -> tuple[tuple[Path, ...], ...]:
    """Groups of items with the same content (size > 0), each in path order: the first is kept."""
    groups: dict[tuple[LinkScope, str], list[Found]] = {}
    for item in found:
        digest = item.digest
        if digest is not None and item.size > 0:
            groups.setdefault((item.scope, digest), []).append(item)
    same = [sorted(g, key=lambda f: f.rel) for g in groups.values() if len(g) > 1]
    return tuple(tuple(f.path for f in g) for g in sorted(same, key=lambda g: g[0].rel))


# --- what adopting means for the manifest (pure, from a Scan and the library's hashes) ----------

#: Copies of library files that an adoption replaces by links (in the library).
ADOPTING_FILE = ADOPTING


@dataclass(frozen=True)
class Proposal:
    """What ``mlib adopt`` adds to the manifest and leaves, for one scanned app folder.

    ``entries`` are new models (manifest ``models:`` items: each moved into the library from
    where it is, and linked back under the same name); ``overrides`` are (model id, app folder,
    file name) for items whose bytes the library already holds, linked to that model instead;
    ``set_aside`` maps those items' paths to (sha256, model id) for ``adopting.json``; ``left``
    are duplicates inside the scanned app (one model has one place per app), with the kept copy.
    """

    entries: tuple[dict[str, Any], ...]
    overrides: tuple[tuple[str, str | None, str | None], ...]
    set_aside: tuple[tuple[str, str, str], ...]
    left: tuple[tuple[Path, Path], ...]
    #: Items left in place because no usable model name or link name comes from them, and why.
    refused: tuple[tuple[Path, str], ...] = ()


def propose(
    scan: Scan,
    target: str,
    known: Mapping[str, tuple[str, str]],
    taken: Collection[str],
    linked: Collection[str] = (),
) -> Proposal:
    """The manifest changes that adopt ``scan``'s items for the app target ``target``.

    ``known`` maps a sha256 (or a bundle's tree digest) the library already holds to its model
    id and the name the app would see (the file's, or the folder's); ``taken`` are the model
    ids already in the manifest or the library; ``linked`` the models already linked somewhere
    in the scanned folder (a copy of one stays where it is: adopting twice changes nothing). Of
    identical items in the app, the one nearest the top (then by name) becomes the model; the
    others stay where they are. An item whose name gives no usable model or link name is refused.
    """
    refused: list[tuple[Path, str]] = []
    entries: list[dict[str, Any]] = []
    overrides: list[tuple[str, str | None, str | None]] = []
    set_aside: list[tuple[str, str, str]] = []
    left: list[tuple[Path, Path]] = []
    used = set(taken)
    kept: dict[str, Path] = {}
    for item in sorted(scan.found, key=lambda f: (f.rel.count("/"), f.rel)):
        digest = item.digest
        if digest is not None and digest in kept:
            left.append((item.path, kept[digest]))
            continue
        if digest is not None:
            kept[digest] = item.path
        problem = _unusable(item)
        if problem:
            refused.append((item.path, problem))
            continue
        held = known.get(digest) if digest is not None else None
        if held is not None and held[0] in linked:
            left.append((item.path, Path(held[1])))  # the app already sees that model
            continue
        if held is not None:
            model, shown = held
            folder = item.folder if item.folder != item.prefix else None
            overrides.append((model, folder, item.filename if item.filename != shown else None))
            set_aside.append((str(item.path), digest or "", model))
            continue
        folder, filename = _placement(item)
        name = PurePosixPath(item.filename).stem if item.scope is LinkScope.FILE else item.filename
        model_id = f"{item.type.value}/{item.family}/{clean_slug(name)}"
        if model_id in used:  # another model has the name: the content tells them apart
            name = f"{name} {(digest or 'x')[:8]}"
            model_id = f"{item.type.value}/{item.family}/{clean_slug(name)}"
        used.add(model_id)
        app: dict[str, str] = {}
        if folder:
            app["folder"] = folder
        if filename:
            app["filename"] = filename
        entry: dict[str, Any] = {
            "name": name,
            "type": item.type.value,
            "family": item.family,
            "kind": item.kind,
            "source": {"path": str(item.path), "mode": "move"},
            "tags": ["adopted", *item.tags],
        }
        if app:
            entry["apps"] = {target: app}
        entries.append(entry)
    return Proposal(tuple(entries), tuple(overrides), tuple(set_aside), tuple(left), tuple(refused))


def _unusable(item: Found) -> str:
    """Why ``item``'s name cannot become a model name and a link name ("" when it can)."""
    try:
        item.filename.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8 (rename it, then adopt again)"
    stem = PurePosixPath(item.filename).stem if item.scope is LinkScope.FILE else item.filename
    try:
        clean_slug(stem)
        check_relpath(item.filename)
        if item.folder:
            check_relpath(item.folder)
    except NamingError as exc:
        return f"{exc} (rename it, then adopt again)"
    return ""


def _placement(item: Found) -> tuple[str | None, str | None]:
    """The ``folder``/``filename`` overrides that put the link where the app saw the item: the
    folder when it sat below the rule's own folder, the name when the library's differs."""
    folder = item.folder if item.folder != item.prefix else None
    if item.scope is LinkScope.FILE:
        try:
            same = clean_filename(item.filename) == item.filename
        except NamingError:
            same = False
    else:
        same = clean_slug(item.filename) == item.filename
    return folder, None if same else item.filename


def read_adopting(library: Path) -> dict[str, tuple[str, str]]:
    """``adopting.json``: path -> (sha256, model id) of copies to replace by links (none when
    the file is missing or unreadable: then nothing is set aside)."""
    try:
        data = json.loads((library / ADOPTING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out: dict[str, tuple[str, str]] = {}
    if isinstance(data, dict):
        for path, value in data.items():
            if (
                isinstance(value, list)
                and len(value) == 2
                and all(isinstance(v, str) for v in value)
            ):
                out[str(path)] = (value[0], value[1])
    return out


def adopting_text(entries: Mapping[str, tuple[str, str]]) -> str:
    return json.dumps({p: list(v) for p, v in sorted(entries.items())}, indent=2) + "\n"
