"""Hugging Face sources: a repo, a revision and file patterns, resolved to exact files.

The only module that imports ``huggingface_hub`` (imported on first use: ~0.3 s). Resolving asks
the Hub for the revision's commit sha (``model_info``) and for that commit's file tree
(``list_repo_tree``), keeps the files the ``files:`` patterns select and ``exclude:`` does not,
and takes each file's size and, for LFS files, its sha256 from the tree. Downloads use the
commit's ``resolve`` URLs and the Hub's own headers (the token from ``HF_TOKEN`` or the
``hf auth login`` file); :mod:`reconciler.sources.http` fetches them into staging, never into the
user's Hugging Face cache.

Every failure becomes one :class:`~reconciler.errors.SourceError` naming the model's source and
the fix: missing or private repo, gated repo, missing revision, no file matching, rate limit,
offline, Hub unreachable.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from reconciler.errors import NamingError, SourceError
from reconciler.facts import RemoteFile
from reconciler.model import HfSource
from reconciler.naming import check_relpath, clean_filename

log = logging.getLogger(__name__)

_COMMIT = re.compile(r"[0-9a-f]{40}").fullmatch
_SHA256 = re.compile(r"[0-9a-f]{64}").fullmatch

#: Files of a repo that are never model files, skipped unless a pattern names them.
SKIPPED = frozenset({".gitattributes"})


def describe(source: HfSource) -> str:
    return f"hf:{source.repo}@{source.revision}"


def resolve(
    source: HfSource, *, endpoint: str | None = None, sha256: str | None = None
) -> tuple[str, tuple[RemoteFile, ...]]:
    """``(commit sha, files)`` of ``source`` on the Hub; a single file gets a cleaned name,
    the files of a multi-file selection keep their relative paths (bundles refer to them).
    ``sha256`` (the manifest's pin) is what a single file must hash to."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint)
    with _errors(source):
        info = api.model_info(source.repo, revision=source.revision)
        commit = info.sha
        if not isinstance(commit, str) or not _COMMIT(commit):
            raise SourceError(
                f"{describe(source)}: the Hub did not say which commit this is ({commit!r})",
                "try again later",
            )
        tree = [
            entry
            for entry in api.list_repo_tree(source.repo, revision=commit, recursive=True)
            if isinstance(entry, RepoFile)
        ]
    for entry in tree:  # what the code below relies on; a damaged reply is no traceback
        lfs_sha = entry.lfs.sha256 if entry.lfs is not None else None
        if not (
            isinstance(entry.path, str)
            and type(entry.size) is int
            and entry.size >= 0
            and (lfs_sha is None or (isinstance(lfs_sha, str) and _SHA256(lfs_sha)))
        ):
            raise SourceError(
                f"{describe(source)}: the Hub listed a malformed file entry "
                f"(path {entry.path!r}, size {entry.size!r}, sha256 {lfs_sha!r})",
                "try again later",
            )
    chosen = sorted((e for e in tree if _selected(e.path, source)), key=lambda e: e.path)
    if not chosen:
        patterns = ", ".join(source.files) or "(all files)"
        raise SourceError(
            f"{describe(source)}: no file matches {patterns}"
            + (f" without {', '.join(source.exclude)}" if source.exclude else ""),
            "check 'files:' and 'exclude:' against the repo's file list on the Hub",
        )
    if info.gated:  # listing a gated repo is allowed; its files need accepted terms and a token
        from huggingface_hub import get_hf_file_metadata

        with _errors(source):
            get_hf_file_metadata(file_url(source.repo, chosen[0].path, commit, endpoint))
    single = len(chosen) == 1 and "/" not in chosen[0].path
    files = []
    for entry in chosen:
        dest = _dest(entry.path, single, source)
        lfs_sha = entry.lfs.sha256 if entry.lfs is not None else None
        files.append(
            RemoteFile(
                path=dest,
                url=file_url(source.repo, entry.path, commit, endpoint),
                size=int(entry.size),
                sha256=(sha256 if len(chosen) == 1 and sha256 else lfs_sha) or None,
            )
        )
    return commit, tuple(files)


def file_url(repo: str, path: str, commit: str, endpoint: str | None) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo, path, revision=commit, endpoint=endpoint)


def headers_for(url: str) -> dict[str, str]:
    """The Hub's request headers (user agent, and the token when there is one) for ``url`` when
    it is on the Hub mlib talks to (``HF_ENDPOINT``); none for any other host, whatever a lock
    says. The download client also drops the token on the redirect to the CDN."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # lazy export

    if _origin(url) != _origin(constants.ENDPOINT):
        return {}
    return dict(build_hf_headers())


def _origin(url: str) -> tuple[str, str, int | None]:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return ("", url, None)


def _selected(path: str, source: HfSource) -> bool:
    if source.files:
        if not any(fnmatch.fnmatchcase(path, p) for p in source.files):
            return False
    elif path in SKIPPED:
        return False
    return not any(fnmatch.fnmatchcase(path, p) for p in source.exclude)


def _dest(path: str, single: bool, source: HfSource) -> str:
    try:
        return clean_filename(path) if single else str(check_relpath(path))
    except NamingError as exc:
        raise SourceError(
            f"{describe(source)}: the Hub names a file {path!r} that is not a safe path ({exc})",
            "exclude it with 'exclude:'",
        ) from None


@contextmanager
def _errors(source: HfSource) -> Iterator[None]:
    """Turns what huggingface_hub and its HTTP client raise into one SourceError."""
    try:
        yield
    except SourceError:
        raise
    except Exception as exc:  # the Hub client's errors have no common base but Exception
        raise _translate(exc, source) from None


def _translate(exc: BaseException, source: HfSource) -> SourceError:
    import httpx2
    from huggingface_hub import errors

    what = describe(source)
    if isinstance(exc, errors.GatedRepoError):
        return SourceError(
            f"{what}: the repo is gated",
            "accept its terms on the Hub, then log in (hf auth login) or set HF_TOKEN",
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return SourceError(
            f"{what}: no such repo (or it is private)",
            "check the repo id; for a private repo, log in or set HF_TOKEN",
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return SourceError(
            f"{what}: no revision {source.revision!r} in the repo",
            "check 'revision:' (a branch, a tag or a commit sha)",
        )
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return SourceError(
            f"{what}: offline (HF_HUB_OFFLINE is set) and not in mlib.lock",
            "run 'mlib lock' while online, or unset HF_HUB_OFFLINE",
        )
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status == 429:
            return SourceError(
                f"{what}: the Hub is rate limiting requests (429)",
                "wait a minute and try again; logging in raises the limit",
                retry=True,
            )
        return SourceError(f"{what}: the Hub answered {status or 'an error'}", "try again later")
    if isinstance(exc, httpx2.TransportError | ConnectionError | TimeoutError):
        return SourceError(
            f"{what}: cannot reach the Hub ({type(exc).__name__})",
            "check the network, or set HF_HUB_OFFLINE=1 to plan from mlib.lock",
        )
    return SourceError(f"{what}: {type(exc).__name__}: {exc}", "report this as a bug in mlib")
