"""The CLI as a user meets it: the real `mlib` script in a subprocess, exit codes and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scenario import make_example

MLIB = str(Path(sys.executable).parent / "mlib")


def mlib(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MLIB, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_init_then_validate(tmp_path: Path) -> None:
    r = mlib("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mlib.yaml").read_text().startswith("# mlib manifest")
    r = mlib("validate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("mlib.yaml: valid (0 models, 1 app target, library ")
    # init never overwrites
    (tmp_path / "mlib.yaml").write_text("version: 1\n# mine\n")
    r = mlib("init", cwd=tmp_path)
    assert r.returncode == 1
    assert "already exists" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "mlib.yaml").read_text() == "version: 1\n# mine\n"


def test_validate_prints_every_problem_as_one_line_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "version: 1\n"
        "apps:\n"
        "  comfy: {version: 0.3, models_dir: comfy}\n"
        "models:\n"
        "  - {name: A, type: llm, family: x, kind: gguf, source: {git: y}}\n"
        "  - {name: A, type: llm, family: x, kind: gguf, source: {path: a}, apps: {nope: true}}\n"
    )
    r = mlib("-m", "bad.yaml", "validate", cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [
        'bad.yaml:3: apps.comfy.version: expected a string, got number (quote it: "0.3")',
        "bad.yaml:5: models[0].source.git: unknown source kind 'git' (use one of: hf: org/repo, url: https://..., path: /local/file)",
        "bad.yaml:6: models[1]: duplicate model id 'llm/x/a' (first on line 5) (give one of them another name or family, or an explicit 'id:')",
        "bad.yaml:6: models[1].apps.nope: unknown app target 'nope' (use a target from 'apps:' (comfy) or define it there)",
        "mlib: 4 problems found",
    ]


def test_manifest_comes_from_env_and_missing_manifest_is_one_line(tmp_path: Path) -> None:
    r = mlib("validate", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == (
        "mlib.yaml: manifest not found (create it with 'mlib init' or pass -m PATH)"
    )
    (tmp_path / "elsewhere.yaml").write_text("version: 1\n")
    r = mlib("validate", cwd=tmp_path, env={"MLIB_MANIFEST": "elsewhere.yaml"})
    assert r.returncode == 0, r.stderr
    assert "elsewhere.yaml: valid (0 models, 0 app targets" in r.stdout


def test_doctor_reports_dependencies_and_the_root(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    r = mlib("--root", str(root), "doctor", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    names = [line.split()[1] for line in r.stdout.splitlines()]
    for dep in ("pyyaml", "jsonschema", "blake3", "packaging", "huggingface_hub", "click"):
        assert dep in [n.lower() for n in names], r.stdout
    assert "ok       symlinks" in r.stdout
    assert not any(root.joinpath(".mlib").iterdir()), "the symlink probe cleaned up after itself"


def test_doctor_names_a_missing_requirement() -> None:
    from reconciler.doctor import Status, dependency_checks

    checks = dependency_checks(
        ["click>=1", "mlib-surely-not-installed>=1.0", "pytest; extra == 'x'"]
    )
    assert [(c.name, c.status) for c in checks] == [
        ("click", Status.OK),
        ("mlib-surely-not-installed", Status.MISSING),
    ]
    assert checks[1].install == "mlib-surely-not-installed>=1.0"
    assert "not installed (needs >=1.0)" in checks[1].detail
    too_new = dependency_checks(["click>=999"])
    assert too_new[0].status is Status.MISSING and "needs >=999" in too_new[0].detail


@pytest.mark.parametrize("args", [["--help"], ["list", "--help"], ["index", "rebuild", "--help"]])
def test_help_works_everywhere(tmp_path: Path, args: list[str]) -> None:
    r = mlib(*args, cwd=tmp_path)
    assert r.returncode == 0 and "Usage: mlib" in r.stdout


def _example(tmp_path: Path) -> Path:
    """The shipped example, made in a temp folder: manifest at tmp/manifests/example.yaml."""
    (tmp_path / "manifests").mkdir()
    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "manifests" / "example.yaml").write_text(
        (repo / "manifests" / "example.yaml").read_text()
    )
    subprocess.run(
        [sys.executable, str(repo / "manifests" / "make_example.py"), str(tmp_path / "example")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return tmp_path / "manifests" / "example.yaml"


def _schema(name: str) -> dict[str, object]:
    path = Path(__file__).resolve().parent.parent / "schemas" / f"{name}.schema.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_plan_apply_status_verify_cycle_on_the_example(tmp_path: Path) -> None:
    import jsonschema

    manifest = str(_example(tmp_path))
    r = mlib("-m", manifest, "plan", "--detailed-exitcode", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert (
        r.stdout.splitlines()[-1]
        == "Plan: 4 to import (14.1 KB), 4 to link, 0 to unlink, 0 to remove, 4 other changes; 0 conflicts."
    )
    assert "  + import          diffusion/sd15/tiny_sd_checkpoint (10.3 KB)" in r.stdout
    r = mlib("-m", manifest, "status", cwd=tmp_path)
    assert r.returncode == 2 and "model_missing" in r.stdout
    r = mlib("-m", manifest, "status", "--json", cwd=tmp_path)
    status = json.loads(r.stdout)
    jsonschema.validate(status, _schema("status"))
    assert r.returncode == 2 and not status["in_sync"]
    assert sorted({d["kind"] for d in status["drift"]}) == ["link_missing", "model_missing"]
    r = mlib("-m", manifest, "apply", cwd=tmp_path)  # no terminal, no -y: refuse
    assert r.returncode == 1 and "pass -y" in r.stderr
    assert not (tmp_path / "example" / "shared-resources").exists()
    r = mlib("-m", manifest, "plan", "-o", "saved.json", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "saved.json").exists()
    r = mlib("-m", manifest, "apply", "-y", "saved.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        r.stdout.splitlines()[-1]
        == "Applied 12 of 12 actions; 0 failed; 0 conflicts left untouched."
    )
    r = mlib("-m", manifest, "plan", "--detailed-exitcode", cwd=tmp_path)
    assert r.returncode == 0 and "No changes." in r.stdout
    r = mlib("-m", manifest, "status", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["in_sync"] is True
    r = mlib("-m", manifest, "verify", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("verified 6 files")
    r = mlib("-m", manifest, "apply", "-y", "saved.json", cwd=tmp_path)  # now stale
    assert r.returncode == 1 and "the plan is stale" in r.stderr and "Traceback" not in r.stderr


def test_a_plan_saved_with_a_relative_manifest_path_is_not_stale(tmp_path: Path) -> None:
    relative = os.path.relpath(_example(tmp_path), tmp_path)  # as a user types it
    r = mlib("-m", relative, "plan", "-o", "saved.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = mlib("-m", relative, "apply", "-y", "saved.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1].startswith("Applied 12 of 12 actions; 0 failed")


def test_plan_json_follows_its_schema(tmp_path: Path) -> None:
    import jsonschema

    manifest = str(_example(tmp_path))
    r = mlib("-m", manifest, "plan", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    jsonschema.validate(data, _schema("plan"))
    assert data["summary"]["import"] == 4 and data["summary"]["link"] == 4


def test_validate_checks_user_translations_too(tmp_path: Path) -> None:
    (tmp_path / "tr").mkdir()
    (tmp_path / "tr" / "myapp_1_default.json").write_text(
        '{"app": "myapp", "versions": ">=banana", "rules": [{"targets": ["../../etc"]}]}\n'
    )
    (tmp_path / "mlib.yaml").write_text("version: 1\ntranslations: [tr]\n")
    r = mlib("validate", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert any("myapp_1_default.json" in line and "versions" in line for line in lines), lines
    assert any("rules[0].targets[0]" in line for line in lines), lines
    (tmp_path / "mlib.yaml").write_text("version: 1\ntranslations: [nowhere]\n")
    r = mlib("validate", cwd=tmp_path)
    assert r.returncode == 1 and "translation folder not found" in r.stderr


def test_list_follows_an_edited_manifest_at_once(tmp_path: Path) -> None:
    """``mlib list -m`` loads the manifest as a plan remembered it (seconds saved at 100k
    models); an edit, even of one byte and within the same second, is seen at once."""
    manifest = make_example(tmp_path)
    assert mlib("-m", str(manifest), "apply", "-y", cwd=tmp_path).returncode == 0
    r = mlib("-m", str(manifest), "list", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("4 models"), r.stdout + r.stderr
    text = manifest.read_text()
    edited = text.replace("shared-resources/models", "shared-resources/modelz", 1)
    assert edited != text and len(edited) == len(text)
    manifest.write_text(edited)
    r = mlib("-m", str(manifest), "list", cwd=tmp_path)
    assert r.returncode == 1 and "modelz" in r.stderr, r.stdout + r.stderr
    manifest.write_text(text)
    r = mlib("-m", str(manifest), "list", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("4 models"), r.stdout + r.stderr
