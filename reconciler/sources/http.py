"""Fetch one file over HTTP(S) into staging: resumable across processes, hashed, verified.

The bytes go to ``<part>`` (a path the caller picks in ``.mlib/staging/``), with a small sidecar
``<part>.json`` naming what they are (a digest of the URL, the server's ETag, the total size).
A download killed at any moment leaves both; the next attempt, in this process or another one,
hashes the bytes already there and asks the server for the rest with ``Range`` and ``If-Range``
(so a file that changed on the server is fetched again from zero, never spliced). A server that
ignores ``Range`` answers 200: the part is started over. Connection errors, timeouts, 5xx and 429
are retried with exponential backoff (``Retry-After`` is honoured); other errors fail at once.

When the last byte is in, the size and the sha256 (when one is expected: a pin, the lock, or the
Hub's LFS metadata) are checked: a mismatch deletes the part and fails, and nothing is installed.
Only then is the part renamed to its final name. sha256 and blake3 are computed from the same
bytes as they arrive (:class:`~reconciler.hashing.StreamHasher`); there is no second pass.

Request headers (a token) are never written anywhere: not to the sidecar, not to logs, not to
errors. URLs are logged and shown without their query string, which may carry a signature.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from reconciler.durable import fsync_dir
from reconciler.errors import SourceError
from reconciler.hashing import FILE_MODE, FileHashes, StreamHasher, StreamingWriter

log = logging.getLogger(__name__)

#: Bytes read from the socket (and from a part being resumed) at a time.
CHUNK = 1 << 20
#: Statuses worth retrying: the server is busy or broken for a moment.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Retry:
    """How often and how long to retry: ``attempts`` requests in all, waiting ``base`` seconds
    doubled after each failure up to ``cap`` (or what ``Retry-After`` says, up to ``cap``)."""

    attempts: int = 6
    base: float = 1.0
    cap: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap)
        return min(self.base * 2.0**attempt, self.cap)


@dataclass(frozen=True)
class Fetch:
    """One file to fetch: from ``url`` into ``part`` (renamed to ``dest`` once verified)."""

    url: str
    part: Path
    dest: Path
    size: int = -1  # expected size; -1 when not known
    sha256: str | None = None  # expected sha256 (lowercase hex), when known
    etag: str = ""  # the ETag it must have (from mlib.lock), when known
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    what: str = ""  # how errors name it: the model id and file


def shown(url: str) -> str:
    """``url`` without its query and fragment (a signed URL's signature stays out of logs)."""
    try:
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    except ValueError:  # not even a URL: cut it at the query all the same
        return url.split("?", 1)[0].split("#", 1)[0]


class Response:
    """An HTTP answer: status, headers (case-insensitive ``get``), final URL, and the body to
    read (error answers too). Close it, or use it in ``with``."""

    def __init__(self, status: int, headers: Message, url: str, body: Any) -> None:
        self.status = status
        self.headers = headers
        self.url = url
        self._body = body

    def read1(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body with at most one read from the socket (what has
        arrived, so a cut or a kill loses nothing received); ``b""`` at the end."""
        data: bytes = self._body.read1(size)
        return data

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """HTTP(S) for downloads, on the standard library: proxies from the environment (as urllib
    reads them), HTTPS with the system's CAs, redirects followed with ``Authorization`` dropped
    when they leave the host (as to the Hub's CDN), and a socket timeout that also bounds a body
    that stalls. The body is read in pieces of up to 1 MiB, as they arrive: ~3 GB/s on loopback,
    where httpx's iterators give ~1.4 (see ``benchmarks/download_bench.py``)."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_Redirects())

    def open(self, method: str, url: str, headers: Mapping[str, str]) -> Response:
        """Send one request; any status comes back as a :class:`Response`. Raises
        :class:`SourceError` (``retry`` set) when no answer came (refused, reset, timed out)."""
        if not url.startswith(("http://", "https://")):
            raise SourceError(f"{shown(url)} is not an http(s) URL", "fix the URL, or the lock")
        try:
            request = urllib.request.Request(url, headers=dict(headers), method=method)
            answer = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:  # a status >= 400: an answer all the same
            return Response(exc.code, exc.headers, exc.geturl(), exc)
        except (ValueError, UnicodeError) as exc:  # a malformed address, refused before sending
            raise SourceError(f"{shown(url)} is not a usable URL ({exc})", "fix the URL") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise _Retryable(f"connection failed ({reason})") from None
        if answer.status is None:  # a non-HTTP answer (urllib lets file: and the like through)
            answer.close()
            raise SourceError(f"{shown(url)} did not answer over HTTP", "fix the URL")
        return Response(answer.status, answer.headers, answer.geturl(), answer)

    def close(self) -> None:
        self._opener.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, without the token on a redirect to another host."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            if _origin(newurl) != _origin(req.full_url):
                new.remove_header("Authorization")
            if req.get_method() == "HEAD":  # urllib would follow a HEAD with a GET
                new.method = "HEAD"
        return new


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def client(timeout: float = 30.0) -> Client:
    """A :class:`Client` for downloads and for asking a server about a file."""
    return Client(timeout)


def download(
    fetch: Fetch,
    http: Client,
    *,
    progress: Progress | None = None,
    retry: Retry | None = None,
) -> FileHashes:
    """Fetch ``fetch.url`` into ``fetch.dest``, resuming what an earlier attempt left in
    ``fetch.part``; the hashes of the verified file. Raises :class:`SourceError`."""
    fetch.part.parent.mkdir(parents=True, exist_ok=True)
    job = _Download(fetch, http, progress)
    try:
        return job.run(retry or Retry())
    finally:
        job.hasher.close()


class _Retryable(SourceError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry=True)
        self.retry_after = retry_after


class _Download:
    """One file's download: the part on disk and the hasher that has seen exactly its bytes."""

    def __init__(self, fetch: Fetch, http: Client, progress: Progress | None) -> None:
        self.fetch = fetch
        self.http = http
        self.progress = progress
        self.what = fetch.what or shown(fetch.url)
        self.part = _Part(fetch)
        self.hasher = StreamHasher()
        self.part.resume(self.hasher, progress)

    def run(self, policy: Retry) -> FileHashes:
        attempt = 0
        while True:
            before = self.hasher.size
            try:
                self._request()
                break
            except SourceError as exc:
                if self.hasher.size > before:
                    attempt = 0  # bytes came: a flaky link, not a dead one; the budget restarts
                if not exc.retry or attempt + 1 >= policy.attempts:
                    raise SourceError(f"{self.what}: {exc.message}", exc.fix) from None
                wait = policy.delay(attempt, getattr(exc, "retry_after", None))
                log.info("%s: %s; retrying in %.1f s", self.what, exc.message, wait)
                policy.sleep(wait)
                attempt += 1
                if self.part.size() != self.hasher.size:  # a write failed half-way: re-read
                    self._restart(keep=True)
        hashes = self.hasher.result()
        self._verify(hashes)
        os.replace(self.fetch.part, self.fetch.dest)
        fsync_dir(self.fetch.dest.parent)
        self.part.forget()
        return hashes

    def _restart(self, *, keep: bool) -> None:
        """A new hasher over what the part holds (``keep``), or over nothing (part removed)."""
        self.hasher.close()
        if not keep:
            self.part.truncate()
        self.hasher = StreamHasher()
        self.part.resume(self.hasher, None)

    def _request(self) -> None:
        """One GET from the first byte not yet here, appended to the part. Raises
        :class:`SourceError` (``retry`` set when another attempt may succeed)."""
        fetch = self.fetch
        have = self.hasher.size
        headers = dict(fetch.headers)
        if have:
            headers["Range"] = f"bytes={have}-"
            if self.part.etag:
                headers["If-Range"] = self.part.etag
        with self.http.open("GET", fetch.url, headers) as response:
            status = response.status
            if status in RETRY_STATUSES:
                raise _Retryable(f"the server answered {status}", _retry_after(response))
            if status == 416 and have:
                if have == fetch.size or have == self.part.total:
                    return  # everything was already here
                self._restart(keep=False)
                raise _Retryable("the server refused the resume range", 0.0)
            if status >= 400:
                raise _status_error(status)
            if status not in (200, 206):  # a redirect loop, 300, 304...: not the file
                raise SourceError(
                    f"the server answered {status} instead of the file",
                    "check the URL (a redirect that never ends, or a page instead of a file)",
                )
            etag = response.headers.get("ETag", "")
            if fetch.etag and etag and etag != fetch.etag:
                self._restart(keep=False)
                raise SourceError(
                    f"the file changed on the server (ETag {etag}, mlib.lock has {fetch.etag})",
                    "run 'mlib lock' to resolve it again, review, then apply",
                )
            start, total = _span(response)
            if have and status == 206 and not self.part.same(etag, total):
                # Resumed, but the server now has another file (If-Range not honoured, or no
                # ETag to ask with): never splice two files; fetch the new one whole.
                log.info("%s: the file changed on the server; starting over", self.what)
                self._restart(keep=False)
                raise _Retryable("the file changed on the server since the part was fetched", 0.0)
            if have and status == 200:  # Range ignored, or the file changed (If-Range)
                log.info("%s: the server sends the whole file; starting over", self.what)
                self._restart(keep=False)
                have = 0
            if start != have:
                self._restart(keep=False)
                raise _Retryable("the server resumed at the wrong byte", 0.0)
            if fetch.size >= 0 and total >= 0 and total != fetch.size:
                self._restart(keep=False)
                raise SourceError(
                    f"the server says the file has {total} bytes, {fetch.size} were expected",
                    "the remote file changed: run 'mlib lock' to resolve it again",
                )
            self.part.begin(etag, total)
            self._append(response)
        expected = fetch.size if fetch.size >= 0 else self.part.total
        if expected >= 0 and self.hasher.size < expected:
            raise _Retryable(f"the connection ended after {self.hasher.size} of {expected} bytes")

    def _append(self, response: Response) -> None:
        """The body, appended as it arrives (a cut keeps every byte received); fsynced."""
        progress = self.progress
        fd = os.open(self.fetch.part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            out = StreamingWriter(fd, os.fstat(fd).st_size)  # writeback as it goes: the final
            # fsync has little left, and a large download does not fill the page cache
            while data := _receive(response):
                try:
                    out.write(memoryview(data))
                except OSError as exc:  # the disk, not the network: no retry helps
                    raise SourceError(
                        f"cannot write {self.fetch.part} ({exc.strerror})",
                        "free some space (the part is kept: apply again resumes it)",
                    ) from None
                self.hasher.update(data)
                if progress is not None:
                    progress(len(data))
        finally:
            os.fsync(fd)
            os.close(fd)

    def _verify(self, hashes: FileHashes) -> None:
        fetch = self.fetch
        expected = fetch.size if fetch.size >= 0 else self.part.total
        problem = ""
        if expected >= 0 and hashes.size != expected:
            problem = f"got {hashes.size} bytes, expected {expected}"
        elif fetch.sha256 and hashes.sha256 != fetch.sha256:
            problem = f"sha256 is {hashes.sha256}, expected {fetch.sha256}"
        if problem:
            self.part.truncate()
            self.part.forget()
            raise SourceError(
                f"{self.what}: wrong bytes ({problem}); deleted, nothing installed",
                "the server sent something else: try again, or check the pin or the lock",
            )


def _span(response: Response) -> tuple[int, int]:
    """(first byte, total size) of a 200 or 206 answer; -1 for a total the server did not give."""
    if response.status == 206:
        value = response.headers.get("Content-Range", "")
        try:
            _, _, rest = value.partition(" ")
            span, _, total = rest.partition("/")
            first = int(span.split("-")[0])
            return first, (int(total) if total != "*" else -1)
        except ValueError:
            return -1, -1
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else -1


def _receive(response: Response) -> bytes:
    """The next piece of the body; a lost connection is worth another attempt."""
    try:
        return response.read1(CHUNK)
    except (OSError, http.client.HTTPException) as exc:  # reset, timed out, bad chunk
        raise _Retryable(f"connection failed ({type(exc).__name__})") from None


def _retry_after(response: Response) -> float | None:
    """Seconds a ``Retry-After`` asks for (a number or an HTTP date); None when absent or
    unreadable (the backoff decides then)."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_error(status: int) -> SourceError:
    if status in (401, 403):
        return SourceError(
            f"the server refused the download ({status})",
            "check the token for this host (HF_TOKEN for the Hub, MLIB_TOKEN_<HOST> for a URL)",
        )
    if status == 404:
        return SourceError("not found on the server (404)", "check the URL, repo and file name")
    return SourceError(f"the server answered {status}", "try again later, or check the URL")


class _Part:
    """The partial file and its sidecar (what the bytes are: URL digest, ETag, total size)."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self.sidecar = fetch.part.with_name(fetch.part.name + ".json")
        self.url_key = hashlib.sha256(fetch.url.encode("utf-8", "surrogatepass")).hexdigest()
        self.etag = ""
        self.total = -1

    def size(self) -> int:
        try:
            return self.fetch.part.stat().st_size
        except FileNotFoundError:
            return 0

    def resume(self, hasher: StreamHasher, progress: Progress | None) -> int:
        """Feed the bytes already in the part to the fresh ``hasher``; how many there are (0: a
        fresh start, the part removed when it was not this URL's or is longer than the file)."""
        have = self.size()
        known = self._read_sidecar()
        usable = (
            have > 0
            and known is not None
            and known.get("url_sha256") == self.url_key
            and (self.fetch.size < 0 or have <= self.fetch.size)
        )
        if not usable:
            self.truncate()
            return 0
        assert known is not None
        self.etag = str(known.get("etag") or "")
        size = known.get("size", -1)
        self.total = size if isinstance(size, int) else -1
        with open(self.fetch.part, "rb") as fh:
            while chunk := fh.read(CHUNK):
                hasher.update(chunk)
        if progress is not None:
            progress(have)
        log.info("%s: resuming after %d bytes", shown(self.fetch.url), have)
        return have

    def same(self, etag: str, total: int) -> bool:
        """Whether an answer with ``etag`` and ``total`` is of the file the part holds the
        start of (what is known of each side must agree)."""
        if etag and self.etag and etag != self.etag:
            return False
        return not (total >= 0 and self.total >= 0 and total != self.total)

    def begin(self, etag: str, total: int) -> None:
        """Record what the bytes about to be appended are, before appending them."""
        if etag == self.etag and total == self.total and self.sidecar.exists():
            return
        self.etag, self.total = etag, total
        data = {"url_sha256": self.url_key, "etag": etag, "size": total}  # never the headers
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        tmp.unlink(missing_ok=True)  # made anew with mlib's mode, never writable by others
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data))
        os.replace(tmp, self.sidecar)

    def truncate(self) -> None:
        self.fetch.part.unlink(missing_ok=True)
        self.etag, self.total = "", -1

    def forget(self) -> None:
        self.sidecar.unlink(missing_ok=True)

    def _read_sidecar(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
