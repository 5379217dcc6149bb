"""plan -> apply -> plan on real trees under tmp_path: links, conflicts, stale plans, idempotence."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import api
from reconciler.actions import ActionKind
from reconciler.errors import StalePlanError

REPO = Path(__file__).resolve().parent.parent


def make_tree(tmp: Path, models: str, app: str = "") -> Path:
    """A manifest at tmp/mlib.yaml with a library at tmp/lib and ComfyUI at tmp/comfy."""
    app = app or '  comfy: {app: comfyui, version: "0.3.62", models_dir: comfy}\n'
    text = f"version: 1\nlibrary: lib\napps:\n{app}models:\n{models}"
    (tmp / "mlib.yaml").write_text(text)
    (tmp / "comfy").mkdir(exist_ok=True)
    return tmp / "mlib.yaml"


def source(tmp: Path, name: str, size: int = 1000, seed: int = 0) -> Path:
    path = tmp / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hashlib.sha256(f"{name}{seed}".encode()).digest() * (size // 32 + 1))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


LORA = "  - {name: My LoRA, type: diffusion, family: sdxl, kind: lora, source: {path: src/my lora.safetensors}}\n"


def test_apply_imports_links_and_converges(tmp_path: Path) -> None:
    src = source(tmp_path, "my lora.safetensors", 5000)
    manifest = make_tree(tmp_path, LORA)
    result = api.apply(manifest)
    assert result.report.ok, result.report.failed
    folder = tmp_path / "lib" / "diffusion" / "sdxl" / "my_lora"
    stored = folder / "my_lora.safetensors"
    assert stored.read_bytes() == src.read_bytes()
    assert src.exists(), "copy mode keeps the source"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["official_name"] == "My LoRA" and meta["cleaned_name"] == "my_lora"
    assert meta["files"] == [
        {
            "path": "my_lora.safetensors",
            "size": 5024,
            "sha256": sha(src),
            "blake3": meta["hashes"]["blake3"],
        }
    ]
    link = tmp_path / "comfy" / "loras" / "my_lora.safetensors"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link)), "a relative symlink"
    assert link.resolve() == stored.resolve()
    again = api.make_plan(manifest)
    assert again.plan.actions == (), [a.reason for a in again.plan.actions]
    assert not again.plan.drift and not again.plan.conflicts
    rows = api.query(tmp_path / "lib", api.Query(kind="lora"))
    assert [r.id for r in rows] == ["diffusion/sdxl/my_lora"]


def test_a_real_file_at_the_link_path_survives_untouched(tmp_path: Path) -> None:
    source(tmp_path, "my lora.safetensors")
    manifest = make_tree(tmp_path, LORA)
    mine = tmp_path / "comfy" / "loras" / "my_lora.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    before = mine.stat()
    result = api.apply(manifest)
    assert [c.kind.value for c in result.plan.conflicts] == ["file_in_the_way"]
    assert mine.read_bytes() == b"the user's own file"
    assert (mine.stat().st_ino, mine.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not any(a.path == str(mine) for a in result.plan.actions)
    # the model itself was still imported; only the link waits for the user
    assert (tmp_path / "lib" / "diffusion" / "sdxl" / "my_lora" / "metadata.json").exists()


def test_a_stale_saved_plan_is_refused(tmp_path: Path) -> None:
    source(tmp_path, "my lora.safetensors")
    manifest = make_tree(tmp_path, LORA)
    saved = tmp_path / "plan.json"
    api.save_plan(api.make_plan(manifest), saved, prune=False)
    source(tmp_path, "other.safetensors")
    with (tmp_path / "mlib.yaml").open("a") as fh:
        fh.write(LORA.replace("My LoRA", "Other").replace("my lora", "other"))
    with pytest.raises(StalePlanError) as info:
        api.apply(manifest, saved=saved)
    message = str(info.value)
    assert (
        "the plan is stale" in message and "now also needed: import diffusion/sdxl/other" in message
    )
    assert not (tmp_path / "lib" / "diffusion").exists(), "nothing was applied"


def test_a_fresh_saved_plan_is_applied(tmp_path: Path) -> None:
    source(tmp_path, "my lora.safetensors")
    manifest = make_tree(tmp_path, LORA)
    saved = tmp_path / "plan.json"
    planned = api.make_plan(manifest)
    api.save_plan(planned, saved, prune=False)
    result = api.apply(manifest, saved=saved)
    assert [a.kind for a in result.plan.actions] == [a.kind for a in planned.plan.actions]
    assert result.report.ok


def test_move_mode_removes_the_source_only_after_import(tmp_path: Path) -> None:
    src = source(tmp_path, "my lora.safetensors", 3000)
    data = src.read_bytes()
    manifest = make_tree(tmp_path, LORA.replace("}}\n", ", mode: move}}\n"))
    assert api.apply(manifest).report.ok
    assert not src.exists()
    stored = tmp_path / "lib" / "diffusion" / "sdxl" / "my_lora" / "my_lora.safetensors"
    assert stored.read_bytes() == data
    assert api.make_plan(manifest).plan.actions == (), "a moved source is not missed"


def test_rename_in_the_manifest_moves_the_folder_and_relinks(tmp_path: Path) -> None:
    source(tmp_path, "my lora.safetensors")
    manifest = make_tree(tmp_path, LORA)
    assert api.apply(manifest).report.ok
    old = tmp_path / "lib" / "diffusion" / "sdxl" / "my_lora"
    inode = (old / "my_lora.safetensors").stat().st_ino
    manifest.write_text(manifest.read_text().replace("My LoRA", "Better LoRA"))
    result = api.apply(manifest)
    assert result.report.ok
    kinds = [a.kind for a in result.plan.actions]
    assert ActionKind.IMPORT not in kinds and ActionKind.RENAME in kinds
    new = tmp_path / "lib" / "diffusion" / "sdxl" / "better_lora"
    assert not old.exists() and (new / "my_lora.safetensors").stat().st_ino == inode
    link = tmp_path / "comfy" / "loras" / "my_lora.safetensors"
    assert link.resolve() == (new / "my_lora.safetensors").resolve()
    assert api.make_plan(manifest).plan.actions == ()


def test_disabling_an_app_unlinks_and_prune_trashes(tmp_path: Path) -> None:
    source(tmp_path, "my lora.safetensors")
    manifest = make_tree(tmp_path, LORA)
    assert api.apply(manifest).report.ok
    link = tmp_path / "comfy" / "loras" / "my_lora.safetensors"
    manifest.write_text(manifest.read_text().replace("}}\n", "}, apps: {comfy: false}}\n"))
    assert api.apply(manifest).report.ok
    assert not os.path.lexists(link)
    manifest.write_text(manifest.read_text().split("models:\n")[0] + "models: []\n")
    kept = api.apply(manifest)
    assert kept.report.ok and (tmp_path / "lib" / "diffusion" / "sdxl" / "my_lora").exists()
    pruned = api.apply(manifest, prune=True)
    assert pruned.report.ok
    assert not (tmp_path / "lib" / "diffusion" / "sdxl" / "my_lora").exists()
    (trashed,) = (tmp_path / "lib" / ".mlib" / "trash").iterdir()
    assert (trashed / "my_lora.safetensors").exists(), "pruned models are moved, never deleted"


def test_hand_edited_metadata_is_drift_not_a_crash(tmp_path: Path) -> None:
    source(tmp_path, "my lora.safetensors")
    manifest = make_tree(tmp_path, LORA)
    assert api.apply(manifest).report.ok
    meta = tmp_path / "lib" / "diffusion" / "sdxl" / "my_lora" / "metadata.json"
    meta.write_text("{ not json")
    result = api.make_plan(manifest)
    (conflict,) = result.plan.conflicts
    assert "metadata.json is not valid JSON" in conflict.message
    assert meta.read_text() == "{ not json"


def test_verify_names_a_corrupted_file(tmp_path: Path) -> None:
    source(tmp_path, "my lora.safetensors")
    manifest = make_tree(tmp_path, LORA)
    assert api.apply(manifest).report.ok
    assert api.verify(tmp_path / "lib").mismatches == ()
    stored = tmp_path / "lib" / "diffusion" / "sdxl" / "my_lora" / "my_lora.safetensors"
    data = bytearray(stored.read_bytes())
    data[10] ^= 0xFF
    stored.write_bytes(bytes(data))
    (mismatch,) = api.verify(tmp_path / "lib").mismatches
    assert mismatch.path == str(stored) and "content (sha256) differs" in mismatch.message


def test_user_renamed_file_is_repaired(tmp_path: Path) -> None:
    source(tmp_path, "my lora.safetensors")
    manifest = make_tree(tmp_path, LORA)
    assert api.apply(manifest).report.ok
    folder = tmp_path / "lib" / "diffusion" / "sdxl" / "my_lora"
    (folder / "my_lora.safetensors").rename(folder / "renamed by hand.safetensors")
    result = api.apply(manifest)
    assert result.report.ok
    assert (folder / "my_lora.safetensors").exists()
    assert api.make_plan(manifest).plan.actions == ()


def test_missing_app_folder_is_created_and_said(tmp_path: Path) -> None:
    source(tmp_path, "my lora.safetensors")
    manifest = make_tree(tmp_path, LORA)
    (tmp_path / "comfy").rmdir()
    planned = api.make_plan(manifest)
    assert any(
        a.kind is ActionKind.MKDIR and "does not exist yet" in a.reason
        for a in planned.plan.actions
    )
    assert api.apply(manifest).report.ok
    assert (tmp_path / "comfy" / "loras" / "my_lora.safetensors").is_symlink()


@pytest.mark.parametrize("mode", ["hardlink", "copy"])
def test_link_modes(tmp_path: Path, mode: str) -> None:
    source(tmp_path, "my lora.safetensors")
    app = f'  comfy: {{app: comfyui, version: "0.3.62", models_dir: comfy, link: {mode}}}\n'
    manifest = make_tree(tmp_path, LORA, app)
    assert api.apply(manifest).report.ok
    link = tmp_path / "comfy" / "loras" / "my_lora.safetensors"
    stored = tmp_path / "lib" / "diffusion" / "sdxl" / "my_lora" / "my_lora.safetensors"
    assert not link.is_symlink() and link.read_bytes() == stored.read_bytes()
    assert (link.stat().st_ino == stored.stat().st_ino) is (mode == "hardlink")
    assert api.make_plan(manifest).plan.actions == ()
    manifest.write_text(manifest.read_text().replace("}}\n", "}, apps: {comfy: false}}\n"))
    assert api.apply(manifest).report.ok
    assert not link.exists() and stored.exists()


# --- idempotence over generated manifests ----------------------------------------------------------

_KINDS = st.sampled_from(["lora", "checkpoint", "vae", "text_encoder", "controlnet", "upscaler"])
_NAMES = st.text(st.sampled_from("abcXYZ019 ._-()"), min_size=1, max_size=12).filter(
    lambda s: any(c.isalnum() for c in s)
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    models=st.lists(st.tuples(_NAMES, _KINDS, st.booleans(), st.integers(0, 3000)), max_size=5),
    version=st.sampled_from(["0.2.6", "0.3.62"]),
)
def test_apply_then_plan_is_empty(
    tmp_path_factory: pytest.TempPathFactory,
    models: list[tuple[str, str, bool, int]],
    version: str,
) -> None:
    tmp = tmp_path_factory.mktemp("idem")
    lines = []
    seen: set[str] = set()
    for i, (name, kind, enabled, size) in enumerate(models):
        file = f"f{i} {name}.safetensors"
        source(tmp, file, size, seed=i)
        lines.append(
            f"  - {{name: {json.dumps(name + str(i))}, type: diffusion, family: f{i % 2}, kind: {kind},"
            f" source: {{path: {json.dumps('src/' + file)}}}, apps: {{comfy: {str(enabled).lower()}}}}}\n"
        )
        seen.add(name)
    app = f'  comfy: {{app: comfyui, version: "{version}", models_dir: comfy}}\n'
    manifest = make_tree(tmp, "".join(lines) or "  []\n", app)
    first = api.apply(manifest)
    assert first.report.ok, first.report.failed
    second = api.make_plan(manifest)
    assert second.plan.actions == (), [(a.kind.value, a.reason) for a in second.plan.actions]
    assert not second.plan.drift


# --- layering ------------------------------------------------------------------------------------

#: The package's modules and their layers (README "Layout"): L0 values, L1 pure logic, L2 reads,
#: L3 effects, L4 api/cli. A module imports from its own layer or a lower one only, whether at the
#: top of the file or inside a function.
LAYERS = {"__init__": 0, "errors": 0, "model": 0, "document": 0, "facts": 0, "actions": 0,
          "naming": 1, "versions": 1, "manifest": 1, "metadata": 1, "translations": 1, "planner": 1,
          "loaders": 2, "index": 2, "library": 2, "observe": 2, "hashing": 2, "durable": 2,
          "doctor": 2, "translation_files": 2, "forked": 2, "stamps": 2, "lockfile": 2, "probe": 2,
          "resolve": 2, "adoption": 2,
          "sources": 2, "sources.hf": 2, "sources.url": 2, "sources.http": 2,
          "fsops": 3, "lock": 3, "executor": 3, "cache": 3, "manifest_edit": 3,
          "api": 4, "replay": 4, "render": 4, "cli": 4, "server": 4}  # fmt: skip
#: Modules of layers L0/L1: values and pure logic.
PURE = tuple(module for module, layer in LAYERS.items() if layer <= 1)
#: Standard modules that reach the outside world (clock, randomness, processes, databases, package
#: files).
EFFECTS = {"shutil", "subprocess", "sqlite3", "socket", "time", "random", "datetime", "tempfile",
           "huggingface_hub", "urllib", "http", "importlib"}  # fmt: skip


def _imports(text: str) -> set[str]:
    """Every module a source imports, anywhere in it (inside functions too), as a dotted name.

    ``from reconciler import x`` and ``from . import x`` import ``reconciler.x``; ``import
    reconciler`` imports the package itself.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = "reconciler" + (f".{module}" if module else "")
            if module == "reconciler":
                names |= {f"reconciler.{a.name}" for a in node.names}
            else:
                names.add(module)
    return names


def _internal(text: str) -> set[str]:
    """The package's modules a source imports, by name (``__init__`` for the package itself)."""
    names = _imports(text)
    return {n.split(".")[1] for n in names if n.startswith("reconciler.")} | (
        {"__init__"} if "reconciler" in names else set()
    )


def _source(module: str) -> str:
    path = REPO / "reconciler" / module.replace(".", "/")
    module_file = path.with_suffix(".py")
    return (module_file if module_file.exists() else path / "__init__.py").read_text()


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_a_module_imports_only_from_its_own_layer_or_lower(module: str) -> None:
    layer = LAYERS[module]
    higher = {name for name in _internal(_source(module)) if LAYERS[name] > layer}
    assert not higher, f"{module} (L{layer}) imports {sorted(higher)} from a higher layer"


def _modules() -> set[str]:
    """Every module of the package by dotted name below ``reconciler`` (a subpackage by its
    name, for its ``__init__``)."""
    package = REPO / "reconciler"
    names = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        names.add(
            ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)
        )
    return names


def test_only_sources_hf_imports_huggingface_hub() -> None:
    importers = {
        m for m in _modules() if any(i.startswith("huggingface_hub") for i in _imports(_source(m)))
    }
    assert importers == {"sources.hf"}


def test_every_module_has_a_layer() -> None:
    assert _modules() == set(LAYERS)


def test_the_layer_check_sees_every_import_form() -> None:
    text = (
        "import reconciler\n"
        "from reconciler import index, lock\n"
        "from . import fsops\n"
        "from .api import make_plan\n"
        "def f() -> None:\n"
        "    from reconciler.loaders import read_text\n"
        "    import reconciler.cli\n"
    )
    assert _internal(text) == {"__init__", "index", "lock", "fsops", "api", "loaders", "cli"}


@pytest.mark.parametrize("module", PURE)
def test_the_planner_side_does_no_io(module: str) -> None:
    imported = _imports(_source(module))
    assert not {i for i in imported if i.split(".")[0] in EFFECTS}, imported


def test_only_index_imports_sqlite3_and_only_cli_prints() -> None:
    for path in (REPO / "reconciler").glob("*.py"):
        text = path.read_text()
        if path.stem != "index":
            assert "import sqlite3" not in text, path
        if path.stem != "cli":
            assert not re.search(r"(?<![\w.])print\(", text), path
            assert "click.echo" not in text, path
