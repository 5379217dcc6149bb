"""metadata.json / overrides.json: round trips through real files, schema agreement, atomic writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import fsops
from reconciler.errors import InvalidInputError
from reconciler.loaders import read_metadata, read_overrides, validator
from reconciler.metadata import (
    Malformed,
    metadata_to_dict,
    overrides_from_dict,
    overrides_to_dict,
)
from reconciler.model import (
    AppOverride,
    FileEntry,
    HfSource,
    ImportMode,
    LocalSource,
    Metadata,
    ModelType,
    Overrides,
    UrlSource,
)

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


def meta(**changes: object) -> Metadata:
    base: dict[str, object] = {
        "id": "diffusion/sdxl/sdxl_base_1.0",
        "official_name": "SDXL Base 1.0",
        "cleaned_name": "sdxl_base_1.0",
        "model_type": ModelType.DIFFUSION,
        "family": "sdxl",
        "kind": "checkpoint",
        "source": HfSource("stabilityai/sdxl", "0" * 40, ("a.safetensors",)),
        "files": (
            FileEntry("small.json", 10, H1, H2),
            FileEntry("sd_xl_base_1.0.safetensors", 6_938_078_334, H3, H1),
        ),
        "added_at": "2026-11-26T04:00:00Z",
        "updated_at": "2026-11-26T04:00:00Z",
        "tags": ("base", "sdxl"),
    }
    base.update(changes)
    return Metadata(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "source",
    [
        HfSource("org/repo", "main", ("*.safetensors",), ("*.bin",)),
        UrlSource("https://example.org/x.safetensors", "x.safetensors"),
        UrlSource("https://example.org/x.safetensors"),
        LocalSource("/data/x.safetensors", ImportMode.MOVE),
    ],
)
def test_metadata_round_trips_through_a_real_file(tmp_path: Path, source: object) -> None:
    value = meta(source=source)
    fsops.write_metadata(tmp_path, value)
    back = read_metadata(tmp_path / "metadata.json")
    assert back == value
    data = json.loads((tmp_path / "metadata.json").read_text())
    assert validator("metadata").is_valid(data)
    # derived fields: the primary file is the largest; hashes and size follow from the files
    assert data["hashes"] == {"sha256": H3, "blake3": H1}
    assert data["size_bytes"] == 6_938_078_344
    assert data["schema_version"] == 1


def test_a_model_without_files_has_null_hashes(tmp_path: Path) -> None:
    fsops.write_metadata(tmp_path, meta(files=()))
    data = json.loads((tmp_path / "metadata.json").read_text())
    assert data["hashes"] is None and data["size_bytes"] == 0
    assert read_metadata(tmp_path / "metadata.json").files == ()


def test_bad_metadata_reports_every_field(tmp_path: Path) -> None:
    data = metadata_to_dict(meta())
    data["files"][0]["size"] = "ten"
    data["model_type"] = "painting"
    del data["official_name"]
    (tmp_path / "metadata.json").write_text(json.dumps(data))
    with pytest.raises(InvalidInputError) as info:
        read_metadata(tmp_path / "metadata.json")
    paths = sorted(p.path for p in info.value.problems)
    assert paths == ["", "files[0].size", "model_type"]
    text = str(info.value)
    assert "missing required field 'official_name'" in text and "painting" in text


def test_overrides_round_trip_and_missing_file_means_none(tmp_path: Path) -> None:
    assert read_overrides(tmp_path / "overrides.json") == Overrides()
    value = Overrides(
        (
            AppOverride("a1111", enabled=False),
            AppOverride("comfy", True, "<0.4,>=0.3", "loras/x", "x.safetensors"),
        )
    )
    fsops.write_overrides(tmp_path, value)
    data = json.loads((tmp_path / "overrides.json").read_text())
    assert validator("overrides").is_valid(data)
    assert data["apps"]["a1111"] == {"enabled": False, "versions": "*"}
    assert read_overrides(tmp_path / "overrides.json") == value


@pytest.mark.parametrize(
    "data",
    [
        {"schema_version": 1},
        {"schema_version": 2, "apps": {}},
        {"schema_version": 1, "apps": {"comfy": {"enabled": "yes", "versions": "*"}}},
        {"schema_version": 1, "apps": {"comfy": {"enabled": True}}},
        {"schema_version": 1, "apps": {"comfy": {"enabled": True, "versions": "*", "x": 1}}},
        {"schema_version": 1, "apps": {"comfy": {"enabled": True, "versions": "*", "folder": ""}}},
        {"schema_version": 1, "apps": []},
    ],
)
def test_fast_overrides_check_agrees_with_the_schema(data: dict[str, Any]) -> None:
    assert not validator("overrides").is_valid(data)
    with pytest.raises(Malformed):
        overrides_from_dict(data)


_NAMES = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    apps=st.dictionaries(
        _NAMES,
        st.fixed_dictionaries(
            {"enabled": st.booleans(), "versions": st.sampled_from(["*", "<0.4,>=0.3"])},
            optional={"folder": _NAMES, "filename": _NAMES},
        ),
        max_size=4,
    )
)
def test_every_schema_valid_overrides_document_converts(apps: dict[str, object]) -> None:
    data: dict[str, Any] = {"schema_version": 1, "apps": apps}
    assert validator("overrides").is_valid(data)
    assert overrides_to_dict(overrides_from_dict(data)) == data


# --- atomic writes ---------------------------------------------------------------------------------


def test_atomic_write_replaces_content_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "metadata.json"
    target.write_text("old")
    fsops.atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["metadata.json"]
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & 0o044 == 0o044 & ~_umask(), "readable by group/others as the umask allows"


def test_a_failed_atomic_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metadata.json"
    target.write_text("old")

    def disk_full(fd: int) -> None:  # the disk fails when the data is flushed
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        fsops.atomic_write(target, b"new")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["metadata.json"], "the temp file was removed"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
