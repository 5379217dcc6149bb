"""Manifest loading: values from a good manifest, and every problem of a bad one, with its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.errors import InvalidInputError, Problem
from reconciler.loaders import load_manifest
from reconciler.model import HfSource, ImportMode, LinkMode, LocalSource, ModelType, UrlSource

GOOD = """\
version: 1
library: lib/models
translations: [my-translations/]
apps:
  comfy:
    app: comfyui
    version: "0.3.62"
    models_dir: ../ComfyUI/models
    link: symlink
  forge:
    version: "1.10.1"
    models_dir: /opt/forge/models
models:
  - name: SDXL Base 1.0
    type: diffusion
    family: sdxl
    kind: checkpoint
    source: {hf: stabilityai/stable-diffusion-xl-base-1.0, files: [sd_xl_base_1.0.safetensors]}
    sha256: "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
    tags: [base]
    apps: {comfy: ">=0.3 <0.4", forge: false}
  - name: My LoRA (v2)
    type: diffusion
    family: sdxl
    kind: lora
    source: {path: ~/Downloads/my lora v2.safetensors, mode: move}
    apps:
      comfy: {versions: "^0.3", folder: loras/mine, filename: my-lora.safetensors}
  - name: Some VAE
    id: diffusion/sdxl/vae-fix
    type: diffusion
    family: sdxl
    kind: vae
    source: {url: "https://example.org/vae.safetensors"}
"""


def load(tmp_path: Path, text: str, name: str = "mlib.yaml") -> object:
    path = tmp_path / "proj" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_manifest(path, home=tmp_path / "home")


def problems(tmp_path: Path, text: str) -> list[Problem]:
    with pytest.raises(InvalidInputError) as info:
        load(tmp_path, text)
    return list(info.value.problems)


def test_good_manifest_gives_values(tmp_path: Path) -> None:
    m = load_manifest(_write(tmp_path / "proj" / "mlib.yaml", GOOD), home=tmp_path / "home")
    proj = tmp_path / "proj"
    assert m.library == proj / "lib" / "models"
    assert m.translations == (proj / "my-translations",)
    comfy, forge = m.apps
    assert (comfy.name, comfy.app, comfy.version, comfy.variant) == (
        "comfy",
        "comfyui",
        "0.3.62",
        "default",
    )
    assert comfy.models_dir == tmp_path / "ComfyUI" / "models"
    assert comfy.link is LinkMode.SYMLINK
    assert (forge.app, forge.link, forge.models_dir) == (
        "forge",
        LinkMode.AUTO,
        Path("/opt/forge/models"),
    )

    sdxl, lora, vae = m.models
    assert sdxl.id == "diffusion/sdxl/sdxl_base_1.0"
    assert sdxl.name == "SDXL Base 1.0" and sdxl.type is ModelType.DIFFUSION
    assert sdxl.source == HfSource(
        "stabilityai/stable-diffusion-xl-base-1.0", "main", ("sd_xl_base_1.0.safetensors",)
    )
    assert sdxl.sha256 == "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
    by_target = {o.target: o for o in sdxl.apps}
    assert by_target["comfy"].versions == "<0.4,>=0.3" and by_target["comfy"].enabled
    assert not by_target["forge"].enabled

    assert lora.id == "diffusion/sdxl/my_lora_v2"
    assert lora.source == LocalSource(
        str(tmp_path / "home" / "Downloads" / "my lora v2.safetensors"), ImportMode.MOVE
    )
    (o,) = lora.apps
    assert (o.versions, o.folder, o.filename) == ("<0.4,>=0.3", "loras/mine", "my-lora.safetensors")

    assert vae.id == "diffusion/sdxl/vae-fix"
    assert vae.source == UrlSource("https://example.org/vae.safetensors")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MODEL = """\
version: 1
apps:
  comfy: {version: "0.3.62", models_dir: comfy/models}
models:
  - name: A
    type: diffusion
    family: sdxl
    kind: lora
    source: {path: a.safetensors}
"""

# (what is wrong, the lines replacing the end of MODEL's model, expected line, field path, text)
SINGLE_MISTAKES = [
    ("unknown source kind", "    source: {git: x}\n", 9, "models[0].source.git", "unknown source kind 'git'"),
    ("two sources", "    source: {path: a, url: 'https://x.org/a'}\n", 9, "models[0].source.url", "two sources in one model"),
    ("no source kind", "    source: {mode: copy}\n", 9, "models[0].source", "no source kind"),
    ("option of another kind", "    source: {url: 'https://x.org/a', mode: move}\n", 9, "models[0].source.mode", "does not apply to a url source"),
    ("unknown target", "    source: {path: a}\n    apps: {forge: true}\n", 10, "models[0].apps.forge", "unknown app target 'forge'"),
    ("bad range", "    source: {path: a}\n    apps: {comfy: '>=banana'}\n", 10, "models[0].apps.comfy", "invalid version range '>=banana'"),
    ("bad range in object", "    source: {path: a}\n    apps: {comfy: {versions: '^'}}\n", 10, "models[0].apps.comfy.versions", "invalid version range '^'"),
    ("traversal in folder", "    source: {path: a}\n    apps: {comfy: {folder: ../../etc}}\n", 10, "models[0].apps.comfy.folder", ".."),
    ("path as filename", "    source: {path: a}\n    apps: {comfy: {filename: a/b.safetensors}}\n", 10, "models[0].apps.comfy.filename", "is a path"),
    ("bad sha256", "    source: {path: a}\n    sha256: xyz\n", 10, "models[0].sha256", "64 hex digits"),
    ("pin on a bundle", "    source: {hf: org/repo, files: ['*.safetensors']}\n    sha256: '" + "a" * 64 + "'\n", 10, "models[0].sha256", "single-file source"),
    ("hf repo form", "    source: {hf: justaname}\n", 9, "models[0].source.hf", "org/name"),
    ("unknown field", "    source: {path: a}\n    colour: red\n", 10, "models[0].colour", "unknown field"),
    ("number as name", "    source: {path: a}\n    id: Diffusion/X/Y\n", 10, "models[0].id", "<type>/<family>/<name>"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("tail", "line", "path", "text"),
    [pytest.param(t, ln, p, x, id=name) for name, t, ln, p, x in SINGLE_MISTAKES],
)
def test_single_mistake_is_reported_with_line_and_field(
    tmp_path: Path, tail: str, line: int, path: str, text: str
) -> None:
    source = MODEL.rsplit("    source:", 1)[0] + tail
    found = problems(tmp_path, source)
    assert [(p.line, p.path) for p in found] == [(line, path)], found
    assert text in found[0].message + found[0].fix
    assert found[0].fix, "every problem says how to fix it"


MANY_MISTAKES = """\
version: 1
library: models
apps:
  comfy:
    version: 0.3
    models_dir: models/comfy
  a1111:
    models_dir: ../a1111
models:
  - name: SDXL Base
    type: diffusion
    family: sdxl
    kind: checkpoint
    source: {hf: stabilityai/sdxl, url: "https://x.org/a"}
    apps: {comfy: ">=banana", forge: true}
  - name: SDXL Base
    type: diffusion
    family: sdxl
    kind: checkpoint
    source: {git: "x"}
    sha256: abc
  - name: Missing
    type: diffusoin
    family: SDXL
    source: {path: a, revision: main}
    tags: [ok, "bad tag"]
    name: Dup
  - type: llm
"""


def test_every_problem_is_reported_in_one_run(tmp_path: Path) -> None:
    found = problems(tmp_path, MANY_MISTAKES)
    where = [(p.line, p.path) for p in found]
    assert where == [
        (5, "apps.comfy.version"),  # a number: quote it
        (6, "apps.comfy.models_dir"),  # inside the library root
        (7, "apps.a1111"),  # no version
        (14, "models[0].source.url"),  # two sources
        (15, "models[0].apps.comfy"),  # bad range
        (15, "models[0].apps.forge"),  # unknown target
        (16, "models[1]"),  # duplicate id
        (20, "models[1].source.git"),  # unknown source kind
        (21, "models[1].sha256"),
        (22, "models[2]"),  # no kind
        (23, "models[2].type"),
        (24, "models[2].family"),
        (25, "models[2].source.revision"),
        (26, "models[2].tags[1]"),
        (27, "models[2].name"),  # duplicate key
        (28, "models[3]"),
        (28, "models[3]"),
        (28, "models[3]"),
        (28, "models[3]"),
    ]
    assert found[0].fix == 'quote it: "0.3"'
    assert "first defined on line 22" in found[14].message
    assert "first on line 10" in found[6].message
    assert {p.message for p in found[-4:]} == {
        f"missing required field '{f}'" for f in ("name", "family", "kind", "source")
    }
    rendered = found[1].render()
    assert rendered.startswith(
        f"{found[1].file}:6: apps.comfy.models_dir: this models_dir is inside"
    )
    assert found[1].file.endswith("mlib.yaml")
    assert rendered.endswith("(point models_dir at the app's own folder, outside the library)")


def test_library_inside_an_app_folder_is_refused(tmp_path: Path) -> None:
    text = MODEL.replace("models_dir: comfy/models", "models_dir: .").split("models:\n")[0]
    found = problems(tmp_path, text + "library: ./lib\n")
    assert [(p.line, p.path) for p in found] == [(3, "apps.comfy.models_dir")]
    assert "library root" in found[0].message and "inside this models_dir" in found[0].message


def test_ids_differing_only_in_case_collide(tmp_path: Path) -> None:
    text = MODEL + "  - {name: B, id: diffusion/sdxl/a, type: diffusion, family: sdxl, kind: lora,"
    text += " source: {path: b}}\n"
    found = problems(tmp_path, text)
    assert [(p.line, p.path) for p in found] == [(10, "models[1]")]
    assert "duplicate model id 'diffusion/sdxl/a'" in found[0].message


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", None, "the manifest is empty"),
        ("version: 1\nmodels: [\n", 3, "YAML error"),
        ("version: 1\n  bad: indent\n", 2, "YAML error"),
        ("- just\n- a list\n", 1, "expected a mapping, got list"),
        ("version: 2\n", 1, "2 is not supported"),
        ("version: 1\nversion: 1\n", 2, "duplicate key"),
        ("version: 1\nmodels: !!python/object:os.system []\n", 2, "unsupported YAML tag"),
        ("version: 1\nlibrary: !!python/name:os.system\n", 2, "YAML error"),
    ],
)
def test_broken_files_give_one_clear_problem(
    tmp_path: Path, text: str, line: int | None, message: str
) -> None:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].line == line and message in found[0].message


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as info:
        load_manifest(tmp_path / "nope.yaml", home=tmp_path)
    assert "manifest not found" in str(info.value) and "mlib init" in str(info.value)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(InvalidInputError) as info:
        load_manifest(bad, home=tmp_path)
    assert "not UTF-8" in str(info.value)


def test_the_shipped_example_is_valid() -> None:
    example = Path(__file__).parent.parent / "manifests" / "example.yaml"
    m = load_manifest(example, home=Path("/nonexistent-home"))
    assert len(m.models) == 4 and [a.name for a in m.apps] == ["comfy"]


# --- fuzzing: any YAML document gives a manifest or InvalidInputError, never another exception ----

_KEYS = st.sampled_from(
    ["version", "library", "apps", "models", "name", "type", "family", "kind", "source", "hf",
     "url", "path", "mode", "files", "apps", "comfy", "versions", "enabled", "folder", "filename",
     "models_dir", "link", "tags", "id", "sha256", "revision", "translations", "x"]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.sampled_from(["1", "0.3.62", "^0.3", ">=banana", "diffusion", "a/b", "../..", "", "~", "*"]),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.dictionaries(_KEYS, _VALUES, max_size=5), version=st.sampled_from([1, 1, "1", None]))
def test_fuzzed_manifests_only_raise_clean_errors(
    tmp_path_factory: pytest.TempPathFactory, body: dict[str, object], version: object
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    doc = {"version": version, **body}
    path = folder / "mlib.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    try:
        load_manifest(path, home=folder)
    except InvalidInputError as exc:
        assert exc.problems
        assert all(p.file and p.message for p in exc.problems)


@pytest.mark.parametrize(
    ("app", "line", "path", "text"),
    [
        ('comfy: {app: a1111, version: "1.0", models_dir: sd, link: config}', 3, "apps.comfy.link", "has none"),
        ('comfy: {version: "0.3.62", models_dir: comfy/models, config: x.yaml}', 3, "apps.comfy.config", "only used with 'link: config'"),
    ],
)  # fmt: skip
def test_config_mode_is_for_comfyui_only(
    tmp_path: Path, app: str, line: int, path: str, text: str
) -> None:
    found = problems(
        tmp_path, MODEL.replace('comfy: {version: "0.3.62", models_dir: comfy/models}', app)
    )
    assert [(p.line, p.path) for p in found] == [(line, path)], found
    assert text in found[0].message + found[0].fix


def test_config_mode_defaults_to_comfyuis_own_file(tmp_path: Path) -> None:
    text = MODEL.replace(
        "models_dir: comfy/models}", "models_dir: comfy/models, app: comfyui, link: config}"
    )
    (app,) = load_manifest(_write(tmp_path / "mlib.yaml", text)).apps
    assert app.config_file == tmp_path / "comfy" / "extra_model_paths.yaml"
