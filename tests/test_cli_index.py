"""`mlib index rebuild` and `mlib list` as a user runs them: the real `mlib` script in a subprocess,
on a generated library of a few thousand models, two of them broken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from benchmarks.synth import make_library

MLIB = str(Path(sys.executable).parent / "mlib")
LIST_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "list.schema.json"
N = 3000


def mlib(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLIB_MANIFEST"}
    return subprocess.run(
        [MLIB, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env, check=False
    )


@dataclass
class Library:
    root: Path
    info: dict[str, Any]
    broken: dict[str, str]  # model id -> what is wrong with it
    rebuild: subprocess.CompletedProcess[str]

    @property
    def good(self) -> list[dict[str, Any]]:
        return [m for m in self.info["models"] if m["id"] not in self.broken]

    def expected(self, *tags: str) -> list[str]:
        return [m["id"] for m in self.good if set(tags) <= set(m["tags"])]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Library:
    """A library of N models, two of them broken, indexed by `mlib index rebuild`."""
    root = tmp_path_factory.mktemp("cli") / "models"
    info = make_library(root, N, seed=11, with_overrides=True)
    first, second = info["models"][10]["id"], info["models"][2000]["id"]
    (root / first / "metadata.json").write_text('{"schema_version": 1,\n  "id": \n}\n')
    doc = json.loads((root / second / "metadata.json").read_text())
    doc["files"][0]["size"] = "4 GB"
    (root / second / "metadata.json").write_text(json.dumps(doc, indent=2))
    r = mlib("--root", str(root), "index", "rebuild", cwd=tmp_path_factory.mktemp("cwd"))
    return Library(root, info, {first: "invalid JSON", second: "size is a string"}, r)


def test_rebuild_indexes_the_good_and_names_the_broken(rebuilt: Library) -> None:
    r = rebuilt.rebuild
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = r.stdout.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"indexed {N - 2} of {N} models in ")
    assert out[0].endswith(f"(2 skipped) -> {rebuilt.root / 'models.db'}")
    skipped = [line for line in r.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 2, r.stderr
    first, second = rebuilt.broken
    by_model = {model_id: [s for s in skipped if model_id in s] for model_id in rebuilt.broken}
    assert [len(lines) for lines in by_model.values()] == [1, 1], r.stderr
    (line,) = by_model[first]
    assert line == f"skipped {first}/metadata.json: invalid JSON at line 3: Expecting value"
    (line,) = by_model[second]
    assert line.startswith(f"skipped {second}/metadata.json: schema error: files[0].size: ")
    assert "got string" in line


def test_list_json_follows_its_schema_and_counts(rebuilt: Library, tmp_path: Path) -> None:
    validator = Draft202012Validator(json.loads(LIST_SCHEMA.read_text()))
    validator.check_schema(validator.schema)
    for tag in ("base", "fp16", "experimental"):
        r = mlib("--root", str(rebuilt.root), "list", "--tag", tag, "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert list(validator.iter_errors(data)) == []
        expected = rebuilt.expected(tag)
        assert data["count"] == len(data["models"]) == len(expected)
        assert [m["id"] for m in data["models"]] == expected
        # what was lost to the two broken files, and nothing else
        lost = sum(tag in m["tags"] for m in rebuilt.info["models"] if m["id"] in rebuilt.broken)
        assert data["count"] == rebuilt.info["tags"][tag] - lost
    by_id = {m["id"]: m for m in rebuilt.good}
    for model in data["models"]:
        known = by_id[model["id"]]
        assert model["tags"] == list(known["tags"])
        assert (model["size_bytes"], model["sha256"]) == (known["size_bytes"], known["sha256"])
        assert (model["type"], model["family"], model["kind"]) == (
            known["type"],
            known["family"],
            known["kind"],
        )


def test_the_list_schema_refuses_what_list_never_prints(rebuilt: Library, tmp_path: Path) -> None:
    validator = Draft202012Validator(json.loads(LIST_SCHEMA.read_text()))
    r = mlib("--root", str(rebuilt.root), "list", "--tag", "3d", "--json", cwd=tmp_path)
    good = json.loads(r.stdout)
    assert validator.is_valid(good)
    model = good["models"][0]
    for bad in (
        {**good, "extra": 1},
        {**good, "count": -1},
        {**good, "models": [{**model, "sha256": "ABC"}]},
        {**good, "models": [{**model, "type": "checkpoint"}]},
        {**good, "models": [{k: v for k, v in model.items() if k != "id"}]},
        {**good, "models": [{**model, "size_bytes": "1 GB"}]},
    ):
        assert not validator.is_valid(bad)
    assert validator.is_valid({**good, "models": [{**model, "sha256": None}]})


def test_list_with_two_tags_prints_a_table(rebuilt: Library, tmp_path: Path) -> None:
    r = mlib("--root", str(rebuilt.root), "list", "--tag", "anime", "--tag", "turbo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    expected = rebuilt.expected("anime", "turbo")
    assert 0 < len(expected) < rebuilt.info["tags"]["anime"]
    assert lines[0].split() == ["ID", "KIND", "SIZE", "TAGS"]
    assert lines[-1] == f"{len(expected)} models"
    rows = lines[1:-1]
    assert [row.split()[0] for row in rows] == expected
    by_id = {m["id"]: m for m in rebuilt.good}
    for row in rows:
        model_id, kind, *_size, tags = row.split()
        assert kind == by_id[model_id]["kind"]
        assert tags.split(",") == list(by_id[model_id]["tags"])
        assert {"anime", "turbo"} <= set(tags.split(","))


def test_list_of_a_missing_root_is_one_clear_error(tmp_path: Path) -> None:
    r = mlib("--root", "/nonexistent", "list", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        "/nonexistent: library root not found (check --root or 'library:')",
        "mlib: 1 problem found",
    ]
    assert not Path("/nonexistent").exists()


def test_list_without_manifest_or_root_says_what_to_do(tmp_path: Path) -> None:
    r = mlib("list", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[1] == "mlib: 1 problem found", r.stderr
    assert lines[0].startswith("mlib.yaml: ")
    assert "--root" in lines[0] and "mlib init" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing was created in the empty folder
