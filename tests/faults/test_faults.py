"""Faults, end to end through real ``mlib`` subprocesses (DESIGN.md §6):

* SIGKILLs at random points: a CI subset of ``python -m tests.faults.run`` (same code, 8 kills),
  and kills at the exact points the random ones found bugs at;
* a full disk (ENOSPC) during an import and during a download, twice: injected in the mlib
  process (a ``python -c`` wrapper around the real entry point, as in ``tests/test_crash.py``),
  and for real, on a size-limited tmpfs mounted in a private user and mount namespace
  (``full_disk.py``; skipped where ``unshare`` may not mount): one clear error, the library
  unchanged, and the next apply with room converges (resuming the download);
* two applies at once on one library: one waits, or fails at once with a clear message;
* server faults in a real apply (cut, stall past the timeout, wrong bytes, 5xx, 429): retried
  or failed cleanly, never installed wrong. (``tests/test_downloads.py`` tests the same faults
  on the fetch function itself; here it is the whole apply, its exit code and what is left.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from scenario import (
    MLIB,
    MiB,
    mlib,
    mlib_popen,
    project,
    read_yaml,
    sha256_file,
    write_yaml,
)
from servers import HOST, UrlServer

from .harness import run

pytestmark = pytest.mark.slow

TIMEOUT = 60


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", HOST)
    monkeypatch.setenv("no_proxy", HOST)


# --- random kills: the CI subset of the runner --------------------------------------------------


def test_random_kills_of_apply_all_converge(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run(tmp_path, kills=8, seed=7, chain=8, log=lines.append)
    report = "\n".join([*lines, summary.text()])
    assert summary.violations == [], report
    assert len(summary.kills) == 8
    # The kills must have hit work, not only start-up, or they proved little. (Those made at a
    # file-system call land where the count says, whatever the machine's load.)
    at_calls = [k for k in summary.kills if k.how == "fs-call" and not k.finished_first]
    assert len([k for k in at_calls if not k.landed.startswith("start-up")]) >= 2, report


# --- helpers for the other tests ----------------------------------------------------------------


def blob(size: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def local_model(name: str, path: str) -> dict[str, object]:
    return {"name": name, "type": "diffusion", "family": "sdxl", "kind": "lora",
            "source": {"path": path}}  # fmt: skip


def url_model(name: str, url: str, sha256: str | None = None) -> dict[str, object]:
    model: dict[str, object] = {"name": name, "type": "diffusion", "family": "sdxl",
                                "kind": "vae", "source": {"url": url}}  # fmt: skip
    if sha256:
        model["sha256"] = sha256
    return model


def library_state(lib: Path) -> dict[str, str]:
    """Every file below the library except mlib's own folder and the index: path -> sha256."""
    out: dict[str, str] = {}
    for path in sorted(lib.rglob("*")):
        rel = path.relative_to(lib).as_posix()
        if rel.startswith(".mlib") or rel.startswith("models.db") or not path.is_file():
            continue
        out[rel] = sha256_file(path)
    return out


def indexed(lib: Path) -> set[str]:
    with sqlite3.connect(f"file:{lib / 'models.db'}?mode=ro", uri=True) as db:
        return {row[0] for row in db.execute("SELECT id FROM models")}


def model_folders(lib: Path) -> set[str]:
    return {
        p.relative_to(lib).as_posix()
        for p in lib.glob("*/*/*")
        if p.is_dir() and not p.relative_to(lib).as_posix().startswith(".mlib")
    }


def assert_converged(manifest: Path) -> None:
    for cmd in (("plan", "--detailed-exitcode"), ("verify",), ("status",)):
        r = mlib(manifest, *cmd)
        assert r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"
        assert "Traceback" not in r.stderr


#: The real CLI, with faults and quicker network settings injected (environment variables):
#: MLIB_TEST_ENOSPC_AFTER=N: the bodies of copies and downloads fail with ENOSPC once N bytes
#: were written (the write that crosses N writes what fits, then fails);
#: MLIB_TEST_ENOSPC_METADATA=1: every metadata.json written fails with ENOSPC;
#: MLIB_TEST_TIMEOUT: the HTTP socket timeout; MLIB_TEST_RETRY_BASE: the first retry's wait.
WRAPPER = """
import errno, functools, os
from reconciler import fsops, hashing
from reconciler.sources import http
def full(path=None):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
if os.environ.get("MLIB_TEST_ENOSPC_AFTER"):
    left = [int(os.environ["MLIB_TEST_ENOSPC_AFTER"])]
    streaming_write = hashing.StreamingWriter.write
    def write(self, view):
        if len(view) > left[0]:
            if left[0]:
                streaming_write(self, view[: left[0]])
            left[0] = 0
            raise full()
        left[0] -= len(view)
        streaming_write(self, view)
    hashing.StreamingWriter.write = write
if os.environ.get("MLIB_TEST_ENOSPC_METADATA"):
    atomic_write = fsops.atomic_write
    def atomic(path, data, **kwargs):
        if os.path.basename(path) == "metadata.json":
            raise full(str(path))
        atomic_write(path, data, **kwargs)
    fsops.atomic_write = atomic
if os.environ.get("MLIB_TEST_TIMEOUT"):
    timeout = float(os.environ["MLIB_TEST_TIMEOUT"])
    http.client = lambda timeout=timeout: http.Client(timeout)
if os.environ.get("MLIB_TEST_RETRY_BASE"):
    http.Retry = functools.partial(http.Retry, base=float(os.environ["MLIB_TEST_RETRY_BASE"]))
from reconciler.cli import main
main(prog_name="mlib")
"""


def mlib_wrapped(manifest: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, "-m", str(manifest), *args],
        cwd=manifest.parent,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture
def server() -> Iterator[UrlServer]:
    with UrlServer() as srv:
        yield srv


# --- a full disk --------------------------------------------------------------------------------

ENOSPC_CASES = [
    # (what is brought in, ENOSPC after this many bytes of it, or 0: at its metadata.json)
    pytest.param("import", 1 * MiB, id="import-mid-copy"),
    pytest.param("import", 0, id="import-at-metadata"),
    pytest.param("download", 1 * MiB + 123, id="download-mid-body"),
    pytest.param("download", 0, id="download-at-metadata"),
]


@pytest.mark.parametrize(("what", "budget"), ENOSPC_CASES)
def test_a_full_disk_is_one_clear_error_and_the_next_apply_converges(
    tmp_path: Path, server: UrlServer, what: str, budget: int
) -> None:
    data = blob(4 * MiB, 1)  # the new model's file
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "old.safetensors").write_bytes(blob(300_000, 2))
    (tmp_path / "src" / "new.safetensors").write_bytes(data)
    url = server.add("/m/new.safetensors", data)
    old = local_model("Old", "src/old.safetensors")
    manifest = project(tmp_path, [old])
    assert mlib(manifest, "apply", "-y").returncode == 0  # a library with a model already
    lib = tmp_path / "lib"
    before = library_state(lib)
    new = local_model("New", "src/new.safetensors") if what == "import" else url_model("New", url)
    manifest = project(tmp_path, [old, new])

    fault = (
        {"MLIB_TEST_ENOSPC_AFTER": str(budget)} if budget else {"MLIB_TEST_ENOSPC_METADATA": "1"}
    )
    r = mlib_wrapped(manifest, "apply", "-y", **fault)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "No space left on device" in failed[0], out
    # The library is as it was: no partial model folder, the index names exactly its models.
    assert library_state(lib) == before
    assert model_folders(lib) == indexed(lib) == {"diffusion/sdxl/old"}
    assert (tmp_path / "src" / "new.safetensors").read_bytes() == data  # the source is intact
    assert mlib(manifest, "verify").returncode == 0

    partial = lib / ".mlib" / "staging" / "partial"
    kept = sum(p.stat().st_size for p in partial.glob("*.part")) if partial.is_dir() else 0

    # Space again: the next apply converges; a download resumes what it had.
    gets = len([q for q in server.requests if q.method == "GET"])
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (lib / "diffusion/sdxl/new/new.safetensors").read_bytes() == data
    assert_converged(manifest)
    staging = lib / ".mlib" / "staging"
    assert not staging.exists() or not [p for p in staging.rglob("*") if p.is_file()]
    if what == "download":
        again = [q for q in server.requests if q.method == "GET"][gets:]
        if budget:  # resumed where the disk filled up, not from zero
            assert 0 < kept <= budget
            assert len(again) == 1 and again[0].headers.get("range") == f"bytes={kept}-"
        else:  # the whole file was fetched and verified before the disk filled up: kept
            assert again == []


# --- a full disk for real: a size-limited tmpfs in a private mount namespace ------------------


def _can_mount_tmpfs() -> bool:
    try:
        r = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
             "mount -t tmpfs -o size=1m tmpfs /mnt || mount -t tmpfs -o size=1m tmpfs /tmp"],
            capture_output=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


needs_tmpfs = pytest.mark.skipif(
    not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a user and mount namespace here"
)

#: (what is brought in, bytes of room beyond its size: negative fills up mid-file; small ones
#: leave the file room but little or none for metadata.json, the index and the link)
TMPFS_CASES = [
    pytest.param("import", -2 * MiB, False, id="import-no-room-for-the-file"),
    pytest.param("import", 16 << 10, False, id="import-16k-beyond-the-file"),
    pytest.param("import", 1 * MiB, True, id="import-disk-filled-mid-copy"),
    pytest.param("download", -2 * MiB, False, id="download-no-room-for-the-file"),
    pytest.param("download", 16 << 10, False, id="download-16k-beyond-the-file"),
    pytest.param("download", 1 * MiB, True, id="download-disk-filled-mid-body"),
]


@needs_tmpfs
@pytest.mark.parametrize(("what", "margin", "fill"), TMPFS_CASES)
def test_a_real_full_disk_fails_cleanly_and_the_next_apply_converges(
    tmp_path: Path, server: UrlServer, what: str, margin: int, fill: bool
) -> None:
    data = blob((32 if fill and what == "import" else 4) * MiB, 10)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "old.safetensors").write_bytes(blob(300_000, 11))
    (tmp_path / "src" / "new.safetensors").write_bytes(data)
    url = server.add("/m/new.safetensors", data)
    if fill:  # a download that lasts, for the disk to fill up in the middle of it
        server.slow(4 * MiB, times=1, path="/m/new.safetensors")
    old = local_model("Old", "src/old.safetensors")
    new = local_model("New", "src/new.safetensors") if what == "import" else url_model("New", url)
    before = project(tmp_path, [old])
    after = tmp_path / "after.yaml"
    write_yaml(after, {**read_yaml(before), "models": [old, new]})
    (tmp_path / "lib").mkdir()
    config = {
        "mlib": str(MLIB), "library": str(tmp_path / "lib"), "before": str(before),
        "after": str(after), "new_bytes": len(data), "margin": margin, "fill": fill,
        "out": str(tmp_path / "out.json"),
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    driver = Path(__file__).resolve().parent / "full_disk.py"
    r = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", sys.executable, str(driver),
         str(tmp_path / "config.json")],
        capture_output=True, text=True, timeout=4 * TIMEOUT, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["first"]["code"] == 0, got["first"]
    full = got["full"]
    said = full["out"] + full["err"]
    assert "Traceback" not in said, said
    if full["code"] != 0:  # the disk filled up: one clear line says so, with the right fix
        assert full["code"] == 1, said
        problems = [line for line in said.splitlines() if "FAILED" in line or "error" in line]
        named = ("No space left on device", "disk is full", "not enough space")
        assert problems and all(any(n in line for n in named) for line in problems), said
        assert all("delete it" not in line for line in problems), said  # the index is fine
    else:
        assert not fill or not full["filled"], "the apply succeeded on a full disk?"
    # Complete or absent, and the index names exactly the complete models.
    state = got["after_full"]
    kept = {k: v for k, v in state["files"].items() if k.startswith("diffusion/sdxl/old/")}
    assert kept == {k: v for k, v in got["before"]["files"].items() if "/old/" in k}
    # The index names only complete models (it may lag behind: the next apply indexes a model
    # whose folder was renamed into place just before the index could not grow).
    assert isinstance(state["indexed"], list) and set(state["indexed"]) <= set(state["folders"])
    if "diffusion/sdxl/new" in state["folders"]:
        assert (
            state["files"]["diffusion/sdxl/new/new.safetensors"] == hashlib.sha256(data).hexdigest()
        )
    assert got["verify_full"]["code"] == 0, got["verify_full"]
    assert (tmp_path / "src" / "new.safetensors").read_bytes() == data
    # Room again: the next apply converges.
    for step in ("again", "plan", "verify"):
        assert got[step]["code"] == 0, (step, got[step])
        assert "Traceback" not in got[step]["err"]
    final = got["final"]
    assert final["folders"] == final["indexed"] == ["diffusion/sdxl/new", "diffusion/sdxl/old"]
    assert final["files"]["diffusion/sdxl/new/new.safetensors"] == hashlib.sha256(data).hexdigest()
    assert final["staging"] == {}, final["staging"]


# --- kills at exact points the random ones found -------------------------------------------------

#: The real CLI, SIGKILLed right after the ``os.rename`` whose destination ends with
#: MLIB_TEST_KILL_AFTER_RENAME_TO.
KILL_AFTER_RENAME = """
import os, signal
rename = os.rename
def hooked(src, dst, *args, **kwargs):
    rename(src, dst, *args, **kwargs)
    if str(dst).endswith(os.environ["MLIB_TEST_KILL_AFTER_RENAME_TO"]):
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = hooked
from reconciler.cli import main
main(prog_name="mlib")
"""


def test_a_kill_right_after_a_download_is_renamed_into_place_leaves_no_partial_file(
    tmp_path: Path, server: UrlServer
) -> None:
    """Found by the random kills (seed 7): the fetched file stayed in .mlib/staging/partial/
    for ever (the model was complete, so no later plan cleared it): a full copy's worth of disk
    once the model was pruned."""
    data = blob(1 * MiB, 8)
    url = server.add("/m/d.safetensors", data)
    manifest = project(tmp_path, [url_model("D", url)])
    r = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_RENAME, "-m", str(manifest), "apply", "-y"],
        cwd=tmp_path,
        env={**os.environ, "MLIB_TEST_KILL_AFTER_RENAME_TO": "/lib/diffusion/sdxl/d"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert (tmp_path / "lib/diffusion/sdxl/d/d.safetensors").read_bytes() == data
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_converged(manifest)
    partial = tmp_path / "lib/.mlib/staging/partial"
    assert not partial.is_dir() or list(partial.iterdir()) == []


def test_the_part_of_a_download_no_longer_wanted_is_cleared(
    tmp_path: Path, server: UrlServer
) -> None:
    """A download interrupted (here by a full disk), then the model leaves the manifest: its
    part stayed in .mlib/staging/partial/ for ever, and plan and status said all was in sync."""
    data = blob(4 * MiB, 9)
    url = server.add("/m/gone.safetensors", data)
    manifest = project(tmp_path, [url_model("Gone", url)])
    r = mlib_wrapped(manifest, "apply", "-y", MLIB_TEST_ENOSPC_AFTER=str(1 * MiB))
    assert r.returncode == 1, r.stdout + r.stderr
    partial = tmp_path / "lib/.mlib/staging/partial"
    assert list(partial.glob("*.part"))
    manifest = project(tmp_path, [])
    r = mlib(manifest, "plan", "--detailed-exitcode")
    assert r.returncode == 2 and "no model of the manifest needs" in r.stdout, r.stdout
    r = mlib(manifest, "apply", "-y", "--prune")
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(partial.iterdir()) == []
    assert_converged(manifest)


def test_a_part_is_kept_while_its_server_cannot_be_asked(tmp_path: Path, server: UrlServer) -> None:
    """The other side of the clearing: a server failing while the plan is made (here 500 on
    every request) must not cost the part of a download it will resume."""
    data = blob(4 * MiB, 12)
    url = server.add("/m/kept.safetensors", data)
    manifest = project(tmp_path, [url_model("Kept", url)])
    r = mlib_wrapped(manifest, "apply", "-y", MLIB_TEST_ENOSPC_AFTER=str(1 * MiB))
    assert r.returncode == 1, r.stdout + r.stderr
    partial = tmp_path / "lib/.mlib/staging/partial"
    (part,) = partial.glob("*.part")
    kept = part.stat().st_size
    server.status(500, times=1000)
    r = mlib_wrapped(manifest, "apply", "-y", MLIB_TEST_RETRY_BASE="0.01")
    assert r.returncode == 1 and "CONFLICT" in r.stdout, r.stdout + r.stderr
    assert part.stat().st_size == kept  # kept, untouched
    server.clear_faults()
    server.clear_requests()
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    gets = [q for q in server.requests if q.method == "GET"]
    assert [q.headers.get("range") for q in gets] == [f"bytes={kept}-"]  # resumed
    assert (tmp_path / "lib/diffusion/sdxl/kept/kept.safetensors").read_bytes() == data
    assert_converged(manifest)


#: The real CLI, SIGKILLed right before the ``os.<MLIB_TEST_KILL_CALL>`` (``replace`` unless
#: said) whose destination ends with MLIB_TEST_KILL_BEFORE (for a replace, the temporary file is
#: written and fsynced by then).
KILL_BEFORE = """
import os, signal
call = os.environ.get("MLIB_TEST_KILL_CALL", "replace")
real = getattr(os, call)
def hooked(src, dst, *args, **kwargs):
    if str(dst).endswith(os.environ["MLIB_TEST_KILL_BEFORE"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
setattr(os, call, hooked)
from reconciler.cli import main
main(prog_name="mlib")
"""


@pytest.mark.parametrize("written", ["overrides.json", "metadata.json"])
def test_a_kill_in_the_middle_of_rewriting_a_models_json_leaves_no_stray_file_in_it(
    tmp_path: Path, written: str
) -> None:
    """Found by the random kills (seed 3): a kill between the write of the temporary file and
    its rename left '.overrides.json.<random>.tmp' in the model folder for ever (no plan saw it,
    verify neither, and an app shown the folder lists it)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.safetensors").write_bytes(blob(100_000, 13))
    model = local_model("A", "src/a.safetensors")
    manifest = project(tmp_path, [model])
    assert mlib(manifest, "apply", "-y").returncode == 0
    # A change that rewrites the file: an app override (overrides.json), tags (metadata.json).
    change = {"apps": {"comfy": False}} if written == "overrides.json" else {"tags": ["new"]}
    manifest = project(tmp_path, [{**model, **change}])
    r = subprocess.run(
        [sys.executable, "-c", KILL_BEFORE, "-m", str(manifest), "apply", "-y"],
        cwd=tmp_path,
        env={**os.environ, "MLIB_TEST_KILL_BEFORE": f"/sdxl/a/{written}"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    folder = tmp_path / "lib/diffusion/sdxl/a"
    expected = ["a.safetensors", "metadata.json", "overrides.json"]
    assert sorted(p.name for p in folder.iterdir()) == expected
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_converged(manifest)
    assert sorted(p.name for p in folder.iterdir()) == expected
    staging = tmp_path / "lib/.mlib/staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_a_kill_while_apply_writes_mlib_lock_leaves_no_stray_file_beside_the_manifest(
    tmp_path: Path, server: UrlServer
) -> None:
    """Found with the random kills' hook: '.mlib.lock.<random>.tmp' stayed beside the user's
    manifest for ever."""
    url = server.add("/m/l.safetensors", blob(200_000, 14))
    manifest = project(tmp_path, [url_model("L", url)])
    before = sorted(p.name for p in tmp_path.iterdir())
    r = subprocess.run(
        [sys.executable, "-c", KILL_BEFORE, "-m", str(manifest), "apply", "-y"],
        cwd=tmp_path,
        env={**os.environ, "MLIB_TEST_KILL_BEFORE": "/mlib.lock"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_converged(manifest)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "lib", "mlib.lock"])


@pytest.mark.parametrize(
    ("call", "suffix"),
    [("replace", "/mlib.lock"), ("rename", "/sdxl/k")],
    ids=["writing-mlib.lock", "renaming-the-model-into-place"],
)
def test_a_download_is_in_mlib_lock_before_it_is_in_the_library(
    tmp_path: Path, server: UrlServer, call: str, suffix: str
) -> None:
    """Found with the random kills' hook: apply recorded its downloads in mlib.lock after the
    whole plan ran, so a kill in between left a model installed that the lock did not know; the
    next apply had nothing to do, 'mlib lock --check' failed and 'apply --locked' refused until
    'mlib lock' ran, while status said all was in sync. Now the entry is written while the
    download is still in staging: killed before or after, the model is absent, and the next
    apply converges with a current lock."""
    url = server.add("/m/k.safetensors", blob(200_000, 15))
    manifest = project(tmp_path, [url_model("K", url)])
    r = subprocess.run(
        [sys.executable, "-c", KILL_BEFORE, "-m", str(manifest), "apply", "-y"],
        cwd=tmp_path,
        env={**os.environ, "MLIB_TEST_KILL_CALL": call, "MLIB_TEST_KILL_BEFORE": suffix},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert library_state(tmp_path / "lib") == {}  # killed before the install (staging aside)
    assert mlib(manifest, "apply", "-y").returncode == 0
    assert_converged(manifest)
    r = mlib(manifest, "lock", "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert mlib(manifest, "apply", "-y", "--locked").returncode == 0


# --- two applies at once ------------------------------------------------------------------------


#: The real CLI, whose apply, once it holds the library lock and has its plan, waits for the
#: file MLIB_TEST_GO to appear before it does anything (so that another apply meets the lock
#: for sure, however loaded the machine).
HOLD = """
import os, time
from reconciler import executor
run = executor.Executor.run
def held(self, plan):
    deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["MLIB_TEST_GO"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return run(self, plan)
executor.Executor.run = held
from reconciler.cli import main
main(prog_name="mlib")
"""


def two_models(tmp_path: Path, server: UrlServer) -> tuple[Path, bytes]:
    """A URL model and a local one."""
    data = blob(2 * MiB, 3)
    url = server.add("/m/slow.safetensors", data)
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "a.safetensors").write_bytes(blob(100_000, 4))
    return project(tmp_path, [local_model("A", "src/a.safetensors"), url_model("Slow", url)]), data


def start_held(manifest: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """``mlib apply -y ARGS`` held by HOLD; its stderr goes to a file (read while it runs)."""
    err = manifest.parent / f"stderr-{len(list(manifest.parent.glob('stderr-*')))}.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, "-m", str(manifest), "apply", "-y", *args],
            cwd=manifest.parent,
            env={**os.environ, "MLIB_TEST_GO": str(manifest.parent / "go")},
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
        )
    return proc, err


def wait_until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("second_timeout", [None, "0.3"])
def test_two_applies_at_once_one_waits_or_fails_clearly_and_the_end_is_right(
    tmp_path: Path, server: UrlServer, second_timeout: str | None
) -> None:
    """Two real applies started together on one library: the one that does not get the lock
    waits (and then finds the work done), or, with a short --lock-timeout, fails at once saying
    who holds the lock and what to do; either way the library ends right."""
    manifest, data = two_models(tmp_path, server)
    lock = tmp_path / "lib" / ".mlib" / "lock"
    args = ("--lock-timeout", second_timeout) if second_timeout else ("--lock-timeout", "50")
    procs = [start_held(manifest, *args), start_held(manifest, *args)]
    try:
        pids = {str(p.pid): (p, err) for p, err in procs}
        wait_until(
            "one apply holds the lock", lambda: lock.exists() and lock.read_text().strip() in pids
        )
        holder, holder_err = pids[lock.read_text().strip()]
        ((other, other_err),) = [(p, e) for p, e in procs if p is not holder]
        if second_timeout:
            wait_until("the other apply gives up", lambda: other.poll() is not None)
        else:
            wait_until(
                "the other apply waits", lambda: "waiting for another" in other_err.read_text()
            )
        (tmp_path / "go").touch()
        outs = {p: p.communicate(timeout=TIMEOUT)[0] for p, _ in procs}
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert holder.returncode == 0, outs[holder] + holder_err.read_text()
    said = other_err.read_text()
    assert "Traceback" not in said
    if second_timeout:
        assert other.returncode == 1, outs[other] + said
        message = said.strip().splitlines()[-1]
        assert "another mlib apply" in message and f"(pid {holder.pid})" in message, message
        assert "--lock-timeout" in message
    else:
        assert other.returncode == 0, outs[other] + said
        assert "waiting for another mlib apply" in said
        assert "Applied 0 of 0 actions" in outs[other]  # it planned after the wait: nothing left
    assert (tmp_path / "lib/diffusion/sdxl/slow/slow.safetensors").read_bytes() == data
    assert len([q for q in server.requests if q.method == "GET"]) == 1  # downloaded once
    assert_converged(manifest)


# --- server faults in a real apply --------------------------------------------------------------

#: (when: "download" with mlib.lock made first, so the plan asks the server nothing and the
#: fault meets the download; "plan" without, so a status fault meets the plan's HEAD; the fault
#: set on the server; how many requests it hits; whether the apply installs the model; what its
#: output says). The client gets a 1 s socket timeout and 0.05 s as first retry wait (the
#: defaults, 30 s and 1 s, would only make the test slow).
SERVER_FAULTS = [
    pytest.param("download", "cut_after", {"n_bytes": 300_000}, 1, True, "", id="cut-once-resumes"),
    pytest.param("download", "cut_after", {"n_bytes": 300_000}, 3, True, "", id="cut-thrice-resumes"),
    pytest.param("download", "cut_after", {"n_bytes": 0}, 50, False, "connection ended after 0 of", id="cut-always-fails"),
    pytest.param("download", "stall", {"seconds": 3.0}, 1, True, "", id="stall-past-timeout-retried"),
    pytest.param("download", "stall", {"seconds": 3.0}, 50, False, "connection failed (TimeoutError)", id="stall-always-fails"),
    pytest.param("download", "wrong_bytes", {}, 1, False, "wrong bytes (sha256 is", id="wrong-bytes-refused"),
    pytest.param("download", "status", {"code": 503}, 2, True, "", id="503-twice-retried"),
    pytest.param("download", "status", {"code": 500}, 50, False, "the server answered 500", id="500-always-fails"),
    pytest.param("download", "status", {"code": 429, "retry_after": 1}, 2, True, "", id="429-retry-after"),
    pytest.param("download", "status", {"code": 404}, 1, False, "not found on the server (404)", id="404-fails-at-once"),
    pytest.param("plan", "status", {"code": 429, "retry_after": 1}, 2, True, "", id="plan-429-retry-after"),
    pytest.param("plan", "status", {"code": 500}, 50, False, "answered 500", id="plan-500-always-a-conflict"),
    pytest.param("plan", "status", {"code": 404}, 1, False, "not found (404)", id="plan-404-a-conflict"),
]  # fmt: skip


@pytest.mark.parametrize(("when", "fault", "kwargs", "times", "installed", "said"), SERVER_FAULTS)
def test_server_faults_are_retried_or_fail_cleanly_never_installed_wrong(
    tmp_path: Path,
    server: UrlServer,
    when: str,
    fault: str,
    kwargs: dict[str, object],
    times: int,
    installed: bool,
    said: str,
) -> None:
    data = blob(1 * MiB, 5)
    url = server.add("/m/vae.safetensors", data)
    # The sha256 to check the bytes against: pinned in the manifest (without a pin or a lock,
    # the first download can only be checked for its size: tests/test_downloads.py).
    manifest = project(tmp_path, [url_model("Vae", url, hashlib.sha256(data).hexdigest())])
    if when == "download":
        assert mlib(manifest, "lock").returncode == 0
    server.clear_requests()
    getattr(server, fault)(times=times, **kwargs)
    r = mlib_wrapped(manifest, "apply", "-y", MLIB_TEST_TIMEOUT="1", MLIB_TEST_RETRY_BASE="0.05")
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    folder = tmp_path / "lib/diffusion/sdxl/vae"
    if installed:
        assert r.returncode == 0, out
        assert (folder / "vae.safetensors").read_bytes() == data
        assert server.pending_faults == []  # each fault was met, and got past
        assert_converged(manifest)
        return
    if when == "download":  # the plan asked nothing: the download met the fault
        assert server.requests and all(q.method == "GET" for q in server.requests)
    assert r.returncode == 1, out
    assert said in out, out
    # One failed step (a status the planner's HEAD got: one conflict, with its reason below).
    failed = [
        i for i, line in enumerate(out.splitlines()) if "FAILED" in line or "CONFLICT" in line
    ]
    assert len(failed) == 1 and said in "\n".join(out.splitlines()[failed[0] : failed[0] + 2]), out
    assert not folder.exists()  # complete or absent: never the wrong bytes
    # What is left in staging is only a resumable part of the right bytes, if anything.
    partial = tmp_path / "lib/.mlib/staging/partial"
    for part in partial.glob("*.part") if partial.is_dir() else []:
        assert data.startswith(part.read_bytes())
    server.clear_faults()
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (folder / "vae.safetensors").read_bytes() == data
    assert_converged(manifest)


def test_wrong_bytes_are_refused_against_the_sha256_an_earlier_apply_locked(
    tmp_path: Path, server: UrlServer
) -> None:
    """No pin: the first apply records the file's sha256 in mlib.lock; when the model must be
    fetched again (its folder was lost), a server sending other bytes is refused."""
    data = blob(1 * MiB, 7)
    url = server.add("/m/v.safetensors", data)
    manifest = project(tmp_path, [url_model("V", url)])
    assert mlib(manifest, "apply", "-y").returncode == 0
    assert hashlib.sha256(data).hexdigest() in (tmp_path / "mlib.lock").read_text()
    shutil.rmtree(tmp_path / "lib/diffusion/sdxl/v")  # lost (a disk error, a user's rm)
    server.wrong_bytes()
    r = mlib(manifest, "apply", "-y")
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out, out
    assert "wrong bytes" in out, out
    assert not (tmp_path / "lib/diffusion/sdxl/v").exists()
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "lib/diffusion/sdxl/v/v.safetensors").read_bytes() == data
    assert_converged(manifest)


def test_a_kill_while_the_server_stalls_leaves_nothing_installed(
    tmp_path: Path, server: UrlServer
) -> None:
    data = blob(1 * MiB, 6)
    url = server.add("/m/s.safetensors", data)
    manifest = project(tmp_path, [url_model("S", url)])
    server.stall(20.0)
    proc = mlib_popen(manifest, "apply", "-y")
    try:
        deadline = time.monotonic() + TIMEOUT
        while not [q for q in server.requests if q.method == "GET"]:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=TIMEOUT)
    assert not (tmp_path / "lib/diffusion/sdxl/s").exists()
    server.clear_faults()
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_converged(manifest)
