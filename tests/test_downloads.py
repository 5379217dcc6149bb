"""Downloads: the resumable fetch against a real local server, Hub resolution with the real
huggingface_hub client against a fake Hub, and plan/apply/lock end to end through the CLI.

Servers are ``tests/servers.py``'s, on 127.0.0.1, stopped by their context managers.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenario import mlib, mlib_popen, project, read_yaml, write_yaml
from servers import FakeHub, UrlServer, isolate_hf_client

from reconciler.errors import SourceError
from reconciler.model import HfSource
from reconciler.sources import hf
from reconciler.sources.http import Fetch, Retry, client, download

TIMEOUT = 60


def blob(size: int, seed: int = 1) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate_hf_client(monkeypatch, tmp_path / "hf-home")
    return tmp_path


@pytest.fixture
def url_server() -> Iterator[UrlServer]:
    with UrlServer() as srv:
        yield srv


def fetch(srv: UrlServer, tmp_path: Path, data: bytes, *, pin: bool = True) -> Fetch:
    url = srv.add("/files/model.safetensors", data)
    part = tmp_path / "staging" / "x.part"
    return Fetch(url, part, tmp_path / "staging" / "x", len(data), sha(data) if pin else None)


NO_WAIT = Retry(attempts=4, base=0.0, sleep=lambda s: None)


# --- the fetch itself ---------------------------------------------------------------------------


def test_a_download_is_hashed_on_the_way_and_renamed_when_verified(
    url_server: UrlServer, tmp_path: Path
) -> None:
    data = blob(3 << 20)
    job = fetch(url_server, tmp_path, data)
    with client() as http:
        got = download(job, http, retry=NO_WAIT)
    assert job.dest.read_bytes() == data
    assert got.sha256 == sha(data) and got.size == len(data)
    import blake3

    assert got.blake3 == blake3.blake3(data).hexdigest()
    assert not job.part.exists() and not list(job.part.parent.glob("*.json"))


def test_a_cut_connection_resumes_with_range(url_server: UrlServer, tmp_path: Path) -> None:
    data = blob(2 << 20)
    job = fetch(url_server, tmp_path, data)
    url_server.cut_after(700_000)
    with client() as http:
        download(job, http, retry=NO_WAIT)
    assert job.dest.read_bytes() == data
    gets = [r for r in url_server.requests if r.method == "GET"]
    assert len(gets) == 2
    assert gets[1].headers.get("range") == "bytes=700000-"
    assert gets[1].headers.get("if-range")  # the ETag: a changed file is not spliced


def test_a_part_left_by_another_process_is_resumed(url_server: UrlServer, tmp_path: Path) -> None:
    data = blob(1 << 20)
    job = fetch(url_server, tmp_path, data)
    url_server.cut_after(300_000)
    with client() as http, pytest.raises(SourceError, match="connection"):
        download(job, http, retry=Retry(attempts=1, sleep=lambda s: None))
    assert job.part.stat().st_size == 300_000  # what the killed run left
    with client() as http:
        download(job, http, retry=NO_WAIT)  # a new run: hashes the part, asks for the rest
    assert job.dest.read_bytes() == data
    last = [r for r in url_server.requests if r.method == "GET"][-1]
    assert last.headers.get("range") == "bytes=300000-"


def test_a_server_ignoring_range_is_read_from_zero(url_server: UrlServer, tmp_path: Path) -> None:
    data = blob(1 << 20)
    job = fetch(url_server, tmp_path, data)
    url_server.cut_after(400_000)
    url_server.ignore_range()
    with client() as http:
        download(job, http, retry=NO_WAIT)
    assert job.dest.read_bytes() == data


@pytest.mark.parametrize("pinned", [True, False])
def test_wrong_bytes_are_refused_and_nothing_is_kept(
    url_server: UrlServer, tmp_path: Path, pinned: bool
) -> None:
    data = blob(200_000)
    job = fetch(url_server, tmp_path, data, pin=pinned)
    url_server.wrong_bytes()
    with client() as http:
        if pinned:
            with pytest.raises(SourceError, match=r"wrong bytes.*nothing installed"):
                download(job, http, retry=NO_WAIT)
            assert not job.dest.exists() and not job.part.exists()
        else:  # without a known sha256 only the size can be checked: it matches
            download(job, http, retry=NO_WAIT)
            assert job.dest.read_bytes() != data


def test_busy_servers_are_retried_and_retry_after_is_honoured(
    url_server: UrlServer, tmp_path: Path
) -> None:
    data = blob(50_000)
    job = fetch(url_server, tmp_path, data)
    url_server.status(503)
    url_server.status(429, retry_after=7)
    waits: list[float] = []
    with client() as http:
        download(job, http, retry=Retry(attempts=5, base=0.5, sleep=waits.append))
    assert job.dest.read_bytes() == data
    assert waits == [0.5, 7.0]


def test_a_missing_file_fails_at_once_with_the_fix(url_server: UrlServer, tmp_path: Path) -> None:
    job = Fetch(url_server.url("/nope.bin"), tmp_path / "p.part", tmp_path / "p", what="m/nope.bin")
    waits: list[float] = []
    with client() as http, pytest.raises(SourceError) as err:
        download(job, http, retry=Retry(sleep=waits.append))
    assert "m/nope.bin: not found on the server (404)" in str(err.value)
    assert "check the URL" in err.value.fix and not waits


def test_a_stalled_server_times_out_and_is_retried(url_server: UrlServer, tmp_path: Path) -> None:
    data = blob(100_000)
    job = fetch(url_server, tmp_path, data)
    url_server.stall(2.0)
    with client(timeout=0.5) as http:
        download(job, http, retry=NO_WAIT)
    assert job.dest.read_bytes() == data


# --- resolving Hub sources ----------------------------------------------------------------------


@pytest.fixture
def hub(isolated: Path) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        yield fake


def test_a_hub_revision_resolves_to_its_commit_and_lfs_hashes(hub: FakeHub) -> None:
    weights, config = blob(5000), b'{"a": 1}'
    commit = hub.add_repo("org/vae", {"vae.safetensors": weights, "config.json": config})
    got, files = hf.resolve(HfSource("org/vae", "main"), endpoint=hub.endpoint)
    assert got == commit
    by = {f.path: f for f in files}
    assert set(by) == {"vae.safetensors", "config.json"}
    assert by["vae.safetensors"].sha256 == sha(weights) and by["vae.safetensors"].size == 5000
    assert by["config.json"].sha256 is None and by["config.json"].size == len(config)
    assert commit in by["vae.safetensors"].url  # pinned to the commit, not the branch


def test_hub_patterns_select_files_and_a_single_file_gets_a_clean_name(hub: FakeHub) -> None:
    hub.add_repo("org/m", {"My Model.SafeTensors": blob(2000), "b.bin": blob(2000, 2)})
    _, files = hf.resolve(HfSource("org/m", files=("*.SafeTensors",)), endpoint=hub.endpoint)
    assert [f.path for f in files] == ["My_Model.safetensors"]
    _, files = hf.resolve(HfSource("org/m", exclude=("*.bin",)), endpoint=hub.endpoint)
    assert [f.path for f in files] == ["My_Model.safetensors"]


@pytest.mark.parametrize(
    ("source", "message", "fix"),
    [
        (HfSource("org/missing"), "no such repo", "HF_TOKEN"),
        (HfSource("org/m", "v9"), "no revision 'v9'", "revision:"),
        (HfSource("org/gated"), "gated", "accept its terms"),
        (HfSource("org/m", files=("*.gguf",)), "no file matches *.gguf", "files:"),
    ],
)
def test_hub_failures_are_one_line_with_the_fix(
    hub: FakeHub, source: HfSource, message: str, fix: str
) -> None:
    hub.add_repo("org/m", {"a.safetensors": blob(2000)})
    hub.add_repo("org/gated", {"a.safetensors": blob(2000)}, gated=True)
    with pytest.raises(SourceError) as err:
        hf.resolve(source, endpoint=hub.endpoint)
    assert message in err.value.message and fix in err.value.fix
    assert err.value.message.startswith(f"hf:{source.repo}@")


# --- end to end through the CLI -----------------------------------------------------------------


@pytest.fixture
def hub_env(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # read by the mlib subprocesses' client
    return hub


def test_hub_and_url_models_are_planned_applied_locked_and_linked(
    tmp_path: Path, hub_env: FakeHub, url_server: UrlServer
) -> None:
    hub = hub_env
    vae = blob(40_000, 3)
    commit = hub.add_repo("org/sdxl-vae", {"sdxl_vae.safetensors": vae, "README.md": b"hi"})
    lora = blob(30_000, 4)
    url = url_server.add(
        "/dl/123", lora, content_disposition='attachment; filename="Detail Tweaker.safetensors"'
    )
    manifest = project(
        tmp_path,
        [
            {"name": "SDXL VAE", "type": "diffusion", "family": "sdxl", "kind": "vae",
             "source": {"hf": "org/sdxl-vae", "files": ["*.safetensors"]}},
            {"name": "Detail", "type": "diffusion", "family": "sdxl", "kind": "lora",
             "source": {"url": url}},
        ],
    )  # fmt: skip
    r = mlib(manifest, "plan")
    assert r.returncode == 0, r.stderr
    assert f"download 1 file (40.0 KB) from hf:org/sdxl-vae@{commit}" in r.stdout
    assert "2 to download (70.0 KB)" in r.stdout and "free" in r.stdout

    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    vae_file = tmp_path / "lib/diffusion/sdxl/sdxl_vae/sdxl_vae.safetensors"
    lora_file = tmp_path / "lib/diffusion/sdxl/detail/Detail_Tweaker.safetensors"
    assert vae_file.read_bytes() == vae and lora_file.read_bytes() == lora
    meta = json.loads((vae_file.parent / "metadata.json").read_text())
    assert meta["origin"] == f"hf:org/sdxl-vae@{commit}"
    assert meta["files"][0]["sha256"] == sha(vae)
    assert (tmp_path / "comfy/vae/sdxl_vae.safetensors").resolve() == vae_file.resolve()
    assert (tmp_path / "comfy/loras/Detail_Tweaker.safetensors").resolve() == lora_file.resolve()
    assert not list((tmp_path / "lib/.mlib/staging/partial").glob("*"))

    lock = json.loads((tmp_path / "mlib.lock").read_text())
    locked = lock["models"]["diffusion/sdxl/detail"]
    assert locked["files"][0]["sha256"] == sha(lora)  # learnt by downloading it
    assert lock["models"]["diffusion/sdxl/sdxl_vae"]["origin"] == f"hf:org/sdxl-vae@{commit}"
    assert mlib(manifest, "lock", "--check").returncode == 0

    r = mlib(manifest, "plan", "--detailed-exitcode")
    assert r.returncode == 0, r.stdout  # nothing left to do, and no network needed for that

    doc = read_yaml(manifest)
    doc["models"][0]["source"]["revision"] = "v2"
    write_yaml(manifest, doc)
    r = mlib(manifest, "lock", "--check")
    assert r.returncode == 1 and "diffusion/sdxl/sdxl_vae: its source or pin changed" in r.stdout


def test_a_model_removed_from_the_manifest_leaves_mlib_lock_at_the_next_apply(
    tmp_path: Path, url_server: UrlServer, isolated: Path
) -> None:
    """Found by the fault runner's check that the lock is current after every converged apply:
    a remote model taken out of the manifest kept its lock entry, so after apply 'lock --check'
    failed and 'apply --locked' refused until 'mlib lock' ran."""
    urls = [url_server.add(f"/m/{n}.safetensors", blob(20_000, i)) for i, n in enumerate("ab")]
    models = [
        {"name": n.upper(), "type": "diffusion", "family": "sdxl", "kind": "lora",
         "source": {"url": u}}
        for n, u in zip("ab", urls, strict=True)
    ]  # fmt: skip
    manifest = project(tmp_path, models)
    assert mlib(manifest, "apply", "-y").returncode == 0
    assert set(json.loads((tmp_path / "mlib.lock").read_text())["models"]) == {
        "diffusion/sdxl/a",
        "diffusion/sdxl/b",
    }
    project(tmp_path, models[:1])
    r = mlib(manifest, "apply", "-y", "--prune")
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(json.loads((tmp_path / "mlib.lock").read_text())["models"]) == {"diffusion/sdxl/a"}
    assert mlib(manifest, "lock", "--check").returncode == 0
    r = mlib(manifest, "apply", "-y", "--locked")
    assert r.returncode == 0, r.stdout + r.stderr


def test_apply_locked_installs_the_locked_bytes_or_refuses(
    tmp_path: Path, url_server: UrlServer, isolated: Path
) -> None:
    data = blob(20_000, 5)
    url = url_server.add("/v/vae.safetensors", data)
    manifest = project(
        tmp_path,
        [
            {
                "name": "V",
                "type": "diffusion",
                "family": "sdxl",
                "kind": "vae",
                "source": {"url": url},
            }
        ],
    )
    r = mlib(manifest, "apply", "--locked", "-y")
    assert r.returncode == 1 and "out of date" in r.stderr and "not in mlib.lock" in r.stderr
    assert mlib(manifest, "apply", "-y").returncode == 0  # learns the sha256 into the lock
    lock_text = (tmp_path / "mlib.lock").read_text()

    # Another machine: same manifest and lock, an empty library; the server now sends other bytes.
    other = tmp_path / "other"
    other.mkdir()
    (other / "mlib.yaml").write_text(manifest.read_text())
    (other / "mlib.lock").write_text(lock_text)
    url_server.add("/v/vae.safetensors", blob(20_000, 6))  # another file, another ETag
    r = mlib(other / "mlib.yaml", "apply", "--locked", "-y")
    assert r.returncode == 1
    assert "the file changed on the server" in r.stdout + r.stderr
    assert not (other / "lib/diffusion/sdxl/v").exists()  # nothing installed

    etag = json.loads(lock_text)["models"]["diffusion/sdxl/v"]["etag"]
    url_server.add("/v/vae.safetensors", blob(20_000, 6), etag=etag)  # same ETag, other bytes
    r = mlib(other / "mlib.yaml", "apply", "--locked", "-y")
    assert r.returncode == 1
    assert "wrong bytes" in r.stdout + r.stderr  # the locked sha256 catches it
    assert not (other / "lib/diffusion/sdxl/v").exists()

    url_server.add("/v/vae.safetensors", data)  # the locked bytes again
    r = mlib(other / "mlib.yaml", "apply", "--locked", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (other / "lib/diffusion/sdxl/v/vae.safetensors").read_bytes() == data


def test_offline_plans_from_the_lock_and_says_what_is_missing(
    tmp_path: Path, hub_env: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_env.add_repo("org/x", {"x.safetensors": blob(3000)})
    manifest = project(
        tmp_path,
        [{"name": "X", "type": "diffusion", "family": "sdxl", "kind": "vae",
          "source": {"hf": "org/x"}}],
    )  # fmt: skip
    r = mlib(manifest, "plan", "--offline")
    assert "offline, and the source of diffusion/sdxl/x is not in mlib.lock" in r.stdout
    assert "run 'mlib lock' while online" in r.stdout
    assert mlib(manifest, "lock").returncode == 0
    seen = len(hub_env.hub_requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = mlib(manifest, "plan")
    assert r.returncode == 0 and "resolved from mlib.lock" in r.stdout
    assert len(hub_env.hub_requests) == seen  # nothing asked of the Hub


def test_killing_apply_mid_download_then_applying_again_resumes(
    tmp_path: Path, hub_env: FakeHub
) -> None:
    data = blob(600_000, 7)
    hub_env.add_repo("org/big", {"big.safetensors": data})
    path = hub_env.lfs_path("org/big", "big.safetensors")
    hub_env.slow(100_000, path=path)  # ~6 s: time to kill it half-way
    manifest = project(
        tmp_path,
        [{"name": "Big", "type": "diffusion", "family": "sdxl", "kind": "checkpoint",
          "source": {"hf": "org/big"}}],
    )  # fmt: skip
    proc = mlib_popen(manifest, "apply", "-y")
    partial = tmp_path / "lib/.mlib/staging/partial"
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            parts = list(partial.glob("*.part")) if partial.is_dir() else []
            if parts and parts[0].stat().st_size > 150_000:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never got going")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=TIMEOUT)
    kept = parts[0].stat().st_size
    assert 0 < kept < len(data)
    assert not (tmp_path / "lib/diffusion/sdxl/big").exists()  # complete or absent

    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "lib/diffusion/sdxl/big/big.safetensors").read_bytes() == data
    ranges = [r.headers.get("range") for r in hub_env.cdn_requests if r.method == "GET"]
    assert ranges[-1] is not None and int(ranges[-1].split("=")[1].rstrip("-")) >= kept - (1 << 20)


def test_tokens_never_reach_disk_or_output(
    tmp_path: Path, url_server: UrlServer, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-token-value"
    data = blob(10_000, 8)
    url = url_server.add("/p/model.safetensors", data, auth=f"Bearer {secret}")
    manifest = project(
        tmp_path,
        [
            {
                "name": "P",
                "type": "diffusion",
                "family": "sdxl",
                "kind": "lora",
                "source": {"url": url},
            }
        ],
    )
    r = mlib(manifest, "plan")
    assert "MLIB_TOKEN_127_0_0_1" in r.stdout  # the fix names the variable to set
    monkeypatch.setenv("MLIB_TOKEN_127_0_0_1", secret)
    r = mlib(manifest, "-v", "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert secret not in r.stdout + r.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 10 << 20:
            assert secret.encode() not in path.read_bytes(), path


def test_the_cli_lists_no_progress_bars_in_a_pipe(tmp_path: Path, url_server: UrlServer) -> None:
    url = url_server.add("/q/m.safetensors", blob(5000, 9))
    manifest = project(
        tmp_path,
        [
            {
                "name": "Q",
                "type": "diffusion",
                "family": "sdxl",
                "kind": "lora",
                "source": {"url": url},
            }
        ],
    )
    r = mlib(manifest, "apply", "-y")  # output captured: a pipe, not a terminal
    assert r.returncode == 0, r.stderr
    assert "it/s" not in r.stderr and "B/s" not in r.stderr


def test_plan_json_and_the_lock_follow_their_schemas(
    tmp_path: Path, hub_env: FakeHub, url_server: UrlServer
) -> None:
    import jsonschema

    hub_env.add_repo("org/s", {"s.safetensors": blob(3000, 10), "cfg/c.json": b"{}"})
    url = url_server.add("/u/u.safetensors", blob(2000, 11))
    manifest = project(
        tmp_path,
        [{"name": "S", "type": "diffusion", "family": "sdxl", "kind": "diffusers",
          "source": {"hf": "org/s"}},
         {"name": "U", "type": "diffusion", "family": "sdxl", "kind": "lora",
          "source": {"url": url}}],
    )  # fmt: skip
    schemas = Path(__file__).resolve().parent.parent / "schemas"
    r = mlib(manifest, "plan", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    jsonschema.validate(plan, json.loads((schemas / "plan.schema.json").read_text()))
    assert plan["summary"]["download"] == 2
    assert plan["summary"]["download_bytes"] == 3000 + 2 + 2000
    assert mlib(manifest, "lock").returncode == 0
    lock = json.loads((tmp_path / "mlib.lock").read_text())
    jsonschema.validate(lock, json.loads((schemas / "lock.schema.json").read_text()))
    files = lock["models"]["diffusion/sdxl/s"]["files"]
    assert [f["path"] for f in files] == ["cfg/c.json", "s.safetensors"]


def test_parallel_downloads_install_every_model(tmp_path: Path, url_server: UrlServer) -> None:
    datas = {f"m{i}": blob(300_000, 20 + i) for i in range(4)}
    models = []
    for name, data in datas.items():
        url = url_server.add(f"/p/{name}.safetensors", data)
        models.append({"name": name, "type": "diffusion", "family": "sdxl", "kind": "lora",
                       "source": {"url": url}})  # fmt: skip
    manifest = project(tmp_path, models)
    r = mlib(manifest, "apply", "-y", "--jobs", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    for name, data in datas.items():
        assert (tmp_path / f"lib/diffusion/sdxl/{name}/{name}.safetensors").read_bytes() == data
    gets = [q for q in url_server.requests if q.method == "GET"]
    assert len(gets) == 4  # each fetched once: the actions found the prefetched files


def test_a_plan_that_cannot_fit_fails_early(
    tmp_path: Path, url_server: UrlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from reconciler import api
    from reconciler.errors import ReconcilerError

    url = url_server.add("/f/big.safetensors", blob(50_000, 30))
    manifest = project(
        tmp_path,
        [{"name": "Big", "type": "diffusion", "family": "sdxl", "kind": "lora",
          "source": {"url": url}}],
    )  # fmt: skip
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))  # 10 kB free
    space = api.space_needed(api.make_plan(manifest))
    assert space is not None and space.short and space.needed == 50_000
    with pytest.raises(ReconcilerError, match="not enough space"):
        api.apply(manifest)
    assert not (tmp_path / "lib/diffusion").exists()
    assert not [q for q in url_server.requests if q.method == "GET"]  # nothing was fetched


def test_a_terminal_gets_progress_bars(tmp_path: Path, url_server: UrlServer) -> None:
    """stderr on a pseudo-terminal: per-model and overall bars (bytes, rate); a pipe gets none
    (the other tests)."""
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    from scenario import MLIB

    url = url_server.add("/t/m.safetensors", blob(2_000_000, 40))
    manifest = project(
        tmp_path,
        [{"name": "T", "type": "diffusion", "family": "sdxl", "kind": "lora",
          "source": {"url": url}}],
    )  # fmt: skip
    leader, follower = pty.openpty()
    # A terminal 100 columns wide (a new pseudo-terminal has 0: tqdm would draw empty bars).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    try:
        proc = subprocess.run(
            [str(MLIB), "-m", str(manifest), "apply", "-y"],
            stdout=subprocess.PIPE, stderr=follower, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    text = shown.decode(errors="replace")
    assert "all:" in text and "t:" in text, text[-500:]  # overall, and the model's own bar
    assert "B/s" in text and "2.00M" in text, text[-500:]  # rate, and the size to fetch


def test_offline_apply_downloads_nothing(
    tmp_path: Path, url_server: UrlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url_server.add("/o/m.safetensors", blob(4000, 50))
    manifest = project(
        tmp_path,
        [{"name": "O", "type": "diffusion", "family": "sdxl", "kind": "lora",
          "source": {"url": url}}],
    )  # fmt: skip
    assert mlib(manifest, "lock").returncode == 0
    before = len(url_server.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 1
    assert "offline (--offline or HF_HUB_OFFLINE), so not downloaded" in r.stdout + r.stderr
    assert len(url_server.requests) == before  # not one request
    assert not (tmp_path / "lib/diffusion/sdxl/o").exists()


def test_a_rate_limited_hub_is_asked_again_when_planning(tmp_path: Path, hub_env: FakeHub) -> None:
    hub_env.add_repo("org/r", {"r.safetensors": blob(3000, 60)})
    manifest = project(
        tmp_path,
        [{"name": "R", "type": "diffusion", "family": "sdxl", "kind": "vae",
          "source": {"hf": "org/r"}}],
    )  # fmt: skip
    hub_env.rate_limit(1, retry_after=0)
    r = mlib(manifest, "plan")
    assert r.returncode == 0 and "download 1 file" in r.stdout, r.stdout
    assert hub_env.pending_api_faults == []  # the 429 was answered, and asked past
