"""Security review (issue 7, deliverable 3): every name that comes from outside, symlinks in the
library, nested folders, link loops, tokens, and the permissions of what mlib writes.

Each test builds a real project under ``tmp_path`` (library, app folder, an ``outside`` folder
holding files nobody may touch), runs the real ``mlib`` command (or the real loader) on it, and
then checks the tree: nothing new or changed outside the library and the app folder, the outside
files byte-identical. Servers are ``tests/servers.py``'s, on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

import pytest
import yaml
from scenario import MLIB, mlib, write_yaml
from servers import FakeHub, UrlServer, isolate_hf_client

from reconciler import fsops
from reconciler.errors import InvalidInputError, LinkLoopError
from reconciler.loaders import load_manifest, read_metadata
from reconciler.translation_files import read_translation

# --- helpers -----------------------------------------------------------------------------------

Entry = tuple[str, str]  # (kind, content digest or link text)


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry under ``root`` (symlinks not followed): relative path -> (kind, content)."""
    out: dict[str, Entry] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", "")
            else:
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def changed_outside(
    before: Mapping[str, Entry], after: Mapping[str, Entry], allowed: Sequence[str]
) -> list[str]:
    """Paths added, removed or changed between two snapshots, other than under ``allowed``."""

    def mine(rel: str) -> bool:
        return any(rel == a or rel.startswith(a + os.sep) for a in allowed)

    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k) != after.get(k) and not mine(k))


#: What mlib may write: the library, the app folder and the lock beside the manifest.
MINE = ("proj/lib", "proj/comfy", "proj/mlib.lock")
LORA = {"name": "L", "type": "diffusion", "family": "sdxl", "kind": "lora"}


def project(root: Path, models: Sequence[Mapping[str, object]], **apps: object) -> Path:
    """A manifest at ``root/proj/mlib.yaml`` with library ``lib`` and the app ``comfy``, and an
    ``outside`` folder beside the project with files nobody may touch."""
    proj = root / "proj"
    (proj / "comfy").mkdir(parents=True, exist_ok=True)
    outside = root / "outside"
    (outside / "folder").mkdir(parents=True, exist_ok=True)
    (outside / "secret.txt").write_bytes(b"outside file, never to be touched\n")
    (outside / "folder" / "inner.bin").write_bytes(os.urandom(256))
    manifest = proj / "mlib.yaml"
    comfy = {"app": "comfyui", "version": "0.3.62", "models_dir": "comfy", **apps}
    write_yaml(
        manifest, {"version": 1, "library": "lib", "apps": {"comfy": comfy}, "models": models}
    )
    return manifest


def run_checked(manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``mlib ARGS`` whose output holds no traceback, whatever its exit code."""
    result = mlib(manifest, *args)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def safetensors(payload: int = 64, seed: int = 1) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [payload], "data_offsets": [0, payload]}})
    raw = header.encode()
    return (
        len(raw).to_bytes(8, "little")
        + raw
        + hashlib.sha256(str(seed).encode()).digest()[:1] * payload
    )


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate_hf_client(monkeypatch, tmp_path / "hf-home")
    return tmp_path


@pytest.fixture
def hub(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)  # read by the mlib subprocesses
        yield fake


@pytest.fixture
def url_server() -> Iterator[UrlServer]:
    with UrlServer() as srv:
        yield srv


# --- 1. path traversal and absolute paths from every outside name ------------------------------

BAD_NAMES = ["../../x.safetensors", "/etc/x.safetensors", "a/../../x.safetensors", "..", "\\x"]


def _models_with(field: str, value: str, source: Mapping[str, object]) -> list[dict[str, object]]:
    model: dict[str, object] = {**LORA, "source": dict(source)}
    if field.startswith("apps."):
        model["apps"] = {"comfy": {field.split(".", 1)[1]: value}}
    elif field.startswith("source."):
        model["source"] = {**dict(source), field.split(".", 1)[1]: value}
    else:
        model[field] = value
    return [model]


@pytest.mark.parametrize("value", ["../../x", "/etc/x", "a/../../x", "diffusion/../../x", "..\\x"])
@pytest.mark.parametrize(
    "field", ["id", "family", "type", "apps.folder", "apps.filename", "source.filename"]
)
def test_manifest_names_that_escape_are_refused_naming_the_field(
    tmp_path: Path, field: str, value: str
) -> None:
    source = {"url": "http://127.0.0.1:9/x.safetensors"}
    manifest = project(tmp_path, _models_with(field, value, source))
    with pytest.raises(InvalidInputError) as caught:
        load_manifest(manifest, home=tmp_path)
    fields = [p.path for p in caught.value.problems]
    assert any(f.startswith("models[0]") for f in fields), fields
    assert all(p.file and p.message for p in caught.value.problems)


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "..", "a/../../b", "C:\\Windows\\x"])
def test_a_model_name_is_cleaned_into_one_folder_name(tmp_path: Path, name: str) -> None:
    source = tmp_path / "src.safetensors"
    source.write_bytes(safetensors())
    manifest = project(tmp_path, [{**LORA, "name": name, "source": {"path": str(source)}}])
    try:
        loaded = load_manifest(manifest, home=tmp_path)
    except InvalidInputError as exc:  # no letter or digit left: refused, naming the field
        assert [p.path for p in exc.problems] == ["models[0].name"]
        return
    (spec,) = loaded.models
    assert spec.id.count("/") == 2 and ".." not in spec.id.split("/")
    assert "/" not in spec.cleaned_name and spec.cleaned_name not in (".", "..")
    before = snapshot(tmp_path)
    assert run_checked(manifest, "apply", "-y").returncode == 0
    assert changed_outside(before, snapshot(tmp_path), MINE) == []
    assert (manifest.parent / "lib" / spec.id / "src.safetensors").is_file()


def test_a_local_source_name_is_cleaned(tmp_path: Path) -> None:
    weird = tmp_path / "in" / "..weird name\\..\\x.safetensors"
    weird.parent.mkdir()
    weird.write_bytes(safetensors())
    manifest = project(tmp_path, [{**LORA, "source": {"path": str(weird)}}])
    before = snapshot(tmp_path)
    result = run_checked(manifest, "apply", "-y")
    assert result.returncode == 0, result.stderr
    assert changed_outside(before, snapshot(tmp_path), MINE) == []
    (folder,) = (manifest.parent / "lib" / "diffusion" / "sdxl").iterdir()
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["metadata.json", "overrides.json", "weird_name_.._x.safetensors"]


@pytest.mark.parametrize(
    "bad", ["../evil.safetensors", "a/../../evil.safetensors", "/etc/evil.safetensors"]
)
def test_hub_file_names_that_escape_are_refused(tmp_path: Path, hub: FakeHub, bad: str) -> None:
    placeholder = "placeholder/evil.safetensors"
    sha = hub.add_repo("org/evil", {"model.safetensors": safetensors(), placeholder: b"x" * 2000})
    files = cast(dict[str, object], hub._repos["org/evil"].commits[sha].files)
    files[bad] = files.pop(placeholder)  # the Hub client sends whatever it lists
    manifest = project(tmp_path, [{**LORA, "source": {"hf": "org/evil"}}])
    before = snapshot(tmp_path)
    shown = run_checked(manifest, "plan").stdout
    assert "not a safe path" in shown and bad in shown
    assert run_checked(manifest, "apply", "-y").returncode != 0
    after = snapshot(tmp_path)
    assert changed_outside(before, after, MINE) == []
    assert not (manifest.parent / "lib" / "diffusion").exists()


def test_a_hub_file_selected_by_name_is_refused_when_it_escapes(
    tmp_path: Path, hub: FakeHub
) -> None:
    sha = hub.add_repo("org/one", {"x/evil.safetensors": safetensors()})
    files = cast(dict[str, object], hub._repos["org/one"].commits[sha].files)
    files["../evil.safetensors"] = files.pop("x/evil.safetensors")
    manifest = project(tmp_path, [{**LORA, "source": {"hf": "org/one", "files": ["*"]}}])
    before = snapshot(tmp_path)
    assert "not a safe path" in run_checked(manifest, "plan").stdout
    assert run_checked(manifest, "apply", "-y").returncode != 0
    assert changed_outside(before, snapshot(tmp_path), MINE) == []


@pytest.mark.parametrize(
    ("path", "disposition"),
    [
        ("/d/..%2F..%2Fescaped.safetensors", None),
        ("/d/%2E%2E%2F%2E%2E%2Fescaped.safetensors", None),
        ("/d/file", 'attachment; filename="../../escaped.safetensors"'),
        ("/d/file", "attachment; filename*=UTF-8''..%2F..%2Fescaped.safetensors"),
        ("/d/file", 'attachment; filename="..\\\\..\\\\escaped.safetensors"'),
        ("/d/file", 'attachment; filename="/etc/escaped.safetensors"'),
    ],
)
def test_url_paths_and_content_disposition_cannot_escape(
    tmp_path: Path, url_server: UrlServer, path: str, disposition: str | None
) -> None:
    data = safetensors()
    url_server.add(path.replace("%2F", "/").replace("%2E", "."), data)  # how the server sees it
    url = url_server.endpoint + path
    if disposition is not None:
        url = url_server.add(path, data, content_disposition=disposition)
    manifest = project(tmp_path, [{**LORA, "source": {"url": url}}])
    before = snapshot(tmp_path)
    result = run_checked(manifest, "apply", "-y")
    assert result.returncode == 0, result.stdout + result.stderr
    assert changed_outside(before, snapshot(tmp_path), MINE) == []
    model = manifest.parent / "lib" / "diffusion" / "sdxl" / "l"
    files = sorted(p.name for p in model.iterdir() if p.suffix == ".safetensors")
    assert files == ["escaped.safetensors"] or (disposition is None and files == ["file"])
    assert (model / files[0]).read_bytes() == data
    found = {p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("escaped.safetensors")}
    assert found == {("proj", "lib"), ("proj", "comfy")}  # the model's file and its link


@pytest.mark.parametrize("target", ["../../outside", "/tmp/abs", "loras/../../x", "..", "a//b"])
def test_translation_targets_that_escape_are_refused(tmp_path: Path, target: str) -> None:
    doc = {
        "app": "myapp",
        "versions": "*",
        "variant": "default",
        "rules": [{"match": {"kind": ["lora"]}, "targets": [target]}],
    }
    with pytest.raises(InvalidInputError) as caught:
        read_translation(json.dumps(doc), "myapp_1_default.json")
    assert any("rules" in p.path for p in caught.value.problems), caught.value.problems

    folder = tmp_path / "proj" / "tr"
    folder.mkdir(parents=True)
    (folder / "myapp_1_default.json").write_text(json.dumps(doc))
    source = tmp_path / "l.safetensors"
    source.write_bytes(safetensors())
    manifest = project(tmp_path, [{**LORA, "source": {"path": str(source)}}], app="myapp")
    data = yaml.safe_load(manifest.read_text())
    data["translations"] = ["tr"]
    write_yaml(manifest, data)
    before = snapshot(tmp_path)
    result = run_checked(manifest, "apply", "-y")
    assert result.returncode == 1 and "myapp_1_default.json" in result.stderr
    assert changed_outside(before, snapshot(tmp_path), MINE) == []
    assert not (tmp_path / "proj" / "lib" / "diffusion").exists()


def _imported(tmp_path: Path) -> tuple[Path, Path]:
    """A project with one imported model; returns (manifest, model folder)."""
    source = tmp_path / "l.safetensors"
    source.write_bytes(safetensors())
    manifest = project(tmp_path, [{**LORA, "source": {"path": str(source)}}])
    assert run_checked(manifest, "apply", "-y").returncode == 0
    return manifest, manifest.parent / "lib" / "diffusion" / "sdxl" / "l"


@pytest.mark.parametrize("bad", ["../../../../escaped.safetensors", "/tmp/escaped.safetensors"])
def test_metadata_file_paths_that_escape_are_never_followed(tmp_path: Path, bad: str) -> None:
    """Found here: a metadata.json listing ``../../../../x`` made ``apply`` "restore the name" by
    renaming the model's file to that path, outside the library."""
    manifest, model = _imported(tmp_path)
    meta_path = model / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["files"][0]["path"] = bad
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InvalidInputError):
        read_metadata(meta_path)
    before = snapshot(tmp_path)
    result = run_checked(manifest, "apply", "-y")
    assert "escaped" not in result.stdout.replace(str(meta_path), "")
    assert changed_outside(before, snapshot(tmp_path), MINE) == []
    assert not list(tmp_path.rglob("escaped.safetensors"))


def test_lock_file_paths_that_escape_are_refused(tmp_path: Path, hub: FakeHub) -> None:
    hub.add_repo("org/ok", {"model.safetensors": safetensors()})
    manifest = project(tmp_path, [{**LORA, "source": {"hf": "org/ok"}}])
    assert run_checked(manifest, "lock").returncode == 0
    lock = manifest.parent / "mlib.lock"
    data = json.loads(lock.read_text())
    (entry,) = data["models"].values()
    entry["files"][0]["path"] = "../../escaped.safetensors"
    lock.write_text(json.dumps(data))
    before = snapshot(tmp_path)
    assert "escaped.safetensors" in run_checked(manifest, "plan").stdout
    assert run_checked(manifest, "apply", "-y", "--locked").returncode != 0
    assert changed_outside(before, snapshot(tmp_path), ["proj/lib"]) == []
    assert not list(tmp_path.rglob("escaped.safetensors"))


# --- 2. symlinks in the library that point outside it -----------------------------------------


def test_prune_never_follows_symlinks_out_of_the_library(tmp_path: Path) -> None:
    manifest, model = _imported(tmp_path)
    outside = tmp_path / "outside"
    os.symlink(outside / "secret.txt", model / "to-file.txt")
    os.symlink(outside / "folder", model / "to-folder")
    os.symlink(outside, model.parent / "linked-model")  # a whole "model folder" that is a link
    # a family folder that is a link to a folder outside holding what looks like a model
    (outside / "fam" / "x").mkdir(parents=True)
    meta = json.loads((model / "metadata.json").read_text())
    meta["id"] = "diffusion/other/x"
    (outside / "fam" / "x" / "metadata.json").write_text(json.dumps(meta))
    (outside / "fam" / "x" / "l.safetensors").write_bytes((model / "l.safetensors").read_bytes())
    os.symlink(outside / "fam", model.parent.parent / "other")
    before = snapshot(outside)
    data = yaml.safe_load(manifest.read_text())
    data["models"] = []
    write_yaml(manifest, data)
    result = run_checked(manifest, "apply", "-y", "--prune")
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(outside) == before
    assert not model.exists()
    trash = manifest.parent / "lib" / ".mlib" / "trash"
    trashed = [p for p in trash.rglob("*") if p.is_symlink()]
    assert {p.name for p in trashed} >= {"to-file.txt", "to-folder"}
    assert all(os.readlink(p).startswith(str(outside)) for p in trashed)


def test_staging_leftovers_that_are_symlinks_are_not_followed(tmp_path: Path) -> None:
    manifest, _ = _imported(tmp_path)
    outside = tmp_path / "outside"
    staging = manifest.parent / "lib" / ".mlib" / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    os.symlink(outside / "folder", staging / "diffusion__sdxl__m")  # where M is staged
    os.symlink(outside / "secret.txt", staging / "left.part")
    source = tmp_path / "m.safetensors"
    source.write_bytes(safetensors(seed=5))
    data = yaml.safe_load(manifest.read_text())
    data["models"].append({**LORA, "name": "M", "source": {"path": str(source)}})
    write_yaml(manifest, data)
    before = snapshot(outside)
    run_checked(manifest, "apply", "-y")
    run_checked(manifest, "apply", "-y", "--prune")
    assert snapshot(outside) == before


@pytest.mark.parametrize("linked", [".mlib/staging", ".mlib", ".mlib/trash"])
def test_mlibs_own_folders_as_links_out_of_the_library_are_refused(
    tmp_path: Path, linked: str
) -> None:
    """Found here: with ``.mlib/staging`` a symlink to a folder outside, ``apply`` planned every
    entry there as a leftover to clear, and deleted them all."""
    manifest, model = _imported(tmp_path)
    lib = manifest.parent / "lib"
    outside = tmp_path / "outside"
    for name in ("staging", "trash", "partial"):  # what mlib would find there
        (outside / "folder" / name).mkdir()
        (outside / "folder" / name / "kept.bin").write_bytes(b"precious")
    if (lib / linked).exists():
        shutil.rmtree(lib / linked)
    os.symlink(outside / "folder", lib / linked)
    source = tmp_path / "m.safetensors"
    source.write_bytes(safetensors(seed=10))
    data = yaml.safe_load(manifest.read_text())
    data["models"] = [{**LORA, "name": "M", "source": {"path": str(source)}}]  # L is pruned
    write_yaml(manifest, data)
    before = snapshot(outside)
    result = run_checked(manifest, "apply", "-y", "--prune")
    assert result.returncode == 1
    assert "pointing out of the library" in result.stderr
    after = snapshot(outside)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing lost or changed
    # what may appear: the apply lock and the manifest cache, when .mlib itself is the link
    assert all(Path(k).parts[1] in ("lock", "cache") for k in after.keys() - before.keys())
    assert model.is_dir()  # not trashed through the link either


def test_a_model_folder_reached_through_a_symlink_is_trashed_as_the_link(tmp_path: Path) -> None:
    manifest, model = _imported(tmp_path)
    real = tmp_path / "outside" / "real-model"
    os.rename(model, real)
    os.symlink(real, model)
    before = snapshot(tmp_path / "outside")
    data = yaml.safe_load(manifest.read_text())
    data["models"] = []
    write_yaml(manifest, data)
    result = run_checked(manifest, "apply", "-y", "--prune")
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(tmp_path / "outside") == before
    assert os.readlink(model) == str(real)  # not a model folder of its own: left as it is


def test_a_stale_or_forged_link_registry_never_deletes_what_mlib_did_not_copy(
    tmp_path: Path,
) -> None:
    """Found here: a row of the link registry (models.db, in the library: copied from another
    machine, stale, or written by someone who can write the library) naming a file or folder
    anywhere, in copy mode, made apply delete it as "a copy mlib made". A copy is removed now
    only while it holds exactly the library's bytes."""
    import sqlite3

    manifest, _ = _imported(tmp_path)
    outside = tmp_path / "outside"
    rows = [
        ("comfy", str(outside / "secret.txt"), "diffusion/sdxl/l", "l.safetensors", "copy"),
        ("comfy", str(outside / "folder"), "diffusion/sdxl/l", "", "copy"),
    ]
    with sqlite3.connect(manifest.parent / "lib" / "models.db") as db:
        db.executemany("INSERT INTO links VALUES (?, ?, ?, ?, ?)", rows)
    db.close()
    before = snapshot(outside)
    result = run_checked(manifest, "apply", "-y")
    assert result.returncode == 1 and "refusing to remove" in result.stdout + result.stderr
    assert snapshot(outside) == before

    # a real copy, still holding the library's bytes, is removed when no longer wanted
    copied = project(tmp_path / "copied", [], link="copy")
    source = tmp_path / "c.safetensors"
    source.write_bytes(safetensors(seed=11))
    data = yaml.safe_load(copied.read_text())
    data["models"] = [{**LORA, "source": {"path": str(source)}}]
    write_yaml(copied, data)
    assert run_checked(copied, "apply", "-y").returncode == 0
    copy = copied.parent / "comfy" / "loras" / "c.safetensors"
    assert copy.is_file() and not copy.is_symlink()
    data["models"][0]["apps"] = {"comfy": False}
    write_yaml(copied, data)
    assert run_checked(copied, "apply", "-y").returncode == 0
    assert not copy.exists()


# --- 3. an app folder inside the library, or the library inside an app folder ------------------


@pytest.mark.parametrize(
    "layout", ["app-in-lib", "lib-in-app", "app-in-lib-via-link", "lib-in-app-via-link", "same"]
)
def test_nested_library_and_app_folders_are_refused(tmp_path: Path, layout: str) -> None:
    """Found here: through a symlink, an app folder inside the library (or the reverse) was
    accepted, and apply made the app's links inside the library."""
    source = tmp_path / "l.safetensors"
    source.write_bytes(safetensors())
    manifest = project(tmp_path, [{**LORA, "source": {"path": str(source)}}])
    proj = manifest.parent
    data = yaml.safe_load(manifest.read_text())
    app = data["apps"]["comfy"]
    if layout == "app-in-lib":
        app["models_dir"] = "lib/apps/comfy"
    elif layout == "lib-in-app":
        data["library"] = "comfy/lib"
    elif layout == "app-in-lib-via-link":
        (proj / "lib" / "other").mkdir(parents=True)
        os.symlink(proj / "lib" / "other", proj / "app-link")
        app["models_dir"] = "app-link"
    elif layout == "lib-in-app-via-link":
        (proj / "comfy" / "lib").mkdir()
        os.symlink(proj / "comfy" / "lib", proj / "lib-link")
        data["library"] = "lib-link"
    else:
        os.symlink(proj / "comfy", proj / "lib")
    write_yaml(manifest, data)
    before = snapshot(tmp_path)
    for command in (["plan"], ["apply", "-y"], ["status"]):
        result = run_checked(manifest, *command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "models_dir" in result.stderr
    # only mlib's own cache of the manifest, in the library's .mlib folder, may appear
    changed = changed_outside(before, snapshot(tmp_path), [])
    assert all(".mlib" in Path(p).parts for p in changed if not p.endswith("lib")), changed
    assert not list((tmp_path / "proj").rglob("l.safetensors"))


def test_a_library_that_is_a_dangling_symlink_gives_one_error(tmp_path: Path) -> None:
    """Found here: ``apply`` with the library a symlink to nowhere ended in a traceback."""
    source = tmp_path / "l.safetensors"
    source.write_bytes(safetensors())
    manifest = project(tmp_path, [{**LORA, "source": {"path": str(source)}}])
    os.symlink(tmp_path / "nowhere" / "lib", manifest.parent / "lib")
    result = run_checked(manifest, "apply", "-y")
    assert result.returncode == 1
    assert "cannot create the library folder" in result.stderr
    assert not (tmp_path / "nowhere").exists()


# --- 4. link loops -------------------------------------------------------------------------------


def test_a_folder_link_inside_the_folder_it_shows_is_never_made(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    os.symlink(folder / "sub", tmp_path / "via")
    for link in (folder / "sub" / "loop", tmp_path / "via" / "loop", folder / "loop"):
        with pytest.raises(LinkLoopError):
            fsops.make_link(folder, link, "symlink")
        assert not os.path.lexists(link)


def test_a_diffusers_folder_is_never_linked_into_itself(tmp_path: Path) -> None:
    """The app's diffusers folder is a symlink into the very model folder that gets linked there:
    the folder link would sit inside the folder it shows, so apply refuses that one link."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model_index.json").write_text("{}")
    (bundle / "unet.safetensors").write_bytes(safetensors())
    model = {**LORA, "name": "D", "kind": "diffusers", "source": {"path": str(bundle)}}
    manifest = project(tmp_path, [model])
    proj = manifest.parent
    folder = proj / "lib" / "diffusion" / "sdxl" / "d"
    os.symlink(folder, proj / "comfy" / "diffusers")
    result = run_checked(manifest, "apply", "-y")
    assert result.returncode != 0
    assert "loop" in result.stdout + result.stderr
    assert folder.is_dir() and not os.path.lexists(folder / "d")
    for path, _dirs, _files in os.walk(proj, followlinks=False):
        for name in _dirs + _files:
            full = Path(path) / name
            if full.is_symlink() and full.is_dir():
                shown, at = Path(os.path.realpath(full)), Path(os.path.realpath(full.parent))
                assert shown not in at.parents
                assert os.path.realpath(full) != os.path.realpath(full.parent)


# --- 5. tokens ---------------------------------------------------------------------------------


def _library_bytes(root: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    )


def test_the_hub_token_is_never_logged_written_or_shown(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("org/private", {"model.safetensors": safetensors()}, private=True)
    manifest = project(tmp_path, [{**LORA, "source": {"hf": "org/private"}}])
    monkeypatch.setenv("HF_TOKEN", hub.token)
    outputs = []
    for args in (["-vv", "lock"], ["-vv", "apply", "-y"], ["-vv", "plan", "--json"], ["status"]):
        result = run_checked(manifest, *args)
        assert result.returncode in (0, 2), result.stderr
        outputs.append(result.stdout + result.stderr)
    assert (manifest.parent / "lib" / "diffusion" / "sdxl" / "l" / "model.safetensors").is_file()
    everything = "".join(outputs)
    assert hub.token not in everything
    assert hub.token.encode() not in (manifest.parent / "mlib.lock").read_bytes()
    assert hub.token.encode() not in _library_bytes(manifest.parent / "lib")
    assert hub.token.encode() not in _library_bytes(manifest.parent / "comfy")

    wrong = "hf_wrong_secret_token_0123456789"
    monkeypatch.setenv("HF_TOKEN", wrong)
    (manifest.parent / "mlib.lock").unlink()
    hub.add_repo("org/gated", {"model.safetensors": safetensors(seed=2)}, gated=True)
    data = yaml.safe_load(manifest.read_text())
    data["models"] = [
        {**LORA, "source": {"hf": "org/private"}},
        {**LORA, "name": "G", "source": {"hf": "org/gated"}},
    ]
    write_yaml(manifest, data)
    result = run_checked(manifest, "-vv", "apply", "-y")
    shown = result.stdout + result.stderr
    assert result.returncode != 0
    assert "gated" in shown or "private" in shown
    assert wrong not in shown
    assert wrong.encode() not in _library_bytes(manifest.parent / "lib")


def test_a_url_token_is_never_logged_written_or_shown(
    tmp_path: Path, url_server: UrlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "mlib-url-secret-0123456789"
    data = safetensors()
    url = url_server.add("/m/l.safetensors", data, auth=f"Bearer {secret}")
    manifest = project(tmp_path, [{**LORA, "source": {"url": url}}])
    variable = "MLIB_TOKEN_127_0_0_1"
    monkeypatch.setenv(variable, secret)
    shown = ""
    saved = manifest.parent / "saved-plan.json"
    for args in (
        ["-vv", "lock"],
        ["-vv", "plan", "-o", str(saved)],
        ["-vv", "apply", "-y", str(saved)],
        ["-vv", "verify"],
    ):
        result = run_checked(manifest, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        shown += result.stdout + result.stderr
    assert secret not in shown and secret.encode() not in saved.read_bytes()
    assert secret.encode() not in (manifest.parent / "mlib.lock").read_bytes()
    assert secret.encode() not in _library_bytes(manifest.parent / "lib")
    assert [r.headers.get("authorization") for r in url_server.requests] == [
        f"Bearer {secret}"
    ] * len(url_server.requests)

    wrong = "mlib-wrong-secret-9876543210"
    monkeypatch.setenv(variable, wrong)
    url_server.add("/m/other.safetensors", data, auth=f"Bearer {secret}")
    data_yaml = yaml.safe_load(manifest.read_text())
    data_yaml["models"].append(
        {**LORA, "name": "O", "source": {"url": url_server.url("/m/other.safetensors")}}
    )
    write_yaml(manifest, data_yaml)
    for args in (["-vv", "plan"], ["-vv", "apply", "-y"]):
        result = run_checked(manifest, *args)
        shown = result.stdout + result.stderr
        assert "401" in shown and (variable in shown or args[1] == "apply")  # plan says the fix
        assert wrong not in shown and secret not in shown
    url_server.status(403, times=10)
    result = run_checked(manifest, "-vv", "lock")
    assert wrong not in result.stdout + result.stderr


# --- 6. permissions ----------------------------------------------------------------------------


def _mlib_with_umask(manifest: Path, umask: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = " ".join([f"umask {umask:03o};", "exec", str(MLIB), "-m", str(manifest), *args])
    return subprocess.run(
        ["sh", "-c", command],
        cwd=manifest.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_files_are_readable_by_others_under_umask_022(
    tmp_path: Path, hub: FakeHub, url_server: UrlServer
) -> None:
    local = tmp_path / "local.safetensors"
    local.write_bytes(safetensors())
    local.chmod(0o600)  # the user's own file may be private; the library's copy follows umask
    hub.add_repo("org/m", {"model.safetensors": safetensors(seed=3), "config.json": b"{}"})
    url = url_server.add("/u/u.safetensors", safetensors(seed=4))
    models = [
        {**LORA, "name": "Local", "source": {"path": str(local)}},
        {**LORA, "name": "Hub", "source": {"hf": "org/m"}},
        {**LORA, "name": "Url", "source": {"url": url}},
    ]
    manifest = project(tmp_path, models, link="copy")
    result = _mlib_with_umask(manifest, 0o022, "apply", "-y")
    assert result.returncode == 0, result.stdout + result.stderr
    proj = manifest.parent
    checked = []
    for root in (proj / "lib", proj / "comfy"):
        for path in [root, *root.rglob("*")]:
            if path.is_symlink() or path.name == "lock":
                continue
            mode = path.stat().st_mode
            if path.is_dir():
                assert mode & 0o005 == 0o005, (path, oct(mode))
            else:
                assert mode & 0o004, (path, oct(mode))  # others may read it
            assert not mode & 0o002, (path, oct(mode))  # nobody else may write it
            checked.append(path.name)
    for name in ("metadata.json", "overrides.json", "models.db", "local.safetensors"):
        assert name in checked
    assert "model.safetensors" in checked and "u.safetensors" in checked
    lock = proj / "mlib.lock"
    assert lock.stat().st_mode & 0o004 and not lock.stat().st_mode & 0o002


def test_temp_and_partial_files_are_never_world_writable(
    tmp_path: Path, url_server: UrlServer
) -> None:
    data = os.urandom(1 << 20)
    url = url_server.add("/p/big.safetensors", data)
    manifest = project(tmp_path, [{**LORA, "source": {"url": url}}])
    assert _mlib_with_umask(manifest, 0o000, "lock").returncode == 0
    url_server.cut_after(100_000)  # then every attempt to resume fails: a .part stays
    url_server.status(500, times=50)
    result = _mlib_with_umask(manifest, 0o000, "apply", "-y", "--locked")
    assert result.returncode != 0
    leftovers = [p for p in (manifest.parent / "lib").rglob("*") if p.is_file()]
    partial = [p for p in leftovers if ".mlib" in p.parts and p.name not in ("lock",)]
    assert partial, leftovers
    for path in [*partial, manifest.parent / "lib" / ".mlib" / "lock"]:
        if path.exists():
            assert not path.stat().st_mode & 0o002, (path, oct(path.stat().st_mode))


def test_tokens_stay_with_their_host_across_redirects(
    tmp_path: Path, hub: FakeHub, url_server: UrlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL token goes to its host only (not to another port it redirects to); the Hub token
    goes to the Hub only (not to the CDN its LFS files redirect to)."""
    secret = "mlib-url-secret-redirect-0123"
    monkeypatch.setenv("MLIB_TOKEN_127_0_0_1", secret)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    data = safetensors(seed=6)
    with UrlServer() as other:
        far = other.add("/far/l.safetensors", data)
        near = url_server.redirect("/near/l.safetensors", far)
        hub.add_repo("org/private", {"model.safetensors": safetensors(seed=7)}, private=True)
        models = [
            {**LORA, "name": "U", "source": {"url": near}},
            {**LORA, "name": "H", "source": {"hf": "org/private"}},
        ]
        manifest = project(tmp_path, models)
        result = run_checked(manifest, "apply", "-y")
        assert result.returncode == 0, result.stdout + result.stderr
        assert {r.headers.get("authorization") for r in url_server.requests} == {f"Bearer {secret}"}
        assert other.requests and all("authorization" not in r.headers for r in other.requests)
    assert any(r.headers.get("authorization") == f"Bearer {hub.token}" for r in hub.hub_requests)
    assert hub.cdn_requests and all("authorization" not in r.headers for r in hub.cdn_requests)


def test_adopt_never_follows_symlinks_out_of_the_app_folder(tmp_path: Path) -> None:
    """``mlib adopt`` moves an app's own files into the library; a symlink in the app folder to
    a file or folder elsewhere is left as the user's, and what it points to is never moved."""
    manifest = project(tmp_path, [])
    outside = tmp_path / "outside"
    loras = manifest.parent / "comfy" / "loras"
    loras.mkdir()
    (outside / "weights.safetensors").write_bytes(safetensors(seed=8))
    os.symlink(outside / "weights.safetensors", loras / "linked.safetensors")
    os.symlink(outside / "folder", loras / "linked-folder")
    (loras / "own.safetensors").write_bytes(safetensors(seed=9))
    before = snapshot(outside)
    result = run_checked(manifest, "adopt", str(manifest.parent / "comfy"), "--app", "comfy", "-y")
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_checked(manifest, "apply", "-y", "--prune").returncode == 0
    assert snapshot(outside) == before
    assert os.readlink(loras / "linked.safetensors") == str(outside / "weights.safetensors")
    assert os.readlink(loras / "linked-folder") == str(outside / "folder")
    assert [p.name for p in (manifest.parent / "lib").rglob("*.safetensors")] == ["own.safetensors"]


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x.bin"])
def test_a_redirect_to_another_scheme_is_never_followed(
    tmp_path: Path, url_server: UrlServer, location: str
) -> None:
    url = url_server.redirect("/r/l.safetensors", location)
    manifest = project(tmp_path, [{**LORA, "source": {"url": url}}])
    before = snapshot(tmp_path)
    shown = run_checked(manifest, "plan").stdout
    assert "diffusion/sdxl/l" in shown and "1 conflict" in shown
    assert run_checked(manifest, "apply", "-y").returncode != 0
    assert changed_outside(before, snapshot(tmp_path), MINE) == []
    assert not list((tmp_path / "proj").rglob("passwd"))
