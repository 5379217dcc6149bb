"""make_link, replace_link, remove_link, move_to_trash on real files under tmp_path."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler import fsops
from reconciler.errors import LinkLoopError, ReconcilerError
from reconciler.fsops import (
    make_link,
    move_to_trash,
    readlink_target,
    remove_link,
    replace_link,
    same_filesystem,
)


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    """A library with one single-file model and one folder model."""
    root = tmp_path / "lib"
    (root / "diffusion/sdxl/base").mkdir(parents=True)
    (root / "diffusion/sdxl/base/base.safetensors").write_bytes(b"weights")
    bundle = root / "diffusion/sdxl/bundle"
    (bundle / "unet").mkdir(parents=True)
    (bundle / "model_index.json").write_text("{}")
    (bundle / "unet/weights.bin").write_bytes(b"unet")
    return root


@pytest.fixture
def model_file(lib: Path) -> Path:
    return lib / "diffusion/sdxl/base/base.safetensors"


@pytest.fixture
def model_dir(lib: Path) -> Path:
    return lib / "diffusion/sdxl/bundle"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    models = tmp_path / "ComfyUI/models"
    models.mkdir(parents=True)
    return models


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on another filesystem than tmp_path (tmpfs at /dev/shm), or skip."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or same_filesystem(shm, tmp_path):
        pytest.skip("no second writable filesystem here")
    folder = Path(tempfile.mkdtemp(prefix="mlib-test-", dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _no_symlinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem without symlinks, as FAT or a Windows account without the privilege."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)


def _no_hardlinks(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)


def _umasked(mode: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


# --- make_link --------------------------------------------------------------------------------


def test_symlink_is_relative_on_one_filesystem_and_resolves_to_the_target(
    model_file: Path, app: Path
) -> None:
    link = app / "checkpoints/base.safetensors"
    assert make_link(model_file, link, "symlink") == "symlink"

    text = os.readlink(link)
    assert not os.path.isabs(text)
    assert text.startswith("..")
    assert os.path.samefile(link, model_file)
    assert readlink_target(link) == model_file
    assert link.read_bytes() == b"weights"


def test_symlink_is_absolute_across_filesystems(model_file: Path, other_fs: Path) -> None:
    link = other_fs / "checkpoints/base.safetensors"
    assert make_link(model_file, link, "symlink") == "symlink"
    assert os.readlink(link) == str(model_file)
    assert link.read_bytes() == b"weights"


def test_symlink_under_a_symlinked_app_folder_still_resolves(
    tmp_path: Path, model_file: Path
) -> None:
    # ComfyUI/models is itself a link to a folder elsewhere: a relative text computed from the
    # spelled path would miss; the link must still reach the target.
    real = tmp_path / "mnt/disk2/models"  # deeper than the spelled path
    real.mkdir(parents=True)
    spelled = tmp_path / "Comfy/models"
    spelled.parent.mkdir()
    spelled.symlink_to(real, target_is_directory=True)
    link = spelled / "checkpoints/base.safetensors"

    make_link(model_file, link, "symlink")
    assert os.path.samefile(link, model_file)
    assert readlink_target(link) == model_file  # as observe reads it, too


def test_hardlink_shares_the_inode(model_file: Path, app: Path) -> None:
    link = app / "checkpoints/base.safetensors"
    assert make_link(model_file, link, "hardlink") == "hardlink"
    assert not link.is_symlink()
    assert link.stat().st_ino == model_file.stat().st_ino


def test_hardlink_across_filesystems_fails(model_file: Path, other_fs: Path) -> None:
    with pytest.raises(OSError) as info:
        make_link(model_file, other_fs / "x.safetensors", "hardlink")
    assert info.value.errno == errno.EXDEV


def test_a_folder_cannot_be_hardlinked(model_dir: Path, app: Path) -> None:
    with pytest.raises(IsADirectoryError):
        make_link(model_dir, app / "diffusers/bundle", "hardlink")
    assert not os.path.lexists(app / "diffusers/bundle")


def test_copy_is_independent_of_the_target(model_file: Path, app: Path) -> None:
    os.chmod(model_file, 0o600)
    link = app / "checkpoints/base.safetensors"
    assert make_link(model_file, link, "copy") == "copy"

    model_file.write_bytes(b"changed")
    assert link.read_bytes() == b"weights"
    assert not link.is_symlink()
    assert link.stat().st_ino != model_file.stat().st_ino
    assert stat.S_IMODE(link.stat().st_mode) == _umasked(0o644)
    assert [p.name for p in link.parent.iterdir()] == ["base.safetensors"]  # no temp left


def test_folder_links(model_dir: Path, app: Path) -> None:
    sym = app / "diffusers/bundle"
    assert make_link(model_dir, sym, "symlink") == "symlink"
    assert sym.is_symlink()
    assert (sym / "unet/weights.bin").read_bytes() == b"unet"

    copy = app / "diffusers/bundle-copy"
    assert make_link(model_dir, copy, "copy") == "copy"
    assert copy.is_dir() and not copy.is_symlink()
    assert (copy / "unet/weights.bin").read_bytes() == b"unet"
    (model_dir / "unet/weights.bin").write_bytes(b"changed")
    assert (copy / "unet/weights.bin").read_bytes() == b"unet"
    assert sorted(p.name for p in copy.parent.iterdir()) == ["bundle", "bundle-copy"]


def test_auto_picks_a_symlink_where_it_can(model_file: Path, model_dir: Path, app: Path) -> None:
    assert make_link(model_file, app / "checkpoints/a.safetensors", "auto") == "symlink"
    assert make_link(model_dir, app / "diffusers/bundle", "auto") == "symlink"
    assert (app / "checkpoints/a.safetensors").is_symlink()


def test_auto_falls_back_to_a_hardlink_without_symlinks(
    model_file: Path, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_symlinks(monkeypatch)
    link = app / "checkpoints/base.safetensors"
    assert make_link(model_file, link, "auto") == "hardlink"
    assert not link.is_symlink()
    assert link.stat().st_ino == model_file.stat().st_ino


def test_auto_falls_back_to_a_copy_without_symlinks_or_hardlinks(
    model_file: Path, model_dir: Path, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_symlinks(monkeypatch)
    _no_hardlinks(monkeypatch)
    link = app / "checkpoints/base.safetensors"
    assert make_link(model_file, link, "auto") == "copy"
    assert link.read_bytes() == b"weights"
    assert link.stat().st_ino != model_file.stat().st_ino


def test_auto_copies_a_folder_without_symlinks(
    model_dir: Path, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_symlinks(monkeypatch)
    link = app / "diffusers/bundle"
    assert make_link(model_dir, link, "auto") == "copy"
    assert (link / "model_index.json").read_text() == "{}"


def test_auto_does_not_hide_other_errors(
    model_file: Path, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "symlink", no_space)
    with pytest.raises(OSError) as info:
        make_link(model_file, app / "x.safetensors", "auto")
    assert info.value.errno == errno.ENOSPC
    assert not os.path.lexists(app / "x.safetensors")


@pytest.mark.parametrize("mode", ["auto", "symlink", "hardlink", "copy"])
@pytest.mark.parametrize("already", ["file", "folder", "symlink", "dangling symlink"])
def test_never_replaces_what_is_there(
    model_file: Path, app: Path, tmp_path: Path, mode: str, already: str
) -> None:
    link = app / "checkpoints/base.safetensors"
    link.parent.mkdir()
    if already == "file":
        link.write_bytes(b"user's own")
    elif already == "folder":
        link.mkdir()
        (link / "inside").write_text("keep")
    elif already == "symlink":
        link.symlink_to(tmp_path)
    else:
        link.symlink_to(tmp_path / "nowhere")
    before = os.lstat(link)

    with pytest.raises(FileExistsError):
        make_link(model_file, link, mode)

    after = os.lstat(link)
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_mode,
    )
    if already == "file":
        assert link.read_bytes() == b"user's own"
    assert [p.name for p in link.parent.iterdir()] == ["base.safetensors"]


def test_a_missing_target_is_an_error(app: Path, lib: Path) -> None:
    with pytest.raises(FileNotFoundError):
        make_link(lib / "missing.safetensors", app / "x", "auto")
    assert not os.path.lexists(app / "x")


def test_an_unknown_mode_is_an_error(model_file: Path, app: Path) -> None:
    with pytest.raises(ValueError):
        make_link(model_file, app / "x", "junction")


# --- loops ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "symlink", "copy"])
@pytest.mark.parametrize("where", ["unet/loop", "loop", "unet/deeper/still/loop"])
def test_a_folder_link_inside_its_own_target_is_refused(
    model_dir: Path, mode: str, where: str
) -> None:
    link = model_dir / where
    with pytest.raises(LinkLoopError, match="loop"):
        make_link(model_dir, link, mode)
    assert not os.path.lexists(link)
    assert not (model_dir / "unet/deeper").exists()  # not even its parent folders


def test_a_link_whose_target_is_an_ancestor_is_refused(lib: Path, app: Path) -> None:
    # the app folder lives inside the folder being linked
    inner_app = lib / "diffusion/apps/comfy/models"
    with pytest.raises(LinkLoopError):
        make_link(lib / "diffusion", inner_app / "diffusers/everything", "symlink")
    with pytest.raises(LinkLoopError):
        make_link(lib, lib / "self", "symlink")


def test_a_loop_through_a_symlinked_parent_is_refused(model_dir: Path, tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky"
    sneaky.symlink_to(model_dir / "unet", target_is_directory=True)
    with pytest.raises(LinkLoopError):
        make_link(model_dir, sneaky / "loop", "symlink")


def test_a_folder_beside_its_target_is_fine(model_dir: Path) -> None:
    link = model_dir.parent / "bundle-alias"
    assert make_link(model_dir, link, "symlink") == "symlink"


# --- replace_link -----------------------------------------------------------------------------


def test_replace_link_swaps_a_symlink_pointing_where_expected(
    lib: Path, model_file: Path, app: Path
) -> None:
    old = model_file
    new = lib / "diffusion/sdxl/base/new.safetensors"
    new.write_bytes(b"new weights")
    link = app / "checkpoints/base.safetensors"
    make_link(old, link, "symlink")

    assert replace_link(new, link, "auto", old) == "symlink"
    assert link.read_bytes() == b"new weights"
    assert not os.path.isabs(os.readlink(link))
    assert [p.name for p in link.parent.iterdir()] == ["base.safetensors"]


def test_replace_link_refuses_a_symlink_pointing_elsewhere(
    lib: Path, model_file: Path, app: Path, tmp_path: Path
) -> None:
    link = app / "checkpoints/base.safetensors"
    link.parent.mkdir()
    foreign = tmp_path / "user.safetensors"
    foreign.write_bytes(b"user")
    link.symlink_to(foreign)

    with pytest.raises(ReconcilerError, match="points to"):
        replace_link(model_file, link, "symlink", lib / "diffusion/sdxl/base/old.safetensors")
    assert os.readlink(link) == str(foreign)


def test_replace_link_refuses_anything_but_a_symlink(model_file: Path, app: Path) -> None:
    link = app / "base.safetensors"
    link.write_bytes(b"user's own")
    with pytest.raises(ReconcilerError, match="not a symlink"):
        replace_link(model_file, link, "symlink", None)
    assert link.read_bytes() == b"user's own"


def test_replace_link_without_an_expectation_swaps_any_symlink(
    model_file: Path, app: Path, tmp_path: Path
) -> None:
    link = app / "base.safetensors"
    link.symlink_to(tmp_path / "gone")
    assert replace_link(model_file, link, "hardlink", None) == "hardlink"
    assert link.stat().st_ino == model_file.stat().st_ino


def test_replace_link_with_a_folder_copy(model_dir: Path, app: Path, tmp_path: Path) -> None:
    link = app / "bundle"
    link.symlink_to(tmp_path / "old", target_is_directory=True)
    assert replace_link(model_dir, link, "copy", tmp_path / "old") == "copy"
    assert (link / "unet/weights.bin").read_bytes() == b"unet"
    assert [p.name for p in app.iterdir()] == ["bundle"]


def test_replace_link_refuses_a_loop(model_dir: Path, tmp_path: Path) -> None:
    link = model_dir / "unet/loop"
    link.symlink_to(tmp_path)
    with pytest.raises(LinkLoopError):
        replace_link(model_dir, link, "symlink", tmp_path)
    assert os.readlink(link) == str(tmp_path)


# --- remove_link ------------------------------------------------------------------------------


def test_remove_link_removes_its_symlink(model_file: Path, app: Path) -> None:
    link = app / "base.safetensors"
    make_link(model_file, link, "symlink")
    remove_link(link, model_file, "symlink")
    assert not os.path.lexists(link)
    assert model_file.read_bytes() == b"weights"


def test_remove_link_refuses_a_symlink_pointing_elsewhere(
    model_file: Path, app: Path, tmp_path: Path
) -> None:
    link = app / "base.safetensors"
    link.symlink_to(tmp_path / "user.safetensors")
    with pytest.raises(ReconcilerError, match="refusing to remove"):
        remove_link(link, model_file, "symlink")
    assert link.is_symlink()


def test_remove_link_refuses_a_symlink_where_it_made_a_copy(model_file: Path, app: Path) -> None:
    link = app / "base.safetensors"
    make_link(model_file, link, "symlink")
    with pytest.raises(ReconcilerError):
        remove_link(link, model_file, "copy")
    assert link.is_symlink()


def test_remove_link_removes_its_hardlink(model_file: Path, app: Path) -> None:
    link = app / "base.safetensors"
    make_link(model_file, link, "hardlink")
    remove_link(link, model_file, "hardlink")
    assert not link.exists()
    assert model_file.read_bytes() == b"weights"


@pytest.mark.parametrize("mode", ["hardlink", "auto", "symlink"])
def test_remove_link_refuses_a_regular_file_that_is_not_the_hardlink(
    model_file: Path, app: Path, mode: str
) -> None:
    link = app / "base.safetensors"
    link.write_bytes(b"weights")  # same bytes, but the user's own file
    with pytest.raises(ReconcilerError, match="not a hardlink"):
        remove_link(link, model_file, mode)
    assert link.read_bytes() == b"weights"


def test_remove_link_refuses_a_hardlink_without_a_target_to_compare(
    model_file: Path, app: Path
) -> None:
    link = app / "base.safetensors"
    make_link(model_file, link, "hardlink")
    with pytest.raises(ReconcilerError):
        remove_link(link, None, "hardlink")
    assert link.exists()


def test_remove_link_never_removes_the_target_itself(model_file: Path, model_dir: Path) -> None:
    for mode in ("hardlink", "auto", "copy"):
        with pytest.raises(ReconcilerError, match="target itself"):
            remove_link(model_file, model_file, mode)
    with pytest.raises(ReconcilerError, match="target itself"):
        remove_link(model_dir, model_dir, "copy")
    assert model_file.read_bytes() == b"weights"
    assert model_dir.is_dir()


def test_remove_link_removes_copies_only_in_copy_mode(
    model_file: Path, model_dir: Path, app: Path
) -> None:
    file_copy = app / "base.safetensors"
    folder_copy = app / "bundle"
    make_link(model_file, file_copy, "copy")
    make_link(model_dir, folder_copy, "copy")

    with pytest.raises(ReconcilerError, match="folder"):
        remove_link(folder_copy, model_dir, "symlink")
    assert folder_copy.is_dir()

    remove_link(file_copy, model_file, "copy")
    remove_link(folder_copy, model_dir, "copy")
    assert list(app.iterdir()) == []
    assert (model_dir / "unet/weights.bin").read_bytes() == b"unet"


def test_remove_link_of_nothing_is_an_error(app: Path) -> None:
    with pytest.raises(FileNotFoundError):
        remove_link(app / "missing", None, "symlink")


# --- move_to_trash, same_filesystem, readlink_target -----------------------------------------


def test_move_to_trash_renames_into_the_trash(lib: Path, model_dir: Path) -> None:
    trash = lib / ".mlib/trash"
    moved = move_to_trash(model_dir, trash)

    assert not model_dir.exists()
    assert moved.parent == trash
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-bundle", moved.name)
    assert (moved / "unet/weights.bin").read_bytes() == b"unet"


def test_move_to_trash_never_replaces_an_entry(
    lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> FrozenClock:
            return cls(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)

    monkeypatch.setattr(fsops, "datetime", FrozenClock)
    trash = lib / ".mlib/trash"
    first, second = tmp_path / "a/model", tmp_path / "b/model"
    for path in (first, second):
        path.mkdir(parents=True)
        (path / "f").write_text(path.parent.name)

    one = move_to_trash(first, trash)
    two = move_to_trash(second, trash)
    assert one.name == "20250102T030405.000006Z-model"
    assert two.name == "20250102T030405.000006Z-model-2"
    assert (one / "f").read_text() == "a" and (two / "f").read_text() == "b"


def test_move_to_trash_keeps_long_names_within_the_limit(tmp_path: Path) -> None:
    path = tmp_path / ("m" * 250)
    path.write_text("x")
    moved = move_to_trash(path, tmp_path / "trash")
    assert moved.exists() and len(moved.name) <= 255


def test_same_filesystem(tmp_path: Path, other_fs: Path) -> None:
    assert same_filesystem(tmp_path, tmp_path / "not/yet/made")
    assert not same_filesystem(tmp_path, other_fs)
    assert not same_filesystem(tmp_path / "missing", other_fs / "missing/too")


def test_readlink_target_does_not_follow_further(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/hop").symlink_to("../real")
    (tmp_path / "link").symlink_to("sub/hop")
    (tmp_path / "abs").symlink_to(tmp_path / "sub" / ".." / "real")

    assert readlink_target(tmp_path / "link") == tmp_path / "sub/hop"
    assert readlink_target(tmp_path / "sub/hop") == tmp_path / "real"
    assert readlink_target(tmp_path / "abs") == tmp_path / "real"


# --- what an interrupted run leaves behind ---------------------------------------------------


@pytest.mark.parametrize("what", ["file", "folder"])
def test_copy_temps_are_named_as_mlibs(
    model_file: Path, model_dir: Path, app: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    seen: list[str] = []

    def killed(src: str, dest: str) -> str:
        seen.append(dest)
        raise KeyboardInterrupt  # as far as a test can go towards SIGKILL

    monkeypatch.setattr(fsops, "_copy_content", killed)
    target, name = (model_file, "base.safetensors") if what == "file" else (model_dir, "bundle")
    with pytest.raises(KeyboardInterrupt):
        make_link(target, app / name, "copy")
    temp = app / Path(seen[0]).relative_to(app).parts[0]  # the file, or the folder holding it
    assert re.fullmatch(re.escape(f".{name}.mlib-") + r"[a-z0-9_]{8}\.tmp", temp.name), temp
    assert list(app.iterdir()) == []  # cleaned up when the process survives


def test_the_next_copy_removes_what_a_killed_one_left(model_file: Path, app: Path) -> None:
    folder = app / "checkpoints"
    folder.mkdir()
    (folder / ".base.safetensors.mlib-k1ll3d_1.tmp").write_bytes(b"half")
    (folder / ".base.safetensors.mlib-k1ll3d_2.tmp").mkdir()
    (folder / ".base.safetensors.mlib-k1ll3d_2.tmp/part").write_bytes(b"half")
    users = [
        ".base.safetensors.tmp",
        ".base.safetensors.mlib-notours.tmp",
        ".other.mlib-abcdefgh.tmp",
    ]
    for name in users:
        (folder / name).write_text("user's")

    assert make_link(model_file, folder / "base.safetensors", "copy") == "copy"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*users, "base.safetensors"])


def test_removing_a_copy_removes_what_a_killed_one_left(model_file: Path, app: Path) -> None:
    link = app / "base.safetensors"
    make_link(model_file, link, "copy")
    (app / ".base.safetensors.mlib-abcd1234.tmp").write_bytes(b"half")
    remove_link(link, model_file, "copy")
    assert list(app.iterdir()) == []


def test_replace_link_removes_a_temp_a_killed_swap_left(
    model_file: Path, app: Path, tmp_path: Path
) -> None:
    link = app / "base.safetensors"
    link.symlink_to(tmp_path / "old")
    (app / ".base.safetensors.mlib-0123abcd.tmp").symlink_to(model_file)
    replace_link(model_file, link, "symlink", tmp_path / "old")
    assert [p.name for p in app.iterdir()] == ["base.safetensors"]
