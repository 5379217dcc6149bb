"""The plan kept in ``<library>/.mlib/cache/`` is replayed only when nothing it was made from changed.

Each case below changes one kind of fact the plan reads (a metadata file edited in place, a
link retargeted, a row of the index, a leftover in staging...) after a plan was kept, and checks
that the next plan is computed again and equals a plan made without the cache. A stamp that
missed a change would replay the old plan: these cases are the proof that each probe is there.

The cache keeps a plan only when every path it probes had settled ``SETTLED_NS`` before the plan
began; the tests shorten that to 50 ms and wait it out, instead of the 2 s a real run uses.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from scenario import make_example, read_yaml, write_yaml

from reconciler import api, stamps

SETTLE = 0.05


@pytest.fixture
def settle_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stamps, "SETTLED_NS", int(SETTLE * 1e9))


class Example:
    """The repository's example, applied, with the paths the cases change."""

    def __init__(self, folder: Path) -> None:
        self.manifest = make_example(folder)
        self.root = folder / "example"
        self.library = self.root / "shared-resources" / "models"
        self.models = self.root / "ComfyUI" / "models"
        self.checkpoint = self.library / "diffusion/sd15/tiny_sd_checkpoint"
        self.bundle = self.library / "diffusion/sd15/tiny_diffusers_pipeline"

    def settled_plan(self) -> api.PlanResult:
        """A plan made after everything settled: the cache keeps it."""
        time.sleep(SETTLE * 2)
        result = api.make_plan(self.manifest)
        assert not result.replayed
        return result

    def checkpoint_file(self) -> Path:
        (found,) = [p for p in self.checkpoint.iterdir() if p.suffix == ".safetensors"]
        return found

    def checkpoint_link(self) -> Path:
        (found,) = [p for p in (self.models / "checkpoints").iterdir() if p.is_symlink()]
        return found


@pytest.fixture
def example(tmp_path: Path, settle_fast: None) -> Example:
    ex = Example(tmp_path)
    api.apply(ex.manifest)
    return ex


def fresh(ex: Example) -> api.PlanResult:
    """A plan made without the cache."""
    return api._make_plan(ex.manifest, api.PlanOptions(), replay=False)


def test_a_plan_at_rest_is_replayed_and_is_the_plan(example: Example) -> None:
    first = example.settled_plan()
    assert not first.plan.actions and not first.plan.conflicts
    again = api.make_plan(example.manifest)
    assert again.replayed
    assert again.plan == first.plan == fresh(example).plan
    assert list(again.plan.noops) == list(first.plan.noops)  # read from the cache when asked
    assert again.fingerprint == first.fingerprint


def test_a_plan_with_actions_is_replayed_then_applied_exactly(example: Example) -> None:
    doc = read_yaml(example.manifest)
    doc["models"][0]["tags"] = ["example", "base", "new"]
    write_yaml(example.manifest, doc)
    first = example.settled_plan()
    assert first.plan.actions
    again = api.make_plan(example.manifest)
    assert again.replayed and again.plan == first.plan
    api.apply(example.manifest)
    after = api.make_plan(example.manifest)
    assert not after.replayed and not after.plan.actions


def test_nothing_is_kept_while_files_are_fresh(tmp_path: Path) -> None:
    ex = Example(tmp_path)
    api.apply(ex.manifest)  # the real 2 s margin: everything here changed just now
    api.make_plan(ex.manifest)
    assert not api.make_plan(ex.manifest).replayed
    assert not list((ex.library / ".mlib" / "cache").glob("plan-*"))


def _edit_in_place(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite a file's bytes in place (same inode), as an editor that does not rename does."""
    data = path.read_bytes()
    assert old in data
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(data.replace(old, new, 1))


def _retarget(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".tmp")
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def _untag(manifest: Path) -> None:
    doc = read_yaml(manifest)
    doc["models"][0]["tags"] = []
    write_yaml(manifest, doc)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(text)


def _replace_by_file(link: Path) -> None:
    link.unlink()
    link.write_bytes(b"x")


def _sql(ex: Example, statement: str) -> None:
    with sqlite3.connect(ex.library / "models.db") as conn:
        conn.execute(statement)
    conn.close()


CHANGES: dict[str, Callable[[Example], object]] = {
    "metadata edited in place": lambda ex: _edit_in_place(
        ex.checkpoint / "metadata.json", b"Tiny SD Checkpoint", b"Tiny SD Checkpoinz"
    ),
    "metadata removed": lambda ex: (ex.checkpoint / "metadata.json").unlink(),
    "overrides edited in place": lambda ex: _edit_in_place(
        ex.checkpoint / "overrides.json", b'"enabled": true', b'"enabled": false'
    ),
    "model file grown in place": lambda ex: ex.checkpoint_file().open("ab").write(b"\0"),
    "model file rewritten, same size": lambda ex: ex.checkpoint_file().write_bytes(
        bytes(ex.checkpoint_file().stat().st_size)
    ),
    "model file removed": lambda ex: ex.checkpoint_file().unlink(),
    "file added beside a model": lambda ex: (ex.checkpoint / "notes.txt").write_text("hi"),
    "file added in a bundle's subfolder": lambda ex: (
        next(p for p in ex.bundle.iterdir() if p.is_dir()) / "extra.bin"
    ).write_bytes(b"x"),
    "model folder copied in": lambda ex: shutil.copytree(
        ex.checkpoint, ex.checkpoint.with_name("Copy")
    ),
    "new type folder": lambda ex: _write(ex.library / "llm" / "x" / "y" / "metadata.json", "{"),
    "link removed": lambda ex: ex.checkpoint_link().unlink(),
    "link retargeted": lambda ex: _retarget(ex.checkpoint_link(), ex.checkpoint / "metadata.json"),
    "link replaced by a file": lambda ex: _replace_by_file(ex.checkpoint_link()),
    "foreign link into the library": lambda ex: os.symlink(
        ex.checkpoint_file(), ex.models / "loras" / "mine.safetensors"
    ),
    "app folder renamed away": lambda ex: ex.models.rename(ex.models.with_name("old")),
    "index row changed": lambda ex: _sql(ex, "UPDATE models SET metadata_json = '{}'"),
    "index removed": lambda ex: (ex.library / "models.db").unlink(),
    "link registry emptied": lambda ex: _sql(ex, "DELETE FROM links"),
    "leftover in staging": lambda ex: (ex.library / ".mlib" / "staging" / "x").mkdir(parents=True),
    "manifest edited": lambda ex: _untag(ex.manifest),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_is_seen(example: Example, change: str) -> None:
    kept = example.settled_plan()
    CHANGES[change](example)
    result = api.make_plan(example.manifest)
    assert not result.replayed, f"{change}: the old plan was replayed"
    assert result.plan == fresh(example).plan
    assert result.plan != kept.plan or change == "model file rewritten, same size"


def test_a_changed_link_count_is_seen(tmp_path: Path, settle_fast: None) -> None:
    """Hardlinked app files: another hard link to the library file changes what the plan sees."""
    ex = Example(tmp_path)
    doc = read_yaml(ex.manifest)
    doc["apps"]["comfy"]["link"] = "hardlink"
    write_yaml(ex.manifest, doc)
    api.apply(ex.manifest)
    ex.settled_plan()
    os.link(ex.checkpoint_file(), tmp_path / "elsewhere.safetensors")
    result = api.make_plan(ex.manifest)
    assert not result.replayed and result.plan == fresh(ex).plan


def test_a_user_translation_folder_is_probed(tmp_path: Path, settle_fast: None) -> None:
    ex = Example(tmp_path)
    folder = tmp_path / "mine"
    folder.mkdir()
    doc = read_yaml(ex.manifest)
    doc["translations"] = [str(folder)]
    write_yaml(ex.manifest, doc)
    api.apply(ex.manifest)
    ex.settled_plan()
    bundled = Path(api.__file__).parent / "translations" / "comfyui_0.2.7_default.json"
    text = bundled.read_text().replace('"checkpoints', '"my-checkpoints', 1)
    (folder / "comfy.json").write_text(text)
    result = api.make_plan(ex.manifest)
    assert not result.replayed and result.plan == fresh(ex).plan
    assert any("my-checkpoints" in a.path for a in result.plan.actions)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign class", "other key"])
def test_a_broken_plan_cache_is_ignored(example: Example, damage: str) -> None:
    example.settled_plan()
    (kept,) = (example.library / ".mlib" / "cache").glob("plan-*.pickle")
    header, payload = kept.read_bytes().split(b"\n", 1)
    fields = header.split(b" ")
    if damage == "garbage":
        kept.write_bytes(b"not a cache at all")
    elif damage == "truncated":
        kept.write_bytes(header + b"\n" + payload[: len(payload) // 2])
    elif damage == "foreign class":
        evil = pickle.dumps(os.getcwd)  # would call a function when loaded
        import hashlib

        fields[2] = hashlib.sha256(evil).hexdigest().encode()
        kept.write_bytes(b" ".join(fields) + b"\n" + evil)
    else:
        fields[1] = b"0" * len(fields[1])
        kept.write_bytes(b" ".join(fields) + b"\n" + payload)
    result = api.make_plan(example.manifest)
    assert not result.replayed and result.plan == fresh(example).plan


def test_each_manifest_and_prune_has_its_own_plan(example: Example) -> None:
    example.settled_plan()
    api.make_plan(example.manifest, prune=True)
    names = sorted(p.name for p in (example.library / ".mlib" / "cache").glob("plan-*"))
    assert len(names) == 2 and names[0].endswith("-prune.pickle"), names
    assert api.make_plan(example.manifest, prune=True).replayed


def test_probes_name_each_path_once_in_order(tmp_path: Path) -> None:
    paths = [str(tmp_path / f"f{i}") for i in range(stamps.CHUNK + 10)]
    probes = stamps.Probes.of(paths[::-1], paths[:3])
    lstat, stat = probes.paths()
    assert lstat == sorted(paths) and stat == sorted(paths[:3])
    assert len(probes.chunks) == 2
    assert stamps.Probes.of(paths, paths[:3]) == probes
