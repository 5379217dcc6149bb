"""Apply a plan: exactly its actions, in its order (layer L3).

Safety rules kept here:
- an import builds the whole model folder in ``.mlib/staging/`` (files, metadata.json,
  overrides.json) and renames it into place, so a model folder is complete or absent;
- a ``move`` hardlinks (or copies) first and removes the source only after the model folder is in
  place, so a crash at any moment leaves the user's file where it was;
- a link is written to the registry before it is made and forgotten after it is removed, so the
  registry always names every link mlib may have made;
- a failed action fails its model's later actions, never the other models'.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import fsops
from reconciler.actions import Action, ActionKind, ImportFile, Plan
from reconciler.errors import ReconcilerError, SourceError
from reconciler.facts import LinkRecord
from reconciler.hashing import FileHashes, copy_and_hash, hash_file
from reconciler.index import Index
from reconciler.library import Skipped, read_entry
from reconciler.metadata import (
    METADATA_FILE,
    OVERRIDES_FILE,
    dumps,
    metadata_from_dict,
    metadata_to_dict,
)
from reconciler.planner import PARTIAL, STAGING, TRASH, fetch_key

if TYPE_CHECKING:
    from reconciler.sources.http import Client

log = logging.getLogger(__name__)

Clock = Callable[[], str]
Progress = Callable[[Action, int], None]


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Step:
    action: Action
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class Report:
    steps: tuple[Step, ...]

    @property
    def failed(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.outcome is Outcome.FAILED)

    @property
    def ok(self) -> bool:
        return not self.failed


class Executor:
    def __init__(
        self,
        root: Path,
        index: Index,
        clock: Clock,
        progress: Progress | None = None,
        *,
        jobs: int = 1,
        offline: bool = False,
        on_step: Callable[[Step], None] | None = None,
        on_start: Callable[[Action], None] | None = None,
        on_downloaded: Callable[[Action, Path], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ):
        self.root = root
        self.index = index
        self.clock = clock
        self.progress = progress
        self.jobs = max(1, jobs)
        self.offline = offline
        self.on_step = on_step  # told of each step as it ends (a GUI's progress)
        self.on_start = on_start  # told of each action as it starts (a GUI's current action)
        # Told of each download complete in staging (its folder, metadata.json written), before
        # it is renamed into place: where the caller records it in mlib.lock, so that no kill
        # leaves a downloaded model in the library that the lock does not know.
        self.on_downloaded = on_downloaded
        self.cancelled = cancelled  # asked before each action: True skips the rest
        self._http: Client | None = None
        self._failed: dict[str, OSError | ReconcilerError] = {}  # prefetch failures, by file

    def run(self, plan: Plan) -> Report:
        _check_own_folders(self.root)
        try:
            if self.jobs > 1:
                self._prefetch([a for a in plan.actions if a.kind is ActionKind.DOWNLOAD])
            return self._run(plan)
        finally:
            if self._http is not None:
                self._http.close()
                self._http = None

    def _run(self, plan: Plan) -> Report:
        steps: list[Step] = []
        failed_models: set[str] = set()
        for action in plan.actions:
            steps.append(self._step(action, failed_models))
            if self.on_step is not None:
                self.on_step(steps[-1])
        return Report(tuple(steps))

    def _step(self, action: Action, failed_models: set[str]) -> Step:
        # Between two actions the library is consistent (each action is atomic): the only place
        # a cancellation may stop, and what it leaves is what plan shows next.
        if self.cancelled is not None and self.cancelled():
            return Step(action, Outcome.SKIPPED, "cancelled before it started")
        if action.model and action.model in failed_models:
            return Step(action, Outcome.SKIPPED, "an earlier step of this model failed")
        if self.on_start is not None:
            self.on_start(action)
        try:
            detail = self.do(action)
        except (OSError, ReconcilerError) as exc:
            message = _describe(exc)
            log.error("%s %s failed: %s", action.kind.value, action.path, message)
            if action.model:
                failed_models.add(action.model)
            return Step(action, Outcome.FAILED, message)
        log.info("%s %s", action.kind.value, action.path or action.model)
        return Step(action, Outcome.DONE, detail)

    def do(self, a: Action) -> str:
        handler: Callable[[Action], str] = getattr(self, f"_{a.kind.value}")
        return handler(a)

    # -- actions ---------------------------------------------------------------------------------

    def _clear_staging(self, a: Action) -> str:
        staging = (self.root / STAGING).resolve()
        path = Path(a.path)
        if path.resolve().parent not in (staging, (self.root / PARTIAL).resolve()):
            raise ReconcilerError(f"{a.path} is not in {staging}; refusing to remove it")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        return "cleared"

    def _mkdir(self, a: Action) -> str:
        os.makedirs(a.path, exist_ok=True)
        return "created"

    def _import(self, a: Action) -> str:
        detail = self._assemble(a, lambda f, dest: self._bring(Path(f.source), dest, a))
        if a.mode == "move":
            for f in a.files:
                os.unlink(f.source)  # only now: the library holds a verified copy
            if a.target:  # a moved bundle leaves no empty shell (its link may go there)
                _prune_empty(Path(a.target))
        return detail

    def _prefetch(self, downloads: list[Action]) -> None:
        """Fetch the files of all downloads, ``jobs`` at a time, into ``.mlib/staging/partial/``
        before the actions run in order (each then finds its files there). A file that fails
        here is tried again, and its error reported, by its own action."""
        from concurrent.futures import ThreadPoolExecutor

        seen: set[str] = set()
        work = []
        for a in downloads:
            for f in a.files:
                if _fetch_key(f) not in seen:  # one file, one writer
                    seen.add(_fetch_key(f))
                    work.append((a, f))
        if len(work) < 2:
            return
        self._client()  # one client, made before the threads share it
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="mlib-fetch") as pool:
            for a, f in work:
                pool.submit(self._prefetch_one, a, f)

    def _prefetch_one(self, a: Action, f: ImportFile) -> None:
        try:
            self._fetch(a, f)
        except Exception as exc:  # kept for the file's action, which reports it (no 2nd retry)
            log.info("%s/%s: %s", a.model, f.dest, _describe(exc))
            kept = exc if isinstance(exc, OSError | ReconcilerError) else None
            self._failed[_fetch_key(f)] = kept or ReconcilerError(_describe(exc))

    def _fetch(self, a: Action, f: ImportFile) -> tuple[Path, FileHashes]:
        """The verified file of ``f`` in ``.mlib/staging/partial/`` and its hashes: fetched by an
        earlier (or interrupted) attempt, or now."""
        from reconciler.sources import http

        key = _fetch_key(f)
        done = self.root / PARTIAL / key
        hashes = _fetched(done, f)
        if hashes is None and key in self._failed:
            raise self._failed.pop(key)
        if hashes is None and self.offline:
            raise SourceError(
                f"{a.model}/{f.dest}: offline (--offline or HF_HUB_OFFLINE), so not downloaded",
                "apply again online",
            )
        if hashes is None:
            data = json.loads(a.data)
            single = len(a.files) == 1
            job = http.Fetch(
                url=f.source,
                part=done.with_name(key + ".part"),
                dest=done,
                size=f.size,
                sha256=f.sha256 or None,
                etag=str(data.get("etag") or "") if single else "",
                headers=_headers(data["metadata"]["source"], f.source),
                what=f"{a.model}/{f.dest}",
            )
            progress = None if self.progress is None else (lambda n: self.progress(a, n))  # type: ignore[misc]
            hashes = http.download(job, self._client(), progress=progress)
            _remember_fetched(done, hashes)
        return done, hashes

    def _client(self) -> Client:
        if self._http is None:
            from reconciler.sources import http

            self._http = http.client()
        return self._http

    def _download(self, a: Action) -> str:
        """Fetch each file (resumable: see :mod:`reconciler.sources.http`), verified, into
        ``.mlib/staging/partial/``, then build the model folder as an import does. A file
        fetched in full before a crash is kept there, with its hashes, and not fetched again."""
        self._client()  # made here, in this thread, before any other could race to make it

        def fetch(f: ImportFile, dest: Path) -> FileHashes:
            done, hashes = self._fetch(a, f)
            try:
                os.link(done, dest)  # the model folder gets the file; partial/ lets go of it below
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                    raise
                os.replace(done, dest)  # no hard links here: a crash now costs a new download
            return hashes

        def release(staged: Path) -> None:
            if self.on_downloaded is not None:
                self.on_downloaded(a, staged)
            # Just before the rename into place: the staged folder holds the files (hard links),
            # and after the rename no plan would ever clear partial/ of them (the model is
            # complete). A kill in between costs a new download, never a leftover.
            for f in a.files:
                key = _fetch_key(f)
                for name in (key, key + ".json"):
                    (self.root / PARTIAL / name).unlink(missing_ok=True)

        return self._assemble(a, fetch, release)

    def _assemble(
        self,
        a: Action,
        bring: Callable[[ImportFile, Path], FileHashes],
        before_rename: Callable[[Path], None] | None = None,
    ) -> str:
        """Build the model folder ``a.path`` in staging (each file brought by ``bring``, hashed,
        then metadata.json and overrides.json) and rename it into place: complete or absent."""
        data = json.loads(a.data)
        final = Path(a.path)
        if final.exists():
            raise ReconcilerError(f"{final} appeared since the plan was made; run plan again")
        staging = self.root / STAGING / a.model.replace("/", "__")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        files: list[dict[str, Any]] = []
        stats: list[tuple[str, FileHashes]] = []
        for f in a.files:
            dest = staging / f.dest
            dest.parent.mkdir(parents=True, exist_ok=True)
            hashes = bring(f, dest)
            files.append(
                {
                    "path": f.dest,
                    "size": hashes.size,
                    "sha256": hashes.sha256,
                    "blake3": hashes.blake3,
                }
            )
            stats.append((f.dest, hashes))
        now = self.clock()
        meta = dict(data["metadata"])
        primary = max(files, key=lambda f: (f["size"], f["path"])) if files else None
        meta.update(
            files=files,
            hashes=None
            if primary is None
            else {"sha256": primary["sha256"], "blake3": primary["blake3"]},
            size_bytes=sum(f["size"] for f in files),
            added_at=now,
            updated_at=now,
        )
        fsops.atomic_write(
            staging / METADATA_FILE, dumps(metadata_to_dict(metadata_from_dict(meta)))
        )
        fsops.atomic_write(staging / OVERRIDES_FILE, dumps(data["overrides"]))
        final.parent.mkdir(parents=True, exist_ok=True)
        if before_rename is not None:
            before_rename(staging)
        os.rename(staging, final)  # the model appears complete, or not at all
        fsops.fsync_dir(final.parent)
        for rel, hashes in stats:
            self.index.cache_hashes(final / rel, hashes.sha256, hashes.blake3)
        return f"{len(files)} file(s), {sum(f['size'] for f in files)} bytes"

    def _bring(self, source: Path, dest: Path, a: Action) -> FileHashes:
        """Put ``source`` at ``dest`` (a hardlink when asked or moving, else a copy) and hash it."""
        progress = None if self.progress is None else (lambda n: self.progress(a, n))  # type: ignore[misc]
        if a.mode in ("hardlink", "move"):
            try:
                os.link(source, dest)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                    raise
                log.info("cannot hardlink %s (%s); copying", source, exc.strerror)
            else:
                return hash_file(dest, progress)
        before = source.stat()
        hashes = copy_and_hash(source, dest, progress)
        if hashes.size != before.st_size:
            raise ReconcilerError(f"{source} changed while it was copied; run apply again")
        return hashes

    def _rename(self, a: Action) -> str:
        target = Path(a.target)
        if target.exists():
            raise ReconcilerError(f"{target} already exists; refusing to overwrite it")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(a.path, target)
        fsops.fsync_dir(target.parent)
        return f"now {target}"

    def _write_metadata(self, a: Action) -> str:
        data = json.loads(a.data)
        data["updated_at"] = self.clock()
        fsops.atomic_write(Path(a.path), dumps(data), tmp_dir=self._staging())
        return "written"

    def _write_overrides(self, a: Action) -> str:
        fsops.atomic_write(Path(a.path), a.data.encode("utf-8"), tmp_dir=self._staging())
        return "written"

    def _staging(self) -> Path | None:
        """``.mlib/staging``, made if need be: where a write into a model folder makes its
        temporary file, so that a kill leaves it where the next plan clears it (None, for
        beside the file, when it is a symlink: never followed out of the library)."""
        staging = self.root / STAGING
        if staging.is_symlink():
            return None
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def _write_config(self, a: Action) -> str:
        """Set (or remove) mlib's section of a ComfyUI extra_model_paths.yaml as text: the lines
        of every other section, comment and blank stay byte for byte (a YAML round trip would
        re-indent them). The result is read back as ComfyUI reads it before it is written."""
        import yaml

        data = json.loads(a.data)
        name, section = data["name"], data["section"]
        path = Path(os.path.realpath(a.path))  # a symlinked config file stays a symlink
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if section is None and not text:
            return "nothing to remove"
        new = _with_section(text, name, section)
        try:
            read = yaml.safe_load(new) or {}
        except yaml.YAMLError as exc:
            raise ReconcilerError(f"{a.path} would not read back ({exc}); left as it is") from None
        if not isinstance(read, dict) or read.get(name) != section:
            raise ReconcilerError(f"{a.path} would not read back as written; left as it is")
        path.parent.mkdir(parents=True, exist_ok=True)
        fsops.atomic_write(path, new.encode("utf-8"), tmp_dir=self._staging())
        return "section removed" if section is None else "section written"

    def _set_aside(self, a: Action) -> str:
        """Move an adopted copy out of the link's way into ``.mlib/trash/adopted/``, only while it
        still holds the very bytes adoption found (sha256 checked now) and the library holds them
        too: nothing is lost, and it can be taken back."""
        path = Path(a.path)
        if path.is_symlink() or not path.is_file():
            raise ReconcilerError(f"{path} is no longer a plain file; left as it is")
        now = hash_file(path).sha256
        if now != a.data:
            raise ReconcilerError(f"{path} changed since 'mlib adopt' looked at it; left in place")
        if hash_file(Path(a.target)).sha256 != now:
            raise ReconcilerError(f"{a.target} does not hold {path}'s bytes; {path} left in place")
        try:
            moved = fsops.move_to_trash(path, self.root / TRASH / "adopted")
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise ReconcilerError(
                    f"{path} is on another filesystem than the library; remove it yourself "
                    "(the library holds the same bytes), then apply again"
                ) from None
            raise
        return f"set aside as {moved}"

    def _index_upsert(self, a: Action) -> str:
        entry = read_entry(a.model, a.path)
        if isinstance(entry, Skipped):
            raise ReconcilerError(f"cannot index {a.model}: {entry.reason}")
        self.index.upsert(entry)
        return "indexed"

    def _index_delete(self, a: Action) -> str:
        self.index.delete(a.model)
        return "removed from the index"

    def _link(self, a: Action) -> str:
        record = LinkRecord(a.app, a.path, a.model, self._file_of(a), a.mode)
        if a.data == "adopt":
            self.index.add_link(record)
            return "recorded"
        self.index.add_link(record)  # first: the registry names every link mlib may have made
        made = fsops.make_link(Path(a.target), Path(a.path), a.mode)
        self.index.add_link(LinkRecord(a.app, a.path, a.model, record.file, made))
        return made

    def _relink(self, a: Action) -> str:
        link = Path(a.path)
        if link.is_symlink():
            made = fsops.replace_link(Path(a.target), link, a.mode, None)
        else:
            raise ReconcilerError(f"{link} is no longer a symlink; run plan again")
        self.index.add_link(LinkRecord(a.app, a.path, a.model, self._file_of(a), made))
        return made

    def _unlink(self, a: Action) -> str:
        link = Path(a.path)
        if os.path.lexists(link):
            expected = Path(a.target) if a.target else None
            fsops.remove_link(link, expected, a.mode)
        if a.app:
            self.index.remove_link(a.app, a.path)
        return "removed"

    def _finish_move(self, a: Action) -> str:
        """Remove a moved source only while it is the very file the library holds (one inode),
        and only through a path outside the library (through a symlink to a library folder, the
        "source" would be the library's own file)."""
        library = os.path.realpath(self.root) + os.sep
        if os.path.realpath(os.path.dirname(os.path.abspath(a.path))).startswith(library):
            raise ReconcilerError(f"{a.path} is inside the library (through a link); left alone")
        source, kept = os.stat(a.path, follow_symlinks=False), os.stat(a.target)
        if (source.st_dev, source.st_ino) != (kept.st_dev, kept.st_ino):
            raise ReconcilerError(f"{a.path} is no longer the library's file; left in place")
        os.unlink(a.path)
        return "source removed; the library holds it"

    def _trash(self, a: Action) -> str:
        moved = fsops.move_to_trash(Path(a.path), Path(a.target))
        return f"moved to {moved}"

    def _file_of(self, a: Action) -> str:
        folder = os.path.join(str(self.root), a.model)
        rel = os.path.relpath(a.target, folder)
        return "" if rel == "." else rel.replace(os.sep, "/")


def _check_own_folders(root: Path) -> None:
    """mlib's own folders (``.mlib``, its staging and trash) must be real folders in the
    library: through a symlink to elsewhere, apply would clear, stage or trash files out there."""
    real = os.path.realpath(root)
    for rel in (".mlib", STAGING, PARTIAL, TRASH):
        path = root / rel
        if os.path.lexists(path) and (
            os.path.islink(path) or os.path.realpath(path) != os.path.join(real, rel)
        ):
            raise ReconcilerError(
                f"{path} is a symlink, or inside one, pointing out of the library; mlib never "
                "stages, clears or trashes files through it (remove the link, then apply again)"
            )


def _headers(source: dict[str, Any], url: str) -> dict[str, str]:
    """Request headers for fetching ``url`` of ``source``: the Hub's (with its token) only when
    ``url`` is on the Hub mlib talks to; a URL host's token only for that host (a lock naming
    another host gets no token). Never logged or written."""
    if "hf" in source:
        from reconciler.sources import hf

        return hf.headers_for(url)
    from reconciler.sources import url as url_source

    return url_source.headers(url)


def _prune_empty(folder: Path) -> None:
    """Remove ``folder`` and the folders in it, bottom up, as far as they are empty: a file
    left in it (one mlib did not move) keeps it and its parents."""
    for current, _dirs, _files in os.walk(folder, topdown=False):
        with contextlib.suppress(OSError):  # not empty: kept
            os.rmdir(current)


def _with_section(text: str, name: str, section: dict[str, str] | None) -> str:
    """``text`` with its top-level ``name:`` block (the key line and what follows up to the next
    line that starts in column 0) replaced by ``section``, appended when absent, or removed."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    start = next(
        (i for i, line in enumerate(lines) if line.rstrip("\r\n").split("#")[0].strip()
         in (f"{name}:", f"{name}: ")),
        None,
    )  # fmt: skip
    block: list[str] = []
    if section is not None:
        block = [f"{name}:", "  # written by mlib apply from mlib.yaml: edits here are replaced"]
        for key, value in section.items():
            if "\n" in value:
                block.append(f"  {key}: |")
                block += [f"    {line}" for line in value.rstrip("\n").split("\n")]
            else:
                block.append(f"  {key}: {json.dumps(value)}")
        block = [line + newline for line in block]
    if start is None:
        if not block:
            return text
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        return "".join(lines + block)
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # blank lines before the next key stay
        end -= 1
    return "".join(lines[:start] + block + lines[end:])


def _fetch_key(f: ImportFile) -> str:
    return fetch_key(f)  # one definition: the planner keeps the files its downloads need


def _fetched(done: Path, f: ImportFile) -> FileHashes | None:
    """The hashes of a file fetched and verified by an earlier, interrupted apply, if it is
    still there whole (its size and recorded hashes agree with what the plan expects)."""
    try:
        data = json.loads(done.with_name(done.name + ".json").read_text(encoding="utf-8"))
        hashes = FileHashes(int(data["size"]), str(data["sha256"]), str(data["blake3"]))
        if done.stat().st_size != hashes.size:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (f.size >= 0 and hashes.size != f.size) or (f.sha256 and hashes.sha256 != f.sha256):
        return None
    return hashes


def _remember_fetched(done: Path, hashes: FileHashes) -> None:
    data = {"size": hashes.size, "sha256": hashes.sha256, "blake3": hashes.blake3}
    fsops.atomic_write(done.with_name(done.name + ".json"), json.dumps(data).encode())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc)


__all__ = ["TRASH", "Executor", "Outcome", "Report", "Step"]
