"""The local test servers in tests/servers.py speak what the REAL clients expect.

FakeHub is driven by the real ``huggingface_hub`` (no mocks): model_info, list_repo_tree,
hf_hub_download (regular files and LFS files through the fake CDN), snapshot_download, its typed
errors and its 429 handling. UrlServer is driven by plain httpx2 and urllib.
"""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder
from servers import FakeHub, UrlServer, isolate_hf_client

REPO = "org/model"
CONFIG = b'{"architectures": ["Fake"]}\n'
WEIGHTS = bytes(range(256)) * 40  # 10 KiB, and .safetensors: stored in LFS
WEIGHTS_V2 = bytes(reversed(range(256))) * 48


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated huggingface_hub (env and import-time constants) and a cache dir for it."""
    isolate_hf_client(monkeypatch, tmp_path / "hf")
    return tmp_path / "hf" / "hub"


@pytest.fixture
def hub(cache: Path) -> Iterator[FakeHub]:
    with FakeHub() as hub:
        yield hub


@pytest.fixture
def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=False)


@pytest.fixture
def repo(hub: FakeHub) -> str:
    """org/model: config.json (regular), model.safetensors (LFS), a sub-folder; tag v1."""
    return hub.add_repo(
        REPO,
        {
            "config.json": CONFIG,
            "model.safetensors": WEIGHTS,
            "sub/dir/notes.txt": b"notes\n",
        },
        branches={"main", "dev"},
        tags=("v1",),
    )


def download(
    hub: FakeHub,
    cache: Path,
    filename: str,
    revision: str | None = None,
    *,
    force_download: bool = False,
) -> bytes:
    """hf_hub_download (anonymous) from REPO on the fake Hub; the downloaded bytes."""
    path = hf_hub_download(
        REPO,
        filename,
        revision=revision,
        endpoint=hub.endpoint,
        cache_dir=cache,
        token=False,
        force_download=force_download,
    )
    return Path(path).read_bytes()


# ---------------------------------------------------------------------------------------------
# FakeHub with huggingface_hub


def test_model_info_resolves_branch_tag_and_sha(hub: FakeHub, api: HfApi, repo: str) -> None:
    new = hub.add_commit(REPO, {"model.safetensors": WEIGHTS_V2})
    assert len(repo) == len(new) == 40 and new != repo
    assert api.model_info(REPO).sha == new
    assert api.model_info(REPO, revision="main").sha == new
    assert api.model_info(REPO, revision="dev").sha == repo  # only main moved
    assert api.model_info(REPO, revision="v1").sha == repo
    assert api.model_info(REPO, revision=repo).sha == repo  # old commits stay resolvable
    info = api.model_info(REPO, revision="v1", files_metadata=True)
    assert info.id == REPO and info.private is False and info.gated is False
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == {"config.json", "model.safetensors", "sub/dir/notes.txt"}
    assert siblings["config.json"].size == len(CONFIG) and siblings["config.json"].lfs is None
    lfs = siblings["model.safetensors"].lfs
    assert lfs is not None and lfs.sha256 == sha256(WEIGHTS) and lfs.size == len(WEIGHTS)
    # Same content, same sha: deterministic.
    with FakeHub() as other:
        files = {
            "config.json": CONFIG,
            "model.safetensors": WEIGHTS,
            "sub/dir/notes.txt": b"notes\n",
        }
        assert other.add_repo(REPO, files) == repo
    assert [r.name for r in api.list_repo_refs(REPO).tags] == ["v1"]


def test_list_repo_tree(hub: FakeHub, api: HfApi, repo: str) -> None:
    entries = {e.path: e for e in api.list_repo_tree(REPO, recursive=True)}
    assert set(entries) == {
        "config.json",
        "model.safetensors",
        "sub",
        "sub/dir",
        "sub/dir/notes.txt",
    }
    weights, config = entries["model.safetensors"], entries["config.json"]
    assert isinstance(weights, RepoFile) and isinstance(config, RepoFile)
    assert weights.size == len(WEIGHTS)
    assert weights.lfs is not None and weights.lfs.sha256 == sha256(WEIGHTS)
    assert config.size == len(CONFIG) and config.lfs is None and len(config.blob_id) == 40
    assert isinstance(entries["sub/dir"], RepoFolder)

    top = {e.path for e in api.list_repo_tree(REPO, revision="v1")}
    assert top == {"config.json", "model.safetensors", "sub"}
    inside = {e.path for e in api.list_repo_tree(REPO, "sub/dir", revision=repo)}
    assert inside == {"sub/dir/notes.txt"}
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(REPO, "nowhere"))

    hub.tree_page_size = 2  # Link: <...>; rel="next" pagination, followed by the client
    assert {e.path for e in api.list_repo_tree(REPO, recursive=True)} == set(entries)
    assert sum("/tree/" in r.path for r in hub.hub_requests[-3:]) == 3


def test_hf_hub_download_regular_file(hub: FakeHub, cache: Path, repo: str) -> None:
    assert download(hub, cache, "config.json") == CONFIG
    assert download(hub, cache, "sub/dir/notes.txt", revision="v1") == b"notes\n"
    assert hub.cdn_requests == []
    heads = [r for r in hub.hub_requests if r.method == "HEAD"]
    assert [r.path for r in heads] == [
        f"/{REPO}/resolve/main/config.json",
        f"/{REPO}/resolve/v1/sub/dir/notes.txt",
    ]


def test_hf_hub_download_lfs_file_goes_through_the_cdn(
    hub: FakeHub, cache: Path, repo: str
) -> None:
    # hf_hub_url builds the /resolve URL on the given endpoint; the HEAD stops at the 302.
    url = hf_hub_url(REPO, "model.safetensors", endpoint=hub.endpoint)
    assert url == f"{hub.endpoint}/{REPO}/resolve/main/model.safetensors"
    meta = get_hf_file_metadata(url, token=hub.token)
    assert meta.commit_hash == repo
    assert meta.etag == sha256(WEIGHTS)  # from X-Linked-Etag
    assert meta.size == len(WEIGHTS)  # from X-Linked-Size
    assert meta.location == f"{hub.cdn_endpoint}/lfs/{sha256(WEIGHTS)}"
    assert hub.cdn_requests == []  # the metadata HEAD did not follow the redirect

    path = hf_hub_download(
        REPO, "model.safetensors", endpoint=hub.endpoint, cache_dir=cache, token=hub.token
    )
    assert Path(path).read_bytes() == WEIGHTS
    assert Path(path).resolve().name == sha256(WEIGHTS)  # the blob is named by its etag
    (get,) = hub.cdn_requests
    assert (get.method, get.path) == ("GET", hub.lfs_path(REPO, "model.safetensors"))
    assert "authorization" not in get.headers  # dropped for the foreign origin
    assert hub.hub_requests[-1].headers["authorization"] == f"Bearer {hub.token}"


def test_hf_hub_download_pins_old_commits(hub: FakeHub, cache: Path, repo: str) -> None:
    new = hub.add_commit(REPO, {"model.safetensors": WEIGHTS_V2, "config.json": None})
    assert download(hub, cache, "model.safetensors") == WEIGHTS_V2
    assert download(hub, cache, "model.safetensors", revision=repo) == WEIGHTS
    assert download(hub, cache, "model.safetensors", revision="v1") == WEIGHTS
    with pytest.raises(RemoteEntryNotFoundError):
        download(hub, cache, "config.json", revision=new)
    assert (cache / "models--org--model" / "refs" / "main").read_text() == new


def test_snapshot_download(hub: FakeHub, cache: Path, repo: str) -> None:
    folder = Path(
        HfApi(endpoint=hub.endpoint, token=False).snapshot_download(REPO, cache_dir=cache)
    )
    assert folder.name == repo
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "sub" / "dir" / "notes.txt").read_bytes() == b"notes\n"


def test_typed_errors(hub: FakeHub, api: HfApi, cache: Path, repo: str) -> None:
    with pytest.raises(RepositoryNotFoundError) as not_found:
        api.model_info("org/missing")
    assert not_found.value.response.status_code == 404
    assert not isinstance(not_found.value, GatedRepoError)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "x", endpoint=hub.endpoint, cache_dir=cache, token=False)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="nope")
    with pytest.raises(RevisionNotFoundError):
        download(hub, cache, "config.json", revision="nope")
    with pytest.raises(RemoteEntryNotFoundError) as missing:
        download(hub, cache, "missing.bin")
    assert isinstance(missing.value, EntryNotFoundError)


def test_gated_and_private_repos(hub: FakeHub, cache: Path) -> None:
    hub.add_repo("org/gated", {"w.bin": b"gated"}, gated="manual")
    hub.add_repo("org/private", {"w.bin": b"private"}, private=True)
    anonymous = HfApi(endpoint=hub.endpoint, token=False)
    wrong = HfApi(endpoint=hub.endpoint, token="hf_wrong")
    authed = HfApi(endpoint=hub.endpoint, token=hub.token)

    assert anonymous.model_info("org/gated").gated == "manual"  # the card is public
    for client, status in ((anonymous, 401), (wrong, 403)):
        with pytest.raises(GatedRepoError) as gated:
            client.hf_hub_download("org/gated", "w.bin", cache_dir=cache)
        assert gated.value.response.status_code == status
    assert (
        Path(authed.hf_hub_download("org/gated", "w.bin", cache_dir=cache)).read_bytes() == b"gated"
    )

    for client in (anonymous, wrong):
        with pytest.raises(RepositoryNotFoundError) as hidden:
            client.model_info("org/private")
        assert hidden.value.response.status_code == 401
        with pytest.raises(RepositoryNotFoundError):
            client.hf_hub_download("org/private", "w.bin", cache_dir=cache)
    assert authed.model_info("org/private").private is True
    path = authed.hf_hub_download("org/private", "w.bin", cache_dir=cache)
    assert Path(path).read_bytes() == b"private"


def test_rate_limit(hub: FakeHub, api: HfApi, cache: Path, repo: str) -> None:
    # model_info does no retries: the 429 surfaces as a plain HfHubHTTPError.
    hub.rate_limit(1, retry_after=7)
    with pytest.raises(HfHubHTTPError) as limited:
        api.model_info(REPO)
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert "'api' rate limit" in str(limited.value)  # from the RateLimit header
    # hf_hub_download: the first HEAD has no retries, then it asks again once on 429, at once.
    hub.rate_limit(1)
    assert download(hub, cache, "config.json") == CONFIG
    # list_repo_tree goes through http_backoff, which sleeps Retry-After + 1 s and retries.
    hub.rate_limit(1, retry_after=0)
    start = time.monotonic()
    assert len(list(api.list_repo_tree(REPO))) == 3
    assert time.monotonic() - start >= 1
    assert hub.pending_api_faults == []


def test_cdn_cut_is_resumed_with_range(hub: FakeHub, cache: Path) -> None:
    # http_get reads the body in 10 MiB chunks (constants.DOWNLOAD_CHUNK_SIZE) and only counts
    # whole chunks: a cut inside the first 10 MiB restarts from 0 without a Range.
    chunk = 10 * 1024 * 1024
    big = bytes(range(256)) * (12 * 4096)  # 12 MiB
    hub.add_repo(REPO, {"big.gguf": big})
    hub.cut_after(chunk + 1000, path=hub.lfs_path(REPO, "big.gguf"))
    assert download(hub, cache, "big.gguf") == big  # http_get sleeps 1 s, then resumes
    first, second = hub.cdn_requests
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={chunk}-"
    assert hub.pending_faults == []


def test_cdn_errors_surface(hub: FakeHub, cache: Path, repo: str) -> None:
    hub.status(503)
    with pytest.raises(HfHubHTTPError) as unavailable:
        download(hub, cache, "model.safetensors")
    assert unavailable.value.response.status_code == 503
    hub.wrong_bytes()  # same size: huggingface_hub does not check the sha256 of a download
    assert download(hub, cache, "model.safetensors", force_download=True) != WEIGHTS


# ---------------------------------------------------------------------------------------------
# UrlServer with httpx2 and urllib

DATA = bytes(range(256)) * 8  # 2 KiB


@pytest.fixture
def srv() -> Iterator[UrlServer]:
    with UrlServer() as srv:
        srv.add("/files/model.bin", DATA, content_disposition='attachment; filename="m.bin"')
        yield srv


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=5, trust_env=False) as client:
        yield client


def test_url_get_head_and_ranges(srv: UrlServer, client: httpx2.Client) -> None:
    url = srv.url("/files/model.bin")
    full = client.get(url)
    etag = f'"{sha256(DATA)[:16]}"'
    assert (full.status_code, full.content) == (200, DATA)
    assert full.headers["ETag"] == etag and full.headers["Accept-Ranges"] == "bytes"
    assert full.headers["Content-Disposition"] == 'attachment; filename="m.bin"'

    head = client.head(url)
    assert (head.status_code, head.headers["Content-Length"], head.content) == (200, "2048", b"")

    part = client.get(url, headers={"Range": "bytes=1000-"})
    assert (part.status_code, part.content) == (206, DATA[1000:])
    assert part.headers["Content-Range"] == "bytes 1000-2047/2048"
    assert client.get(url, headers={"Range": "bytes=-10"}).content == DATA[-10:]
    assert client.get(url, headers={"Range": "bytes=5-9"}).content == DATA[5:10]
    assert client.get(url, headers={"Range": "bytes=4096-"}).status_code == 416

    same = client.get(url, headers={"Range": "bytes=1000-", "If-Range": etag})
    assert same.status_code == 206
    changed = client.get(url, headers={"Range": "bytes=1000-", "If-Range": '"old"'})
    assert (changed.status_code, changed.content) == (200, DATA)
    assert srv.requests[-1].headers["if-range"] == '"old"'
    assert client.get(srv.url("/nothing")).status_code == 404


def test_url_faults(srv: UrlServer, client: httpx2.Client) -> None:
    url = srv.url("/files/model.bin")
    srv.ignore_range()
    ignored = client.get(url, headers={"Range": "bytes=1000-"})
    assert (ignored.status_code, ignored.content) == (200, DATA)
    assert client.get(url, headers={"Range": "bytes=1000-"}).status_code == 206  # consumed

    srv.wrong_bytes()
    wrong = client.get(url)
    assert wrong.status_code == 200 and len(wrong.content) == len(DATA) and wrong.content != DATA
    assert client.get(url).content == DATA

    srv.status(429, retry_after=3)
    limited = client.get(url)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    srv.status(503, times=2)
    assert [client.get(url).status_code for _ in range(3)] == [503, 503, 200]

    srv.cut_after(100)
    with pytest.raises(httpx2.RemoteProtocolError):
        client.get(url)
    srv.cut_after(300)
    with (
        pytest.raises(http.client.IncompleteRead) as short,
        urllib.request.urlopen(url, timeout=5) as response,
    ):
        response.read()
    assert short.value.partial == DATA[:300]

    srv.slow(8000)  # 2 KiB at 8 KB/s: about a quarter of a second
    start = time.monotonic()
    assert client.get(url).content == DATA
    assert time.monotonic() - start >= 0.2

    srv.stall(0.5)
    with pytest.raises(httpx2.ReadTimeout):
        client.get(url, timeout=httpx2.Timeout(5, read=0.1))
    srv.stall(0.1)
    assert client.get(url).content == DATA
    assert srv.pending_faults == []


def test_url_fault_path_filter(srv: UrlServer, client: httpx2.Client) -> None:
    srv.add("/other", b"other")
    srv.status(500, path="/files/model.bin")
    assert client.get(srv.url("/other")).status_code == 200
    assert client.head(srv.url("/files/model.bin")).status_code == 500
    srv.cut_after(1)  # body faults skip HEAD requests
    assert client.head(srv.url("/other")).status_code == 200
    assert len(srv.pending_faults) == 1
    srv.clear_faults()


def test_url_auth_and_redirects(srv: UrlServer, client: httpx2.Client) -> None:
    srv.add("/private/a.bin", b"secret", auth="Bearer t0k")
    assert client.get(srv.url("/private/a.bin")).status_code == 401
    assert (
        client.get(srv.url("/private/a.bin"), headers={"Authorization": "Bearer x"}).status_code
        == 401
    )
    ok = client.get(srv.url("/private/a.bin"), headers={"Authorization": "Bearer t0k"})
    assert (ok.status_code, ok.content) == (200, b"secret")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(srv.url("/private/a.bin"), timeout=5)
    denied.value.close()
    assert denied.value.code == 401

    srv.redirect("/latest", "/files/model.bin")
    moved = client.get(srv.url("/latest"), follow_redirects=True)
    assert (moved.status_code, moved.content, str(moved.url)) == (
        200,
        DATA,
        srv.url("/files/model.bin"),
    )
    assert moved.history[0].status_code == 302
    assert moved.headers["Content-Disposition"] == 'attachment; filename="m.bin"'
    with urllib.request.urlopen(srv.url("/latest"), timeout=5) as response:
        assert response.read() == DATA
    assert [r.path for r in srv.requests[-2:]] == ["/latest", "/files/model.bin"]


def test_servers_stop_promptly_and_refuse_afterwards(client: httpx2.Client) -> None:
    with UrlServer() as srv:
        srv.add("/a", b"a")
        assert client.get(srv.url("/a")).content == b"a"  # leaves a keep-alive connection open
        srv.stall(30)
        with pytest.raises(httpx2.ReadTimeout):
            client.get(srv.url("/a"), timeout=httpx2.Timeout(5, read=0.1))
        url = srv.url("/a")
        start = time.monotonic()
    assert time.monotonic() - start < 2
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(url, timeout=2)
