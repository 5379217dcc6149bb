"""A real, non-editable wheel carries schemas/ and translations/ and finds them at run time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy, so building leaves no build/ or egg-info behind in the checkout.
    src = out / "src"
    src.mkdir()
    for name in ("reconciler", "schemas", "translations"):
        shutil.copytree(
            REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (built,) = out.glob("mlib-*.whl")
    return built


@pytest.mark.slow
def test_wheel_contains_every_schema_and_translation(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("schemas", "translations"):
        for f in (REPO / folder).glob("*.json"):
            assert f"reconciler/{folder}/{f.name}" in names, f"{folder}/{f.name} missing"
    assert "reconciler/schemas/manifest.schema.json" in names
    assert "reconciler/py.typed" in names


@pytest.mark.slow
def test_installed_wheel_loads_schemas_by_importlib_resources(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True,
        timeout=300,
    )  # fmt: skip
    manifest = tmp_path / "mlib.yaml"
    manifest.write_text("version: 1\nmodels: [{name: x}]\n")
    probe = (
        "import reconciler, reconciler.loaders as l, pathlib, sys\n"
        "print(reconciler.__file__)\n"
        "print(len(l.schema_text('metadata')) > 100)\n"
        "try:\n"
        f"    l.load_manifest(pathlib.Path({str(manifest)!r}))\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, len(e.problems))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    r = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    where, schema_found, outcome = r.stdout.splitlines()
    assert where.startswith(str(target)), "the installed copy was imported, not the checkout"
    assert schema_found == "True"
    assert outcome == "InvalidInputError 4", "the manifest schema was applied from the wheel"
