"""Review of the download code: each test proves one bug (it fails now, and passes once fixed).

Servers are ``tests/servers.py``'s, on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import cast

import pytest
from scenario import mlib, project
from servers import FakeHub, UrlServer, _Handler, isolate_hf_client

from reconciler.errors import SourceError
from reconciler.sources.http import Fetch, Retry, client, download


def blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


NO_WAIT = Retry(attempts=4, base=0.0, sleep=lambda s: None)
ONCE = Retry(attempts=1, sleep=lambda s: None)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate_hf_client(monkeypatch, tmp_path / "hf-home")
    return tmp_path


@pytest.fixture
def url_server() -> Iterator[UrlServer]:
    with UrlServer() as srv:
        yield srv


@pytest.fixture
def hub(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)  # read by the mlib subprocesses
        yield fake


def lora(source: Mapping[str, object], name: str = "L", **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "type": "diffusion",
        "family": "sdxl",
        "kind": "lora",
        "source": dict(source),
        **extra,
    }


# --- reconciler/sources/http.py: the resumable fetch and its client -------------------------------


def test_a_retry_after_that_is_not_a_whole_number_does_not_crash(
    url_server: UrlServer, tmp_path: Path
) -> None:
    """http.py ``_retry_after``: ``Retry-After: 1.5`` (or any text that is neither digits nor an
    HTTP date) makes ``email.utils.parsedate_to_datetime`` raise ValueError, which escapes
    ``_Download.run`` (it only catches SourceError) and the executor (OSError/ReconcilerError):
    ``mlib apply`` dies with a traceback. Expected: an unreadable Retry-After is ignored (the
    normal backoff is used) and the download goes on."""
    data = blob(20_000)
    url = url_server.add("/r/model.safetensors", data)
    url_server.status(503, retry_after=cast(int, "1.5"))  # sent verbatim as the header value
    job = Fetch(url, tmp_path / "x.part", tmp_path / "x", len(data), sha(data))
    with client() as http:
        download(job, http, retry=NO_WAIT)
    assert job.dest.read_bytes() == data


def test_a_resume_never_splices_a_file_whose_total_size_changed(
    url_server: UrlServer, tmp_path: Path
) -> None:
    """http.py ``_Download._request``: the sidecar records the total size of the bytes in the part,
    but a 206 is accepted whatever total its Content-Range gives. A server without ETags gets no
    If-Range, so when the file changed between an interrupted apply and the next one (here it
    grew), the new apply appends the new file's tail to the old file's head and installs the
    mix (no sha256 is known for an unpinned URL; the size matches the new HEAD). Expected: a 206
    whose total differs from the part's recorded total restarts the download from zero."""
    old, new = blob(300_000, 1), blob(400_000, 2)
    url = url_server.add("/n/model.safetensors", old, etag="")  # a server that sends no ETag
    part, dest = tmp_path / "k.part", tmp_path / "k"
    url_server.cut_after(100_000)
    with client() as http, pytest.raises(SourceError, match="connection"):
        download(Fetch(url, part, dest, len(old)), http, retry=ONCE)  # the interrupted apply
    assert part.stat().st_size == 100_000

    url_server.add("/n/model.safetensors", new, etag="")  # the file changed on the server
    with client() as http:
        download(Fetch(url, part, dest, len(new)), http, retry=NO_WAIT)  # the next apply
    assert dest.read_bytes() == new, "old head + new tail was installed"


class _NoIfRange(UrlServer):
    """A server (or a proxy in front of it) that honours Range but does not implement If-Range."""

    def _route(self, handler: _Handler) -> None:
        del handler.headers["If-Range"]
        super()._route(handler)


def test_a_206_with_another_etag_than_the_if_range_one_is_not_appended(tmp_path: Path) -> None:
    """http.py ``_Download._request``: the ETag a 206 comes with is not compared with the one the
    part was started with (sent as If-Range). Behind a server or proxy that ignores If-Range,
    a file replaced by another of the same size is spliced: old head, new tail, installed (an
    unpinned URL has no sha256 to catch it). Expected: a 206 whose ETag differs from the part's
    restarts the download from zero."""
    old, new = blob(300_000, 3), blob(300_000, 4)
    with _NoIfRange() as srv:
        url = srv.add("/e/model.safetensors", old, etag='"v1"')
        part, dest = tmp_path / "e.part", tmp_path / "e"
        srv.cut_after(100_000)
        with client() as http, pytest.raises(SourceError, match="connection"):
            download(Fetch(url, part, dest, len(old)), http, retry=ONCE)
        srv.add("/e/model.safetensors", new, etag='"v2"')
        with client() as http:
            download(Fetch(url, part, dest, len(new)), http, retry=NO_WAIT)
    assert dest.read_bytes() == new, "old head + new tail was installed"


def test_a_redirect_loop_is_an_error_not_an_empty_model_file(
    tmp_path: Path, url_server: UrlServer
) -> None:
    """http.py ``Client.open`` returns urllib's HTTPError for "too many redirects" as an ordinary
    answer with the 302's status, and neither url.py ``resolve`` (any status < 400 is fine: size
    unknown) nor http.py ``_Download._request`` (anything < 400 but 416 is read as the file)
    checks for a 2xx. The 302's empty body becomes the model: ``mlib apply`` installs a 0-byte
    file and reports success. (The same for any unfollowed 3xx, e.g. a 302 without Location.)
    Expected: resolving (or downloading) fails with a clear error; nothing is installed."""
    url = url_server.redirect("/loop/model.safetensors", "/loop/again.safetensors")
    url_server.redirect("/loop/again.safetensors", "/loop/model.safetensors")
    manifest = project(tmp_path, [lora({"url": url})])
    r = mlib(manifest, "apply", "-y")
    installed = [(p.name, p.stat().st_size) for p in (tmp_path / "lib").rglob("*.safetensors")]
    assert not installed, f"installed: {installed}"
    assert r.returncode == 1


def test_resolving_a_redirected_url_asks_with_head_not_get(
    tmp_path: Path, url_server: UrlServer
) -> None:
    """http.py ``_Redirects.redirect_request`` builds the follow-up with urllib's default, which on
    Python 3.11 (this project's target) is always a GET: url.py ``resolve``'s HEAD becomes a GET
    of the whole file at the final host (the model starts streaming, then the socket is closed;
    a download host counts a download, a one-shot signed URL is spent). Expected: a HEAD stays a
    HEAD across redirects (``Request(..., method=req.get_method())``)."""
    with UrlServer() as cdn:
        final = cdn.add("/blob/model.safetensors", blob(50_000, 91))
        url = url_server.redirect("/api/download/9", final)
        manifest = project(tmp_path, [lora({"url": url})])
        r = mlib(manifest, "plan")
        assert r.returncode == 0, r.stdout + r.stderr
        methods = [q.method for q in cdn.requests]
    assert methods == ["HEAD"], methods


# --- reconciler/sources/url.py: resolving a URL ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/x.safetensors",  # urlsplit: ValueError("Invalid IPv6 URL")
        "http://" + "a" * 70 + ".example/x.safetensors",  # idna: UnicodeError("label ... too long")
    ],
)
def test_a_malformed_url_is_one_clear_error_not_a_traceback(tmp_path: Path, url: str) -> None:
    """url.py ``resolve`` / ``describe`` and http.py ``Client.open``: both URLs pass the manifest's
    ``^https?://\\S+$`` check, then ``urlsplit`` (ValueError) or the socket layer (UnicodeError)
    raise something that is neither SourceError nor OSError, and ``mlib plan`` prints a
    traceback. Expected: the model gets a conflict (or the manifest a problem) saying the URL is
    not valid, and plan ends with one ``mlib ...`` line at most."""
    manifest = project(tmp_path, [lora({"url": url})])
    r = mlib(manifest, "plan")
    assert "Traceback" not in r.stderr, r.stderr[-600:]


def test_a_signed_redirect_address_is_not_written_to_the_lock_metadata_or_output(
    tmp_path: Path, url_server: UrlServer
) -> None:
    """url.py ``resolve`` returns ``response.url`` (the final address after redirects, query
    included) as the model's origin; planner ``_plan_download`` prints it ("download ... from
    <origin>"), and it is written as ``origin`` to mlib.lock (meant for version control) and to
    metadata.json. Download hosts (civitai, S3, the Hub's CDN) redirect to pre-signed URLs whose
    query is a credential; http.py promises URLs are shown "without their query string, which may
    carry a signature". Expected: the origin (and all output) keep the query out."""
    secret = "Signature-s3cr3t-0123456789"
    data = blob(10_000, 21)
    with UrlServer() as cdn:
        signed = cdn.add("/blob/model.safetensors", data) + f"?X-Amz-Signature={secret}"
        url = url_server.redirect("/api/download/5", signed)
        manifest = project(tmp_path, [lora({"url": url})])
        planned = mlib(manifest, "plan")
        assert planned.returncode == 0, planned.stdout + planned.stderr
        r = mlib(manifest, "apply", "-y")
        assert r.returncode == 0, r.stdout + r.stderr
    assert secret not in (tmp_path / "mlib.lock").read_text()
    (meta,) = (tmp_path / "lib").rglob("metadata.json")
    assert secret not in meta.read_text()
    assert secret not in planned.stdout + planned.stderr + r.stdout + r.stderr


# --- reconciler/sources/hf.py, executor.py: Hub files ---------------------------------------------


def test_a_sha256_pin_on_a_hub_file_in_a_subfolder_is_enforced(
    tmp_path: Path, hub: FakeHub
) -> None:
    """hf.py ``resolve``: the manifest accepts a pin for exactly one listed file
    (manifest.py ``_check_pin``), but ``resolve`` only applies it when the file is also at the
    repo's top level (``single = ... and "/" not in path``); for ``unet/model.safetensors`` the pin
    is silently dropped and the Hub's own LFS sha256 is used instead. Bytes that are not the
    pinned ones are installed. Expected: the pin is what the file must hash to (apply fails with
    "wrong bytes", nothing installed)."""
    served = blob(6000, 51)
    hub.add_repo("org/pipe", {"unet/model.safetensors": served, "README.md": b"hi"})
    pinned = sha(blob(6000, 52))  # the file the user vetted: not what the Hub serves
    manifest = project(
        tmp_path,
        [lora({"hf": "org/pipe", "files": ["unet/model.safetensors"]}, sha256=pinned)],
    )
    r = mlib(manifest, "apply", "-y")
    installed = list((tmp_path / "lib").rglob("*.safetensors"))
    assert not installed, f"installed despite the pin: {installed} ({r.stdout})"
    assert r.returncode == 1


def test_a_hub_file_named_metadata_json_is_not_overwritten_by_mlib(
    tmp_path: Path, hub: FakeHub
) -> None:
    """hf.py ``_dest`` / planner.py ``_downloads`` / executor.py ``_assemble``: a repo file at the
    top level named ``metadata.json`` (or ``overrides.json``) is downloaded into the staging
    folder, listed in the new metadata's ``files`` with its own hashes, and then replaced by
    mlib's metadata.json. The model folder ends up missing a file of the model, and its metadata
    lists a file whose hashes are wrong, so ``mlib verify`` fails on a fresh install.
    Expected: such a file is a conflict ("exclude it with 'exclude:'") or kept under its name
    elsewhere; never silently replaced."""
    hub.add_repo(
        "org/bundle",
        {"model.safetensors": blob(3000, 61), "metadata.json": b'{"from": "the repo"}\n'},
    )
    manifest = project(tmp_path, [lora({"hf": "org/bundle"}, kind="diffusers")])
    mlib(manifest, "apply", "-y")
    r = mlib(manifest, "verify")
    assert r.returncode == 0, r.stdout + r.stderr


# --- mlib.lock: lockfile.py, resolve.py, api.py lock/apply --locked, executor.py ------------------


@pytest.mark.parametrize("locked_sha", ["other", "null"])
def test_the_manifest_pin_wins_over_the_lock(
    tmp_path: Path, url_server: UrlServer, locked_sha: str
) -> None:
    """resolve.py ``resolve_remotes`` / lockfile.py ``LockEntry.facts``: a current lock entry (its
    ``spec`` digest matches the manifest's source and pin) is used as it is, so the sha256 the
    downloaded file is checked against is the *lock's*, not the manifest's pin. A lock whose
    sha256 was edited (or nulled) - a one-line change in a PR that only touches mlib.lock - makes
    ``apply --locked`` install bytes the manifest's pin forbids, and ``lock --check`` calls that
    lock current. Expected: the pin is always what the file must hash to (and a lock that
    contradicts the pin is reported as out of date)."""
    vetted, other = blob(8000, 81), blob(8000, 82)
    url = url_server.add("/pin/model.safetensors", vetted)
    manifest = project(tmp_path, [lora({"url": url}, sha256=sha(vetted))])
    assert mlib(manifest, "lock").returncode == 0
    lock_file = tmp_path / "mlib.lock"
    lock = json.loads(lock_file.read_text())
    (entry,) = lock["models"].values()
    entry["files"][0]["sha256"] = sha(other) if locked_sha == "other" else None
    entry["files"][0]["blake3"] = None
    lock_file.write_text(json.dumps(lock))
    url_server.add("/pin/model.safetensors", other)  # the server now sends other bytes
    r = mlib(manifest, "apply", "--locked", "-y")
    installed = list((tmp_path / "lib").rglob("model.safetensors"))
    assert not installed, f"bytes that fail the pin were installed ({r.stdout})"


def test_apply_locked_does_not_install_a_url_file_other_than_the_locked_one(
    tmp_path: Path, url_server: UrlServer
) -> None:
    """executor.py ``_fetch`` / http.py ``download`` ignore the ETag the lock recorded for a URL
    (planner ``_plan_download`` carries it in the action's data, nothing reads it but
    lockfile ``entry_of_download``). A URL locked by ``mlib lock`` has no sha256 yet, so when the
    server's file was replaced by one of the same size, ``apply --locked`` ("installs exactly the
    locked files") installs the new file without a word, and then records in mlib.lock the *old*
    ETag next to the *new* file's sha256. Expected: a file whose ETag is not the locked one is
    refused (e.g. ``If-Match`` on the GET, or comparing the 200's ETag) under --locked, and the
    lock never pairs an ETag with another file's hashes."""
    v1, v2 = blob(25_000, 31), blob(25_000, 32)  # same size: only the ETag tells them apart
    url = url_server.add("/l/model.safetensors", v1, etag='"v1"')
    manifest = project(tmp_path, [lora({"url": url})])
    assert mlib(manifest, "lock").returncode == 0
    url_server.add("/l/model.safetensors", v2, etag='"v2"')
    r = mlib(manifest, "apply", "--locked", "-y")
    installed = list((tmp_path / "lib").rglob("model.safetensors"))
    lock = json.loads((tmp_path / "mlib.lock").read_text())
    (entry,) = lock["models"].values()
    paired = (entry.get("etag"), entry["files"][0]["sha256"])
    assert paired != ('"v1"', sha(v2)), "the lock pairs ETag v1 with v2's sha256"
    assert r.returncode != 0 and not installed, "apply --locked installed an unlocked file"


def test_the_hub_token_goes_only_to_the_hub_not_to_the_host_a_lock_names(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """executor.py ``_fetch`` / ``_source_headers``: the request headers are chosen by the kind of
    the manifest's source (``hf.headers()``: the user's HF_TOKEN), and sent to whatever URL the
    action names, which for a locked model is the URL written in mlib.lock. A lock made against
    another endpoint (a team's Hub mirror, HF_ENDPOINT=...) or edited by hand sends the user's
    Hugging Face token to that other host on ``apply --locked``. (http.py drops Authorization on
    redirects to another host, but here the first request already goes there.) Expected: the
    Hub token is only sent to the endpoint in use (or a locked URL of another host is refused)."""
    token = hub.token
    files = {"x.safetensors": blob(4000, 41)}
    with FakeHub() as mirror:
        mirror.add_repo("org/x", files)
        hub.add_repo("org/x", files)
        manifest = project(tmp_path, [lora({"hf": "org/x"})])
        monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint)  # the lock is made against a mirror
        r = mlib(manifest, "lock")
        assert r.returncode == 0, r.stdout + r.stderr
        mirror.clear_requests()
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # this user: the Hub, and a token
        monkeypatch.setenv("HF_TOKEN", token)
        mlib(manifest, "apply", "--locked", "-y")
        leaked = [q.path for q in mirror.requests if token in q.headers.get("authorization", "")]
    assert not leaked, f"HF_TOKEN sent to {mirror.endpoint}: {leaked}"


@pytest.mark.parametrize("kind", ["file", "garbage"])
def test_a_lock_naming_a_non_http_url_is_refused_cleanly(
    tmp_path: Path, url_server: UrlServer, kind: str
) -> None:
    """lockfile.py ``_file`` accepts any non-empty string as a file's ``url`` (the manifest only
    accepts http(s)), and http.py ``Client`` is urllib's full opener. ``file:///...`` is opened
    as a local file (urllib's answer has ``status`` None, so ``status >= 400`` raises TypeError)
    and a string that is not a URL makes ``urllib.request.Request`` raise ValueError: either way
    ``apply --locked`` dies with a traceback. Expected: read_lock rejects a url that is not
    http(s) (LockFileError naming the field), or the download fails with one clear error."""
    secret = tmp_path / "private.txt"
    secret.write_bytes(b"private key material\n")
    url = url_server.add("/g/model.safetensors", secret.read_bytes())
    manifest = project(tmp_path, [lora({"url": url})])
    assert mlib(manifest, "lock").returncode == 0
    lock_file = tmp_path / "mlib.lock"
    lock = json.loads(lock_file.read_text())
    (entry,) = lock["models"].values()
    entry["files"][0]["url"] = secret.as_uri() if kind == "file" else "not a url at all"
    lock_file.write_text(json.dumps(lock))
    r = mlib(manifest, "apply", "--locked", "-y")
    assert "Traceback" not in r.stderr, r.stderr[-800:]
    assert r.returncode == 1


def test_mlib_lock_drops_the_hashes_of_a_url_whose_file_changed(
    tmp_path: Path, url_server: UrlServer
) -> None:
    """lockfile.py ``entry_of``: hashes are carried over from the library's metadata (or the old
    entry) whenever the *origin* is the same, and a URL's origin is its final address, which does
    not change when the file behind it does. After the file changed on the server, ``mlib lock``
    writes the new size and ETag next to the old file's sha256 and blake3: a lock that contradicts
    itself, and ``apply --locked`` on any other machine then fails with "wrong bytes".
    Expected: hashes are only carried over when size and ETag are the same as when they were
    learnt (else they are left null, to be learnt by the next download)."""
    v1, v2 = blob(30_000, 11), blob(31_000, 12)
    url = url_server.add("/c/model.safetensors", v1)
    manifest = project(tmp_path, [lora({"url": url})])
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    url_server.add("/c/model.safetensors", v2)  # a new version at the same address
    r = mlib(manifest, "lock")
    assert r.returncode == 0, r.stdout + r.stderr
    (entry,) = json.loads((tmp_path / "mlib.lock").read_text())["models"].values()
    (locked,) = entry["files"]
    assert locked["size"] == len(v2)
    assert locked["sha256"] in (None, sha(v2)), "the lock pairs v2's size with v1's sha256"


@pytest.mark.parametrize("damage", ["{not json", '{"version": 2, "models": {}}'])
def test_mlib_lock_rewrites_a_damaged_lock_as_its_error_message_says(
    tmp_path: Path, url_server: UrlServer, damage: str
) -> None:
    """api.py ``lock`` reads the old lock first (``lockfile.read_lock``), which raises
    LockFileError for a damaged one, with the advice "run 'mlib lock' to write it again" - and
    'mlib lock' then fails with that very error, so the advice can never work (the user has to
    find out that deleting the file is the fix). Expected: ``mlib lock`` resolves afresh and
    replaces a damaged lock (keeping nothing from it), exit 0."""
    url = url_server.add("/d/model.safetensors", blob(5000, 71))
    manifest = project(tmp_path, [lora({"url": url})])
    (tmp_path / "mlib.lock").write_text(damage)
    r = mlib(manifest, "plan")
    assert "run 'mlib lock'" in r.stderr  # the advice given
    r = mlib(manifest, "lock")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((tmp_path / "mlib.lock").read_text())["version"] == 1


def test_a_deeply_nested_lock_is_one_clear_error(tmp_path: Path) -> None:
    """lockfile.py ``read_lock`` catches JSONDecodeError only; a lock nested deeper than Python's
    recursion limit (a damaged or hostile file) raises RecursionError from ``json.loads`` and
    every command that reads the lock (plan, status, apply, lock --check) dies with a traceback.
    Expected: LockFileError ("not valid JSON ... run 'mlib lock'"), one ``mlib: error:`` line."""
    manifest = project(tmp_path, [])
    (tmp_path / "mlib.lock").write_text("[" * 100_000 + "]" * 100_000)
    r = mlib(manifest, "lock", "--check")
    assert "Traceback" not in r.stderr, r.stderr[-300:]
    assert r.stderr.startswith("mlib: error:"), r.stderr[-300:]
