"""mlib add / mlib override edit a commented manifest in place: comments, order and formatting
survive, and an edit that would make the manifest invalid leaves the file byte-identical."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from scenario import mlib

from reconciler import manifest_edit
from reconciler.errors import InvalidInputError
from reconciler.loaders import load_manifest

MANIFEST = """\
# My models. Keep this comment!
version: 1
library: lib   # next to this file

apps:
  comfy:
    app: comfyui
    version: "0.3.62"       # the installed version
    models_dir: comfy

models:
  # the base model
  - name: Base
    type: diffusion
    family: sdxl
    kind: checkpoint
    source: {path: base.safetensors}
    apps: {comfy: ">=0.3"}

  - {name: Flow Style LoRA, type: diffusion, family: sdxl, kind: lora, source: {path: l.safetensors}}
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "mlib.yaml"
    path.write_text(MANIFEST)
    return path


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_add_appends_one_model_and_keeps_everything_else(manifest: Path) -> None:
    source = manifest_edit.parse_source("hf:org/sdxl-vae@v1:*.safetensors", manifest)
    assert source == {"hf": "org/sdxl-vae", "revision": "v1", "files": ["*.safetensors"]}
    entry = {"name": manifest_edit.default_name(source), "type": "diffusion", "family": "sdxl",
             "kind": "vae", "source": source, "tags": ["vae"]}  # fmt: skip
    done = manifest_edit.add_model(manifest, entry)
    assert done.model_id == "diffusion/sdxl/sdxl-vae"
    after = manifest.read_text()
    assert after.startswith(MANIFEST)  # nothing before it moved, no comment lost
    assert changed_lines(MANIFEST, after) == [
        "+  - name: sdxl-vae",
        "+    type: diffusion",
        "+    family: sdxl",
        "+    kind: vae",
        "+    source: {hf: org/sdxl-vae, revision: v1, files: ['*.safetensors']}",
        "+    tags: [vae]",
    ]
    assert [m.id for m in load_manifest(manifest).models][-1] == "diffusion/sdxl/sdxl-vae"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"versions": "^0.3"}, ['-    apps: {comfy: ">=0.3"}', '+    apps: {comfy: "^0.3"}']),
        (  # the range is kept for when it is enabled again
            {"enabled": False},
            [
                '-    apps: {comfy: ">=0.3"}',
                '+    apps: {comfy: {versions: ">=0.3", enabled: false}}',
            ],
        ),
        (
            {"folder": "checkpoints/xl"},
            [
                '-    apps: {comfy: ">=0.3"}',
                '+    apps: {comfy: {versions: ">=0.3", folder: checkpoints/xl}}',
            ],
        ),
    ],
)
def test_override_changes_only_its_line(
    manifest: Path, change: dict[str, object], expected: list[str]
) -> None:
    manifest_edit.set_override(manifest, "diffusion/sdxl/base", "comfy", **change)  # type: ignore[arg-type]
    assert changed_lines(MANIFEST, manifest.read_text()) == expected


def test_enable_after_disable_returns_to_the_defaults(manifest: Path) -> None:
    flow = "diffusion/sdxl/flow_style_lora"
    manifest_edit.set_override(manifest, flow, "comfy", enabled=False)
    assert load_manifest(manifest).models[1].apps[0].enabled is False
    manifest_edit.set_override(manifest, flow, "comfy", enabled=True)
    assert manifest.read_text() == MANIFEST  # the override is gone again, byte for byte


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: manifest_edit.set_override(p, "diffusion/sdxl/base", "nope", enabled=False),
         "unknown app target 'nope'"),
        (lambda p: manifest_edit.set_override(p, "diffusion/sdxl/base", "comfy", versions="!!"),
         "invalid version range"),
        (lambda p: manifest_edit.set_override(p, "diffusion/sdxl/base", "comfy", folder="../x"),
         "folder"),
        (lambda p: manifest_edit.set_override(p, "no/such/model", "comfy", enabled=False),
         "no model with id 'no/such/model'"),
        (lambda p: manifest_edit.add_model(p, {"name": "Base", "type": "diffusion",
                                               "family": "sdxl", "kind": "lora",
                                               "source": {"path": "x.safetensors"}}),
         "duplicate model id"),
        (lambda p: manifest_edit.add_model(p, {"name": "X", "type": "pictures",
                                               "family": "sdxl", "kind": "lora",
                                               "source": {"path": "x.safetensors"}}),
         "type"),
    ],
)  # fmt: skip
def test_an_invalid_edit_changes_nothing(manifest: Path, edit: object, message: str) -> None:
    before = manifest.read_bytes()
    with pytest.raises(InvalidInputError) as err:
        edit(manifest)  # type: ignore[operator]
    assert message in str(err.value)
    assert manifest.read_bytes() == before


def test_sources_as_typed(tmp_path: Path) -> None:
    manifest = tmp_path / "sub" / "mlib.yaml"
    assert manifest_edit.parse_source("https://x.org/a/b%20c.safetensors?x=1", manifest) == {
        "url": "https://x.org/a/b%20c.safetensors?x=1"
    }
    assert manifest_edit.default_name({"url": "https://x.org/a/b%20c.safetensors?x=1"}) == "b c"
    inside = manifest_edit.parse_source(str(tmp_path / "sub" / "m" / "x.gguf"), manifest, "move")
    assert inside == {"path": "m/x.gguf", "mode": "move"}
    outside = manifest_edit.parse_source(str(tmp_path / "y.gguf"), manifest)
    assert outside == {"path": str(tmp_path / "y.gguf")}
    assert manifest_edit.default_name(outside) == "y"


def test_the_cli_adds_and_overrides_and_says_what_is_missing(manifest: Path) -> None:
    r = mlib(manifest, "add", "hf:org/m")
    assert r.returncode == 1 and "needs --type, --family, --kind" in r.stderr
    assert "Traceback" not in r.stderr and manifest.read_text() == MANIFEST
    r = mlib(manifest, "add", "hf:org/m", "--type", "llm", "--family", "llama", "--kind", "gguf",
             "--tag", "chat", "--name", "Llama 3")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "added llm/llama/llama_3" in r.stdout
    r = mlib(manifest, "override", "llm/llama/llama_3", "comfy", "--disable")
    assert r.returncode == 0, r.stderr
    spec = load_manifest(manifest).models[-1]
    assert spec.tags == ("chat",) and spec.apps[0].enabled is False
    r = mlib(manifest, "override", "llm/llama/llama_3", "comfy")
    assert r.returncode == 2 and "say what to change" in r.stderr
    assert manifest.read_text().startswith(MANIFEST)


def _lora_file(path: Path) -> Path:
    """A tiny SDXL LoRA in the safetensors format (tensor names as kohya writes them)."""
    import json
    import struct

    names = [
        "lora_unet_input_blocks_4_1_proj_in.lora_down.weight",
        "lora_te1_text_model.lora_up.weight",
    ]
    header = {
        n: {"dtype": "F16", "shape": [1], "data_offsets": [2 * i, 2 * i + 2]}
        for i, n in enumerate(names)
    }
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(2 * len(names)))
    return path


def test_add_guesses_what_it_can_from_the_file(manifest: Path) -> None:
    lora = _lora_file(manifest.parent / "detail.safetensors")
    r = mlib(manifest, "add", str(lora))
    assert r.returncode == 0, r.stderr
    assert "guessed from the file" in r.stderr
    spec = load_manifest(manifest).models[-1]
    assert (spec.type.value, spec.kind, spec.family) == ("diffusion", "lora", "sdxl")
    assert spec.source == manifest_edit_source(manifest, "detail.safetensors")


def manifest_edit_source(manifest: Path, name: str) -> object:
    from reconciler.model import LocalSource

    return LocalSource(str(manifest.parent / name))


def test_plan_warns_when_the_declared_kind_disagrees_with_the_file(manifest: Path) -> None:
    _lora_file(manifest.parent / "base.safetensors")  # declared a checkpoint in MANIFEST
    (manifest.parent / "l.safetensors").write_bytes(b"not a model")
    r = mlib(manifest, "plan")
    assert r.returncode == 0, r.stderr
    assert (
        "warning: diffusion/sdxl/base: declared kind 'checkpoint' but the file looks like 'lora'"
        in r.stdout
    )
    assert "import" in r.stdout  # a check, not a gate: it is still imported


PYYAML_STYLE = """\
version: 1
library: lib
apps:
  comfy:
    app: comfyui
    version: 0.3.62
    models_dir: comfy
models:
- name: Base
  type: diffusion
  family: sdxl
  kind: checkpoint
  source:
    path: base.safetensors
  tags:
  - base
  apps:
    comfy: '>=0.3'
"""


def test_an_edit_keeps_the_files_own_indentation(tmp_path: Path) -> None:
    """pyyaml writes list items under their key (``tags:`` then ``- x``); ruamel.yaml would
    re-indent every list to its own setting unless told the file's."""
    manifest = tmp_path / "mlib.yaml"
    manifest.write_text(PYYAML_STYLE)
    manifest_edit.set_override(manifest, "diffusion/sdxl/base", "comfy", versions="^0.3")
    assert changed_lines(PYYAML_STYLE, manifest.read_text()) == [
        "-    comfy: '>=0.3'",
        "+    comfy: '^0.3'",  # its quotes kept, too
    ]
    manifest_edit.add_model(manifest, {"name": "L", "type": "diffusion", "family": "sdxl",
                                       "kind": "lora", "source": {"path": "l.safetensors"},
                                       "tags": ["x"]})  # fmt: skip
    assert manifest.read_text().startswith(PYYAML_STYLE.replace("'>=0.3'", "'^0.3'"))
