"""Resolve the manifest's remote sources into exact files (layer L2: the network, or mlib.lock).

Only models that have to be downloaded are resolved: a remote model already in the library is
its metadata. For each, a current ``mlib.lock`` entry (its ``spec`` matches the manifest) is used
as it is, without the network; otherwise the Hub or the server is asked, unless the plan must not
(``--locked``: only the lock counts; offline: ``--offline`` or ``HF_HUB_OFFLINE``), in which case
the model gets an error saying how to fix it. Failures never raise: each becomes the model's
:class:`~reconciler.facts.RemoteFacts` error, which the plan shows as a conflict.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from reconciler.errors import SourceError
from reconciler.facts import LibraryModel, RemoteFacts
from reconciler.lockfile import LockEntry, is_remote, spec_key
from reconciler.model import HfSource, Manifest, ModelSpec, UrlSource

if TYPE_CHECKING:
    from reconciler.sources.http import Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resolved:
    remotes: dict[str, RemoteFacts]
    #: Whether anything was asked of the network (such a plan is not kept for replay).
    networked: bool = False


def resolve_remotes(
    manifest: Manifest,
    library: Mapping[str, LibraryModel],
    lock: Mapping[str, LockEntry],
    *,
    offline: bool = False,
    locked: bool = False,
    fresh: bool = False,
) -> Resolved:
    """The remote facts of every remote model not in the library (of every remote model, asked of
    the network, with ``fresh``: what ``mlib lock`` does)."""
    wanted = [
        spec for spec in manifest.models if is_remote(spec) and (fresh or spec.id not in library)
    ]
    out: dict[str, RemoteFacts] = {}
    networked = False
    with _Clients() as clients:
        for spec in wanted:
            entry = lock.get(spec.id)
            current = entry is not None and entry.spec == spec_key(spec)
            if current and not fresh:
                assert entry is not None
                out[spec.id] = _pinned(entry.facts(spec.id), spec)
            elif locked:
                why = "is not in mlib.lock" if entry is None else "changed since mlib.lock was made"
                out[spec.id] = RemoteFacts(
                    spec.id,
                    error=f"--locked: the source of {spec.id} {why}",
                    fix="run 'mlib lock' and commit mlib.lock, or apply without --locked",
                )
            elif offline:
                out[spec.id] = RemoteFacts(
                    spec.id,
                    error=f"offline, and the source of {spec.id} is not in mlib.lock",
                    fix="run 'mlib lock' while online, or plan without --offline/HF_HUB_OFFLINE",
                )
            else:
                networked = True
                out[spec.id] = resolve_one(spec, clients)
    return Resolved(out, networked)


def _pinned(facts: RemoteFacts, spec: ModelSpec) -> RemoteFacts:
    """``facts`` with the manifest's sha256 pin on its single file: the pin wins over the lock."""
    if spec.sha256 is None or len(facts.files) != 1:
        return facts
    return replace(facts, files=(replace(facts.files[0], sha256=spec.sha256),))


#: Seconds to wait before each new attempt at a resolution that may succeed later (429, 5xx,
#: connection): three attempts in all.
RESOLVE_RETRY_WAITS = (1.0, 4.0)


def resolve_one(spec: ModelSpec, clients: _Clients) -> RemoteFacts:
    """Ask the Hub or the server, again after a short wait when the failure may pass (rate limit,
    a server error, the connection); a failure is the facts' error, never raised."""
    for wait in RESOLVE_RETRY_WAITS:
        facts, retry = _resolve_once(spec, clients)
        if not retry:
            return facts
        log.info("resolving %s: %s; again in %.0f s", spec.id, facts.error, wait)
        time.sleep(wait)
    return _resolve_once(spec, clients)[0]


def _resolve_once(spec: ModelSpec, clients: _Clients) -> tuple[RemoteFacts, bool]:
    source = spec.source
    try:
        if isinstance(source, HfSource):
            from reconciler.sources import hf

            commit, files = hf.resolve(source, sha256=spec.sha256)
            return RemoteFacts(spec.id, f"hf:{source.repo}@{commit}", files), False
        if isinstance(source, UrlSource):
            from reconciler.sources import url

            final, etag, file = url.resolve(source, clients.http(), sha256=spec.sha256)
            return RemoteFacts(spec.id, final, (file,), etag), False
    except SourceError as exc:
        log.info("cannot resolve %s: %s", spec.id, exc.message)
        return RemoteFacts(spec.id, error=exc.message, fix=exc.fix), exc.retry
    raise AssertionError(f"not a remote source: {source!r}")


class _Clients:
    """One HTTP client for the URL sources of a resolution, made when first needed."""

    def __init__(self) -> None:
        self._http: Client | None = None

    def http(self) -> Client:
        if self._http is None:
            from reconciler.sources.http import client

            self._http = client()
        return self._http

    def __enter__(self) -> _Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._http is not None:
            self._http.close()


def lock_problems(manifest: Manifest, lock: Mapping[str, LockEntry]) -> list[str]:
    """Why ``lock`` is out of date with ``manifest``: remote models missing or changed, and
    entries of models no longer in it (empty when the lock is current)."""
    problems = []
    remote = {spec.id: spec for spec in manifest.models if is_remote(spec)}
    for model_id, spec in sorted(remote.items()):
        entry = lock.get(model_id)
        if entry is None:
            problems.append(f"{model_id}: not in mlib.lock")
        elif entry.spec != spec_key(spec):
            problems.append(f"{model_id}: its source or pin changed in the manifest")
        elif spec.sha256 and any(f.sha256 not in (None, spec.sha256) for f in entry.files):
            problems.append(f"{model_id}: the lock's sha256 is not the manifest's pin")
    problems += [
        f"{m}: in mlib.lock but not a remote model of the manifest" for m in _extra(lock, remote)
    ]
    return problems


def _extra(lock: Mapping[str, LockEntry], remote: Iterable[str]) -> list[str]:
    return sorted(set(lock) - set(remote))
