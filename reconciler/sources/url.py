"""URL sources: one file from a plain HTTP(S) address.

Resolving asks the server (``HEAD``, following redirects; a ``GET`` that reads no body where
``HEAD`` is refused) for the final address, the size and the ETag, and names the file: the
manifest's ``filename``, else the ``Content-Disposition`` header's, else the last segment of the
URL's path; always cleaned and checked against path traversal. A token for a host comes from the
environment, ``MLIB_TOKEN_<HOST>`` (``MLIB_TOKEN_CIVITAI_COM`` for civitai.com), sent as
``Authorization: Bearer``, and only in requests to that host: never written to disk or logs.
"""

from __future__ import annotations

import os
import re
from email.message import Message
from urllib.parse import unquote, urlsplit

from reconciler.errors import NamingError, SourceError
from reconciler.facts import RemoteFile
from reconciler.model import UrlSource
from reconciler.naming import clean_filename
from reconciler.sources.http import RETRY_STATUSES, Client, shown


def describe(source: UrlSource) -> str:
    return shown(source.url)


def token_variable(url: str) -> str:
    """The environment variable holding the token for ``url``'s host."""
    try:
        host = (urlsplit(url).hostname or "").upper()
    except ValueError:  # not a URL: no host, no token
        host = ""
    return "MLIB_TOKEN_" + re.sub(r"[^A-Z0-9]", "_", host)


def headers(url: str) -> dict[str, str]:
    token = os.environ.get(token_variable(url), "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def resolve(
    source: UrlSource, http: Client, *, sha256: str | None = None
) -> tuple[str, str, RemoteFile]:
    """``(final URL, ETag, file)`` of ``source``; ``sha256`` is the manifest's pin, if any."""
    what = describe(source)
    try:
        response = http.open("HEAD", source.url, headers(source.url))
        if response.status in (405, 501):  # no HEAD here: a GET, closed before the body
            response.close()
            response = http.open("GET", source.url, headers(source.url))
        response.close()
    except SourceError as exc:
        message, fix = f"{what}: {exc.message}", "check the URL and the network"
        raise SourceError(message, fix) from None  # unreachable: waiting would not help a plan
    status = response.status
    if status in (401, 403):
        raise SourceError(
            f"{what}: the server refused access ({status})",
            f"set {token_variable(source.url)} to a token for this host",
        )
    if status == 404:
        raise SourceError(f"{what}: not found (404)", "check the URL")
    if status in RETRY_STATUSES:
        raise SourceError(f"{what}: the server answered {status}", "try again later", retry=True)
    if status >= 400:
        raise SourceError(f"{what}: the server answered {status}", "check the URL")
    length = response.headers.get("Content-Length", "")
    size = int(length) if length.isdigit() and status == 200 else -1
    name = _name(source, response.url, response.headers.get("Content-Disposition", ""))
    etag = response.headers.get("ETag", "")
    # The final address names where the file came from; its query (a CDN's signature, a
    # token) is left out of the lock, the metadata and the plan.
    return shown(response.url), etag, RemoteFile(name, source.url, size, sha256)


def _name(source: UrlSource, final: str, disposition: str) -> str:
    """The file's name: the manifest's, the server's, or the URL's last segment, cleaned."""
    if source.filename:
        candidate, origin = source.filename, "the manifest's filename"
    elif filename := _disposition_filename(disposition):
        candidate, origin = filename, "the server's Content-Disposition"
    else:
        candidate = unquote(urlsplit(final).path.rsplit("/", 1)[-1])
        origin = "the URL"
    try:
        return clean_filename(candidate.replace("\\", "/").rsplit("/", 1)[-1])
    except NamingError as exc:
        raise SourceError(
            f"{describe(source)}: no usable file name from {origin} ({exc})",
            "give one with 'filename:' in the source",
        ) from None


def _disposition_filename(value: str) -> str:
    """The file name of a Content-Disposition header (``filename*`` preferred), or ``""``."""
    if not value:
        return ""
    message = Message()
    message["Content-Disposition"] = value
    try:
        name = message.get_filename()
    except (ValueError, LookupError):  # a charset the server made up (a NUL in it, say)
        return ""
    return name or ""
