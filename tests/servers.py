"""Local HTTP servers for download tests: a fake Hugging Face Hub (with its fake LFS CDN) and a plain
URL server. Both bind 127.0.0.1 on ephemeral ports, serve from daemon threads and stop on exit::

    with FakeHub() as hub:
        sha = hub.add_repo("org/model", {"config.json": b"{}", "model.safetensors": weights})
        HfApi(endpoint=hub.endpoint).model_info("org/model").sha == sha

    with UrlServer() as srv:
        srv.add("/m/model.bin", data, content_disposition='attachment; filename="model.bin"')
        srv.cut_after(1000)                # the next GET sends 1000 bytes, then hangs up
        httpx2.get(srv.url("/m/model.bin"))

The Hub side mirrors what ``huggingface_hub`` 2.4 reads (functions named below are in that package):

* ``HfApi.model_info`` -> ``GET /api/models/{repo_id}[/revision/{quote(rev, safe="")}]``
  (``?blobs=True`` when ``files_metadata=True``), parsed by ``hf_api.ModelInfo``.
* ``HfApi.list_repo_tree`` -> ``GET /api/models/{repo_id}/tree/{rev}[/{quote(path, safe="")}]``
  ``?recursive=..&expand=..``, paginated by a ``Link: <..>; rel="next"`` header
  (``utils/_pagination._paginate_pages``), entries parsed by ``hf_api.RepoFile`` / ``RepoFolder``.
* ``hf_hub_download`` -> ``HEAD /{repo_id}/resolve/{rev}/{path}`` through
  ``file_download.get_hf_file_metadata``, which does NOT follow a redirect to another origin
  (``utils/_http._httpx2_follow_hub_redirects_with_backoff``): it reads ``X-Repo-Commit``,
  ``X-Linked-Etag`` (else ``ETag``), ``X-Linked-Size`` (else ``Content-Length`` when not a
  redirect) and ``Location`` from the 302 itself, then ``file_download.http_get`` GETs the
  ``Location`` directly, without the ``authorization`` header
  (``file_download._get_metadata_or_catch_error`` pops it for a foreign origin).
* Errors: ``utils/_http.hf_raise_for_status`` maps the ``X-Error-Code`` header (``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``) to typed errors. Without the header a 401
  only becomes ``RepositoryNotFoundError`` for ``https://`` URLs, so this fake always sends it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal, NamedTuple, Self
from urllib.parse import parse_qs, quote, unquote, urlencode

import pytest

HOST = "127.0.0.1"
#: Per-connection socket timeout: an idle keep-alive connection or a silent client frees its
#: handler thread after this long, even if nobody stops the server.
SOCKET_TIMEOUT = 10.0
#: How long ``close()`` waits for handler threads to finish after their sockets are shut down.
JOIN_TIMEOUT = 2.0
_WRITE_CHUNK = 1 << 20
#: Files this big, or with these suffixes, are stored in LFS unless ``lfs=`` says otherwise.
LFS_THRESHOLD = 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf")
_FLIP = bytes(b ^ 0xFF for b in range(256))  # wrong_bytes(): same length, every byte different


# --------------------------------------------------------------------------------------------
# Requests log and faults (shared by both servers)


class SeenRequest(NamedTuple):
    """One request as the server saw it."""

    method: str
    path: str  #: the raw request target: URL-quoted path plus ``?query``
    headers: dict[str, str]  #: header names lower-cased (``headers["range"]``)


FaultKind = Literal["cut_after", "ignore_range", "wrong_bytes", "slow", "status", "stall"]


@dataclass
class Fault:
    """A pending fault. ``status`` faults hit any request; the others only GETs that send a body."""

    kind: FaultKind
    times: int = 1
    path: str | None = None  #: only requests for this (unquoted) path, query ignored
    n_bytes: int = 0
    bytes_per_second: int = 0
    code: int = 0
    retry_after: int | None = None
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.path is not None and self.path != path:
            return False
        return self.kind == "status" or method == "GET"


class _FaultQueue:
    """FIFO of pending faults; each request takes the first one that matches it (at most one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Fault] = []

    def push(self, fault: Fault) -> None:
        if fault.times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._items.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._items):
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times == 0:
                        del self._items[i]
                    return fault
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class FaultControls:
    """Fault knobs, each consumed by the next matching request(s) (see ``Fault.matches``).

    On ``UrlServer`` they apply to every request; on ``FakeHub`` to the CDN port only (use
    ``FakeHub.rate_limit`` / ``FakeHub.api_status`` for the Hub port). ``path`` restricts a fault
    to one path (for the CDN: ``hub.lfs_path(repo_id, filename)``).
    """

    _faults: _FaultQueue

    def cut_after(self, n_bytes: int, *, times: int = 1, path: str | None = None) -> None:
        """Send the headers with the full Content-Length, then ``n_bytes`` of body, then hang up."""
        self._faults.push(Fault("cut_after", times, path, n_bytes=n_bytes))

    def ignore_range(self, *, times: int = 1, path: str | None = None) -> None:
        """Answer 200 with the whole body even when a Range is asked for."""
        self._faults.push(Fault("ignore_range", times, path))

    def wrong_bytes(self, *, times: int = 1, path: str | None = None) -> None:
        """Send as many bytes as expected, every one of them wrong (headers, ETag unchanged)."""
        self._faults.push(Fault("wrong_bytes", times, path))

    def slow(self, bytes_per_second: int, *, times: int = 1, path: str | None = None) -> None:
        """Throttle the body to about ``bytes_per_second``."""
        if bytes_per_second < 1:
            raise ValueError("bytes_per_second must be >= 1")
        self._faults.push(Fault("slow", times, path, bytes_per_second=bytes_per_second))

    def status(
        self, code: int, *, times: int = 1, retry_after: int | None = None, path: str | None = None
    ) -> None:
        """Answer ``code`` (with ``Retry-After`` if given) instead of serving the request."""
        self._faults.push(Fault("status", times, path, code=code, retry_after=retry_after))

    def stall(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Send the headers, then nothing for ``seconds`` (keep it short), then the body."""
        self._faults.push(Fault("stall", times, path, seconds=seconds))

    @property
    def pending_faults(self) -> list[Fault]:
        """Faults not consumed yet (assert ``== []`` to check a test used all it set up)."""
        return self._faults.pending()

    def clear_faults(self) -> None:
        self._faults.clear()


# --------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries a Content-Length
    timeout = SOCKET_TIMEOUT
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle + delayed ACK add
        # ~40 ms to every small response on a keep-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self)

    def do_GET(self) -> None:
        self.server.route(self)

    def do_HEAD(self) -> None:
        self.server.route(self)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests assert on the requests log instead

    # -- responses

    @property
    def url_path(self) -> str:
        """The unquoted path, without the query."""
        return unquote(self.path.partition("?")[0])

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.path.partition("?")[2])

    def reply(self, code: int, headers: Mapping[str, str] | None = None, body: bytes = b"") -> None:
        """A complete small response (the body is left out for HEAD, its length is not)."""
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def reply_json(self, code: int, obj: object, headers: Mapping[str, str] | None = None) -> None:
        all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        self.reply(code, all_headers, json.dumps(obj).encode())

    def hang_up(self) -> None:
        """Close after what was sent: the client sees EOF before Content-Length bytes arrived."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, route: Callable[[_Handler], None]) -> None:
        self.route = route
        self._lock = threading.Lock()
        self._live: dict[_Handler, threading.Thread] = {}
        super().__init__((HOST, 0), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def track(self, handler: _Handler) -> None:
        with self._lock:
            self._live[handler] = threading.current_thread()

    def untrack(self, handler: _Handler) -> None:
        with self._lock:
            self._live.pop(handler, None)

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the client went away or the socket timed out: not a bug in the server
        super().handle_error(request, client_address)  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop accepting, cut every open connection, wait (bounded) for handler threads."""
        self.shutdown()
        with self._lock:
            live = dict(self._live)
        for handler in live:
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
        self.server_close()
        for thread in live.values():
            thread.join(JOIN_TIMEOUT)


class _ServerBase:
    """Lifecycle, requests log and body serving shared by FakeHub and UrlServer."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._log_lock = threading.Lock()
        self._log: list[tuple[str, SeenRequest]] = []
        self._servers: list[_HTTPServer] = []
        self._threads: list[threading.Thread] = []

    def _listen(self, route: Callable[[_Handler], None]) -> _HTTPServer:
        server = _HTTPServer(route)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"{type(self).__name__}:{server.port}",
            daemon=True,
        )
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)
        return server

    def _start(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()  # wakes stall()/slow() sleepers
        for server in self._servers:
            server.stop()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)
        self._servers.clear()
        self._threads.clear()

    def _record(self, origin: str, handler: _Handler) -> None:
        headers = {name.lower(): value for name, value in handler.headers.items()}
        with self._log_lock:
            self._log.append((origin, SeenRequest(handler.command, handler.path, headers)))

    def _seen(self, origin: str | None = None) -> list[SeenRequest]:
        with self._log_lock:
            return [seen for o, seen in self._log if origin is None or o == origin]

    @property
    def requests(self) -> list[SeenRequest]:
        """Every request seen so far, in arrival order (a snapshot copy)."""
        return self._seen()

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    # -- bodies

    def _reply_status_fault(
        self, handler: _Handler, fault: Fault, extra: Mapping[str, str] | None = None
    ) -> None:
        headers = {"Content-Type": "text/plain; charset=utf-8", **(extra or {})}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        handler.reply(fault.code, headers, f"{fault.code} (injected fault)\n".encode())

    def _serve_bytes(
        self,
        handler: _Handler,
        data: bytes,
        *,
        etag: str,
        headers: Mapping[str, str],
        fault: Fault | None = None,
    ) -> None:
        """200/206/416 for ``data`` with Range and If-Range support, applying a body fault."""
        total = len(data)
        start, end = 0, total
        out = {"Accept-Ranges": "bytes", "ETag": etag, **headers}
        code = 200
        range_header = handler.headers.get("Range")
        honour_range = (
            range_header is not None
            and (fault is None or fault.kind != "ignore_range")
            and _if_range_allows(handler.headers.get("If-Range"), etag)
        )
        if honour_range and range_header is not None:
            wanted = _parse_range(range_header, total)
            if wanted == "unsatisfiable":
                handler.reply(416, {**out, "Content-Range": f"bytes */{total}"})
                return
            if wanted is not None:
                start, end = wanted
                code = 206
                out["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        handler.send_response(code)
        for name, value in out.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(end - start))
        handler.end_headers()
        if handler.command == "HEAD":
            return

        try:
            self._write_body(handler, memoryview(data)[start:end], fault)
        except (ConnectionError, TimeoutError):
            handler.close_connection = True  # the client went away

    def _write_body(self, handler: _Handler, body: memoryview, fault: Fault | None) -> None:
        """Write ``body`` (sliced, never copied, unless wrong_bytes() must alter it)."""
        if fault is None or fault.kind == "ignore_range":
            for offset in range(0, len(body), _WRITE_CHUNK):
                handler.wfile.write(body[offset : offset + _WRITE_CHUNK])
        elif fault.kind == "wrong_bytes":
            handler.wfile.write(bytes(body).translate(_FLIP))
        elif fault.kind == "cut_after":
            handler.wfile.write(body[: fault.n_bytes])
            if fault.n_bytes < len(body):
                handler.hang_up()
        elif fault.kind == "slow":
            step = max(1, fault.bytes_per_second // 20)  # ~20 writes a second
            for offset in range(0, len(body), step):
                handler.wfile.write(body[offset : offset + step])
                if self._stopping.wait(step / fault.bytes_per_second):
                    handler.hang_up()  # the server is stopping
                    return
        elif fault.kind == "stall":
            if self._stopping.wait(fault.seconds):
                handler.hang_up()  # the server is stopping
                return
            self._write_body(handler, body, None)


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _parse_range(header: str, total: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One ``bytes=`` range as [start, end) clamped to the body, or None to ignore the header
    (malformed or multi-range: RFC 9110 lets a server answer 200 with the whole body)."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        return max(0, total - suffix), total
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= total:
        return "unsatisfiable"
    end = total if last == "" else min(total, int(last) + 1)
    return start, end


def _if_range_allows(if_range: str | None, etag: str) -> bool:
    """If-Range: honour the Range only if the validator is our strong ETag (dates never match:
    these servers send no Last-Modified), else the client gets the whole new body with 200."""
    return if_range is None or (if_range.strip() == etag and not etag.startswith("W/"))


# --------------------------------------------------------------------------------------------
# Fake Hugging Face Hub


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub sends as ETag of a regular file)."""
    digest = hashlib.sha1(f"blob {len(data)}\0".encode())
    digest.update(data)
    return digest.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


@dataclass(frozen=True)
class _HubFile:
    data: bytes
    lfs: bool
    git_oid: str  #: sha1 of the git blob: the file itself, or its LFS pointer
    sha256: str | None  #: LFS files only
    pointer_size: int

    @classmethod
    def make(cls, data: bytes, lfs: bool) -> _HubFile:
        if not lfs:
            return cls(data, False, git_blob_sha1(data), None, 0)
        sha256 = hashlib.sha256(data).hexdigest()
        pointer = lfs_pointer(sha256, len(data))
        return cls(data, True, git_blob_sha1(pointer), sha256, len(pointer))


@dataclass(frozen=True)
class _Commit:
    sha: str
    files: Mapping[str, _HubFile]
    date: str  #: ISO 8601 as the Hub writes it (``hf_api.parse_datetime`` wants ``...sssZ``)


@dataclass
class _Repo:
    repo_id: str
    private: bool
    gated: Literal[False, "auto", "manual"]
    created: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> _Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(sha)


def _is_lfs(path: str, data: bytes, lfs: Collection[str] | None) -> bool:
    if lfs is not None:
        return path in lfs
    return len(data) >= LFS_THRESHOLD or path.endswith(LFS_SUFFIXES)


def _tree_oid(files: Mapping[str, _HubFile], prefix: str) -> str:
    digest = hashlib.sha1(b"tree\0")
    for path in sorted(files):
        if path.startswith(prefix):
            digest.update(f"{path}\0{files[path].git_oid}\n".encode())
    return digest.hexdigest()


def _parent_dirs(path: str) -> Iterable[str]:
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])


class FakeHub(FaultControls, _ServerBase):
    """A Hugging Face Hub on 127.0.0.1 (model repos only) with LFS bodies on a second port.

    Fault knobs inherited from ``FaultControls`` act on the CDN port; ``rate_limit`` and
    ``api_status`` act on the Hub port (API routes and ``/resolve``).
    """

    def __init__(self, *, token: str = "hf_fakehub_token", tree_page_size: int = 1000) -> None:
        super().__init__()
        self.token = token  #: the only token that opens private and gated repos
        self.tree_page_size = tree_page_size  #: entries per tree page (the Hub uses 1000)
        self._faults = _FaultQueue()
        self._api_faults = _FaultQueue()
        self._state = threading.RLock()
        self._repos: dict[str, _Repo] = {}
        self._lfs_blobs: dict[str, bytes] = {}  # sha256 -> bytes: what the CDN serves
        self._clock = 0
        self._hub: _HTTPServer | None = None
        self._cdn: _HTTPServer | None = None

    def _start(self) -> None:
        self._hub = self._listen(self._route_hub)
        self._cdn = self._listen(self._route_cdn)

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` of the Hub: pass it as ``HfApi(endpoint=...)``."""
        if self._hub is None:
            raise RuntimeError("FakeHub is not started: use it as a context manager")
        return f"http://{HOST}:{self._hub.port}"

    @property
    def cdn_endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` of the fake CDN the LFS redirects point to."""
        if self._cdn is None:
            raise RuntimeError("FakeHub is not started: use it as a context manager")
        return f"http://{HOST}:{self._cdn.port}"

    @property
    def hub_requests(self) -> list[SeenRequest]:
        """Requests seen by the Hub port."""
        return self._seen("hub")

    @property
    def cdn_requests(self) -> list[SeenRequest]:
        """Requests seen by the CDN port."""
        return self._seen("cdn")

    # -- repository content

    def _tick(self) -> str:
        self._clock += 1
        minutes, seconds = divmod(self._clock, 60)
        return f"2024-01-01T{minutes // 60 % 24:02d}:{minutes % 60:02d}:{seconds:02d}.000Z"

    def _commit(
        self,
        repo: _Repo,
        parent: _Commit | None,
        files: Mapping[str, bytes | None],
        lfs: Collection[str] | None,
    ) -> _Commit:
        tree = dict(parent.files) if parent is not None else {}
        for path, data in files.items():
            if path.startswith("/") or path.endswith("/") or "//" in path or not path:
                raise ValueError(f"bad repo path {path!r}")
            if data is None:
                tree.pop(path, None)
            else:
                tree[path] = _HubFile.make(data, _is_lfs(path, data, lfs))
        digest = hashlib.sha1(f"commit\0{repo.repo_id}\0".encode())
        digest.update(f"{parent.sha if parent else ''}\0{_tree_oid(tree, '')}".encode())
        commit = _Commit(digest.hexdigest(), tree, self._tick())
        repo.commits[commit.sha] = commit
        for f in tree.values():
            if f.sha256 is not None:
                self._lfs_blobs[f.sha256] = f.data
        return commit

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        lfs: Collection[str] | None = None,
        branches: Iterable[str] = ("main",),
        tags: Iterable[str] = (),
        private: bool = False,
        gated: bool | Literal["auto", "manual"] = False,
    ) -> str:
        """Create a repo whose branches and tags all point at one commit; return its sha.

        ``lfs``: the paths stored in LFS (default: files >= 1 KiB or named *.safetensors, *.bin,
        *.gguf). The sha is deterministic: same repo id and content, same sha.
        """
        with self._state:
            if repo_id in self._repos:
                raise ValueError(f"repo {repo_id} exists")
            gated_value: Literal[False, "auto", "manual"] = (
                "auto" if gated is True else gated if gated else False
            )
            repo = _Repo(repo_id, private, gated_value, created=self._tick())
            commit = self._commit(repo, None, files, lfs)
            repo.branches = dict.fromkeys(branches, commit.sha)
            repo.tags = dict.fromkeys(tags, commit.sha)
            if not repo.branches:
                raise ValueError("a repo needs at least one branch")
            self._repos[repo_id] = repo
            return commit.sha

    def add_commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes | None],
        *,
        branch: str = "main",
        lfs: Collection[str] | None = None,
    ) -> str:
        """Move ``branch`` to a new commit: its parent's files updated with ``files`` (a ``None``
        value deletes that path). A new branch starts from ``main``. Old commits stay resolvable
        by sha, tags don't move. Returns the new sha."""
        with self._state:
            repo = self._repos[repo_id]
            parent_sha = repo.branches.get(branch) or repo.branches["main"]
            commit = self._commit(repo, repo.commits[parent_sha], files, lfs)
            repo.branches[branch] = commit.sha
            return commit.sha

    def add_tag(self, repo_id: str, tag: str, revision: str = "main") -> str:
        """Point ``tag`` at the commit ``revision`` resolves to; return that sha."""
        with self._state:
            repo = self._repos[repo_id]
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(revision)
            repo.tags[tag] = commit.sha
            return commit.sha

    def head(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha a branch, tag or sha resolves to."""
        with self._state:
            commit = self._repos[repo_id].resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return commit.sha

    def lfs_path(self, repo_id: str, filename: str, revision: str = "main") -> str:
        """The CDN path (``/lfs/<sha256>``) an LFS file redirects to, for ``path=`` filters."""
        with self._state:
            commit = self._repos[repo_id].resolve(revision)
            sha256 = commit.files[filename].sha256 if commit is not None else None
        if sha256 is None:
            raise KeyError(f"{filename} is not an LFS file at {revision}")
        return f"/lfs/{sha256}"

    # -- Hub port faults

    def api_status(self, code: int, *, times: int = 1, retry_after: int | None = None) -> None:
        """The next ``times`` requests to the Hub port (API or /resolve) get ``code``."""
        self._api_faults.push(Fault("status", times, code=code, retry_after=retry_after))

    def rate_limit(self, n: int, retry_after: int = 1) -> None:
        """The next ``n`` requests to the Hub port get 429 with ``Retry-After`` and the Hub's
        ``RateLimit`` headers (read by ``utils/_http.parse_ratelimit_headers``)."""
        self.api_status(429, times=n, retry_after=retry_after)

    @property
    def pending_api_faults(self) -> list[Fault]:
        """``api_status`` / ``rate_limit`` faults not consumed yet."""
        return self._api_faults.pending()

    # -- routes

    def _auth_ok(self, handler: _Handler) -> bool:
        return handler.headers.get("Authorization") == f"Bearer {self.token}"

    @staticmethod
    def _error(handler: _Handler, code: int, error_code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message}
        if error_code is not None:
            headers["X-Error-Code"] = error_code
        handler.reply_json(code, {"error": message}, headers)

    def _find_repo(self, segments: list[str]) -> tuple[_Repo, list[str]] | None:
        """Split raw path segments into a known repo ("ns/name" or "name") and the rest."""
        names = [unquote(s) for s in segments]
        with self._state:
            if len(names) >= 2 and (repo := self._repos.get(f"{names[0]}/{names[1]}")):
                return repo, segments[2:]
            if names and (repo := self._repos.get(names[0])):
                return repo, segments[1:]
        return None

    def _route_hub(self, handler: _Handler) -> None:
        self._record("hub", handler)
        path = handler.path.partition("?")[0]
        if path == "/api/agent-harnesses":
            # Fetched by utils/_detect_agent.py for the User-Agent when HF_ENDPOINT points here.
            handler.reply_json(200, {"standardEnvVars": [], "harnesses": {}})
            return
        fault = self._api_faults.take(handler.command, handler.url_path)
        if fault is not None:
            extra = {}
            if fault.code == 429:
                reset = fault.retry_after or 0
                extra = {
                    "RateLimit": f'"api";r=0;t={reset}',
                    "RateLimit-Policy": '"fixed window";"api";q=500;w=300',
                }
            self._reply_status_fault(handler, fault, extra)
            return
        segments = path.split("/")[1:]
        if segments[:2] == ["api", "models"] and len(segments) > 2:
            found = self._find_repo(segments[2:])
            if found is None:
                self._error(handler, 404, "RepoNotFound", "Repository not found")
            else:
                self._api_models(handler, *found)
            return
        found = self._find_repo(segments)
        if found is not None and len(found[1]) >= 3 and found[1][0] == "resolve":
            self._resolve(handler, *found)
        elif "resolve" in segments:
            self._error(handler, 404, "RepoNotFound", "Repository not found")
        else:
            handler.reply(404, {"Content-Type": "text/plain"}, b"Not Found\n")

    def _check_access(self, handler: _Handler, repo: _Repo, *, files: bool) -> bool:
        """Private repos hide from anyone without the token; gated ones hide their file contents
        (the Hub shows the info and tree of a gated repo to everyone)."""
        if repo.private and not self._auth_ok(handler):
            self._error(handler, 401, "RepoNotFound", "Repository not found")
            return False
        if files and repo.gated and not self._auth_ok(handler):
            anonymous = handler.headers.get("Authorization") is None
            message = (
                f"Access to model {repo.repo_id} is restricted. You must have access to it and"
                " be authenticated to access it. Please log in."
                if anonymous
                else f"Access to model {repo.repo_id} is restricted and you are not in the"
                " authorized list."
            )
            self._error(handler, 401 if anonymous else 403, "GatedRepo", message)
            return False
        return True

    def _commit_or_404(self, handler: _Handler, repo: _Repo, raw_revision: str) -> _Commit | None:
        revision = unquote(raw_revision)
        with self._state:
            commit = repo.resolve(revision)
        if commit is None:
            self._error(handler, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _api_models(self, handler: _Handler, repo: _Repo, rest: list[str]) -> None:
        if not self._check_access(handler, repo, files=False):
            return
        query = handler.query
        if not rest or rest == [""]:
            commit = self._commit_or_404(handler, repo, "main")
            if commit is not None:
                handler.reply_json(200, self._model_info(repo, commit, query))
        elif rest[0] == "revision" and len(rest) == 2:
            commit = self._commit_or_404(handler, repo, rest[1])
            if commit is not None:
                handler.reply_json(200, self._model_info(repo, commit, query))
        elif rest[0] == "tree" and len(rest) >= 2:
            commit = self._commit_or_404(handler, repo, rest[1])
            if commit is not None:
                self._tree(handler, commit, unquote("/".join(rest[2:])).strip("/"), query)
        elif rest == ["refs"]:
            with self._state:
                handler.reply_json(200, self._refs(repo))
        else:
            handler.reply(404, {"Content-Type": "text/plain"}, b"Not Found\n")

    @staticmethod
    def _model_info(repo: _Repo, commit: _Commit, query: dict[str, list[str]]) -> object:
        """The fields ``hf_api.ModelInfo`` reads; ``?blobs=true`` adds sizes and LFS info."""
        blobs = query.get("blobs", [""])[0].lower() in ("true", "1")
        siblings: list[dict[str, object]] = []
        for name in sorted(commit.files):
            f = commit.files[name]
            sibling: dict[str, object] = {"rfilename": name}
            if blobs:
                sibling["size"] = len(f.data)
                sibling["blobId"] = f.git_oid
                if f.lfs:
                    sibling["lfs"] = {
                        "sha256": f.sha256,
                        "size": len(f.data),
                        "pointerSize": f.pointer_size,
                    }
            siblings.append(sibling)
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": author,
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }

    def _tree(
        self, handler: _Handler, commit: _Commit, base: str, query: dict[str, list[str]]
    ) -> None:
        """``hf_api.RepoFile`` / ``RepoFolder`` entries. As on the Hub, a recursive listing holds
        the directories too, and an LFS file's ``size`` is its real size (not the pointer's)."""
        files = commit.files
        dirs = {d for path in files for d in _parent_dirs(path)}
        if base and base not in dirs:
            self._error(handler, 404, "EntryNotFound", f"{base} does not exist on {commit.sha}")
            return
        recursive = query.get("recursive", [""])[0].lower() in ("true", "1")
        prefix = f"{base}/" if base else ""

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        entries: list[dict[str, object]] = []
        for d in sorted(filter(listed, dirs)):
            entries.append(
                {"type": "directory", "oid": _tree_oid(files, f"{d}/"), "size": 0, "path": d}
            )
        for path in sorted(filter(listed, files)):
            f = files[path]
            entry: dict[str, object] = {
                "type": "file",
                "oid": f.git_oid,
                "size": len(f.data),
                "path": path,
            }
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": f.pointer_size}
            entries.append(entry)
        entries.sort(key=lambda e: str(e["path"]))

        cursor = int(query.get("cursor", ["0"])[0] or 0)
        page = entries[cursor : cursor + self.tree_page_size]
        headers = {}
        if cursor + self.tree_page_size < len(entries):
            params = {k: v[0] for k, v in query.items() if k != "cursor"}
            params["cursor"] = str(cursor + self.tree_page_size)
            next_url = f"{self.endpoint}{handler.path.partition('?')[0]}?{urlencode(params)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        handler.reply_json(200, page, headers)

    @staticmethod
    def _refs(repo: _Repo) -> object:
        def ref(name: str, kind: str, sha: str) -> dict[str, str]:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

        return {
            "branches": [ref(n, "heads", s) for n, s in sorted(repo.branches.items())],
            "converts": [],
            "tags": [ref(n, "tags", s) for n, s in sorted(repo.tags.items())],
            "pullRequests": [],
        }

    def _resolve(self, handler: _Handler, repo: _Repo, rest: list[str]) -> None:
        """``/{repo}/resolve/{rev}/{path}``: a regular file is served here; an LFS file is a 302
        to the CDN whose own headers carry the metadata, as ``get_hf_file_metadata`` expects."""
        if not self._check_access(handler, repo, files=True):
            return
        commit = self._commit_or_404(handler, repo, rest[1])
        if commit is None:
            return
        filename = unquote("/".join(rest[2:]))
        f = commit.files.get(filename)
        if f is None:
            # X-Repo-Commit lets hf_hub_download cache the absence under .no_exist/<sha>/.
            handler.reply_json(
                404,
                {"error": "Entry not found"},
                {
                    "X-Error-Code": "EntryNotFound",
                    "X-Error-Message": "Entry not found",
                    "X-Repo-Commit": commit.sha,
                },
            )
            return
        basename = filename.rsplit("/", 1)[-1]
        disposition = f"inline; filename*=UTF-8''{quote(basename)}; filename=\"{basename}\";"
        if f.lfs:
            handler.reply(
                302,
                {
                    "Location": f"{self.cdn_endpoint}/lfs/{f.sha256}",
                    "X-Repo-Commit": commit.sha,
                    "X-Linked-Etag": f'"{f.sha256}"',
                    "X-Linked-Size": str(len(f.data)),
                    "ETag": f'"{f.git_oid}"',
                    "Content-Type": "text/plain; charset=utf-8",
                },
            )
            return
        self._serve_bytes(
            handler,
            f.data,
            etag=f'"{f.git_oid}"',
            headers={
                "X-Repo-Commit": commit.sha,
                "Content-Type": "application/octet-stream",
                "Content-Disposition": disposition,
            },
        )

    def _route_cdn(self, handler: _Handler) -> None:
        self._record("cdn", handler)
        path = handler.url_path
        fault = self._faults.take(handler.command, path)
        if fault is not None and fault.kind == "status":
            self._reply_status_fault(handler, fault)
            return
        match = re.fullmatch(r"/lfs/([0-9a-f]{64})", path)
        with self._state:
            data = self._lfs_blobs.get(match.group(1)) if match else None
        if match is None or data is None:
            handler.reply(404, {"Content-Type": "application/xml"}, b"<Error>NoSuchKey</Error>")
            return
        self._serve_bytes(
            handler,
            data,
            etag=f'"{match.group(1)}"',
            headers={"Content-Type": "application/octet-stream"},
            fault=fault,
        )


# --------------------------------------------------------------------------------------------
# Plain URL server


@dataclass(frozen=True)
class _UrlFile:
    data: bytes
    etag: str
    content_disposition: str | None
    auth: str | None
    content_type: str


class UrlServer(FaultControls, _ServerBase):
    """Files at fixed paths for plain URL downloads, with Range/If-Range, auth and redirects."""

    def __init__(self) -> None:
        super().__init__()
        self._faults = _FaultQueue()
        self._state = threading.Lock()
        self._files: dict[str, _UrlFile] = {}
        self._redirects: dict[str, tuple[str, int]] = {}
        self._server: _HTTPServer | None = None

    def _start(self) -> None:
        self._server = self._listen(self._route)

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("UrlServer is not started: use it as a context manager")
        return f"http://{HOST}:{self._server.port}"

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (quoted)."""
        return f"{self.endpoint}{quote(path)}"

    def add(
        self,
        path: str,
        data: bytes,
        *,
        content_disposition: str | None = None,
        etag: str | None = None,
        auth: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Serve ``data`` at ``path`` (replacing what was there); return its URL.

        ``etag`` is sent verbatim (include the quotes); default: ``"<first 16 hex of sha256>"``.
        ``auth``: the exact ``Authorization`` value required, else 401.
        """
        if not path.startswith("/"):
            raise ValueError("path must start with /")
        if etag is None:
            etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        with self._state:
            self._files[path] = _UrlFile(data, etag, content_disposition, auth, content_type)
        return self.url(path)

    def remove(self, path: str) -> None:
        with self._state:
            self._files.pop(path, None)

    def redirect(self, src: str, dst: str, *, code: int = 302) -> str:
        """``src`` answers ``code`` with ``Location: dst`` (a path here, or any absolute URL)."""
        with self._state:
            self._redirects[src] = (dst, code)
        return self.url(src)

    def _route(self, handler: _Handler) -> None:
        self._record("url", handler)
        path = handler.url_path
        fault = self._faults.take(handler.command, path)
        if fault is not None and fault.kind == "status":
            self._reply_status_fault(handler, fault)
            return
        with self._state:
            target = self._redirects.get(path)
            file = self._files.get(path)
        if target is not None:
            dst, code = target
            location = self.url(dst) if dst.startswith("/") else dst
            handler.reply(code, {"Location": location})
            return
        if file is None:
            handler.reply(404, {"Content-Type": "text/plain"}, b"Not Found\n")
            return
        if file.auth is not None and handler.headers.get("Authorization") != file.auth:
            handler.reply(
                401, {"WWW-Authenticate": "Bearer", "Content-Type": "text/plain"}, b"401\n"
            )
            return
        headers = {"Content-Type": file.content_type}
        if file.content_disposition is not None:
            headers["Content-Disposition"] = file.content_disposition
        self._serve_bytes(handler, file.data, etag=file.etag, headers=headers, fault=fault)


# --------------------------------------------------------------------------------------------
# huggingface_hub isolation


def isolate_hf_client(monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> None:
    """Make an in-process ``huggingface_hub`` client safe for tests, and subprocesses too.

    ``huggingface_hub.constants`` reads its environment once, at import (often during test
    collection, before conftest's fixtures set HF_HOME), so setting env vars alone is not enough:
    this patches the constants as well. It also sets HF_HUB_DISABLE_TELEMETRY, without which the
    first ``build_hf_headers`` call fetches ``https://huggingface.co/api/agent-harnesses`` (for the
    User-Agent, ``utils/_detect_agent.py``) and caches it under the real HF_HOME.
    """
    from huggingface_hub import constants

    hf_home.mkdir(parents=True, exist_ok=True)
    env = {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "NO_PROXY": HOST,
        "no_proxy": HOST,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HF_HUB_OFFLINE", "HF_XET_CACHE", "HF_ASSETS_CACHE", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    patches: dict[str, object] = {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(hf_home / ".check_for_update_done"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_OFFLINE": False,
    }
    for name, constant in patches.items():
        monkeypatch.setattr(constants, name, constant, raising=False)
