"""The fast paths of a no-op plan give exactly what the thorough ones give.

- :func:`reconciler.loaders.schema_check` (schemas compiled to closures) never accepts what
  ``jsonschema`` refuses, and accepts what it accepts (but for the documented strict corners);
- :func:`reconciler.loaders.parse_yaml_fast` reads the same data and top-level lines as
  :func:`reconciler.loaders.parse_yaml`, and steps aside (None) at every problem, so a manifest
  with duplicate keys still reports them all;
- the manifest remembered by ``make_plan`` in ``<library>/.mlib/cache/`` is the manifest the
  loader gives, used only for exactly the same inputs, and a broken or foreign cache file is
  ignored;
- the model-folder listing of ``observe`` names the files ``os.walk`` names, and the link
  observation finds the links ``symlinks_into`` finds.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import api, observe, planner
from reconciler.document import Document, Positions
from reconciler.errors import InvalidInputError
from reconciler.loaders import (
    load_manifest,
    parse_yaml,
    parse_yaml_fast,
    schema_check,
    schema_problems,
    schema_text,
    validator,
)
from reconciler.metadata import metadata_to_dict, overrides_to_dict
from reconciler.model import AppOverride, FileEntry, HfSource, Metadata, ModelType, Overrides

# --- schema_check against jsonschema -----------------------------------------------------------

slug = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,6}", fullmatch=True)
loose = st.text(alphabet="aZ0 ._-/:+#~*", max_size=8)
tag = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,5}", fullmatch=True)
word = st.one_of(slug, loose)
source = st.one_of(
    st.fixed_dictionaries(
        {"hf": st.from_regex(r"[A-Za-z0-9][a-z.]{0,3}/[A-Za-z0-9][a-z_-]{0,3}", fullmatch=True)},
        optional={
            "revision": st.text(min_size=1, max_size=5),
            "files": st.lists(st.text(min_size=1, max_size=5), max_size=2),
            "exclude": st.lists(st.text(min_size=1, max_size=5), max_size=2),
        },
    ),
    st.fixed_dictionaries(
        {"url": st.from_regex(r"https?://[a-z.]{1,8}/[a-z]{0,4}", fullmatch=True)},
        optional={"filename": st.text(min_size=1, max_size=5)},
    ),
    st.fixed_dictionaries(
        {"path": st.text(min_size=1, max_size=8)},
        optional={"mode": st.sampled_from(["copy", "hardlink", "move"])},
    ),
)
override = st.one_of(
    st.booleans(),
    st.text(max_size=6),
    st.fixed_dictionaries(
        {},
        optional={
            "versions": st.text(min_size=1, max_size=5),
            "enabled": st.booleans(),
            "folder": st.text(min_size=1, max_size=5),
            "filename": st.text(min_size=1, max_size=5),
        },
    ),
)
model = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=8),
        "type": st.sampled_from(["llm", "diffusion", "embedding", "audio", "vision", "other"]),
        "family": slug,
        "kind": slug,
        "source": source,
    },
    optional={
        "id": st.builds(lambda a, b, c: f"{a}/{b}/{c}", slug, slug, slug),
        "sha256": st.from_regex(r"[0-9a-fA-F]{64}", fullmatch=True),
        "tags": st.lists(tag, max_size=3),
        "apps": st.dictionaries(slug, override, max_size=2),
    },
)
app = st.fixed_dictionaries(
    {"version": st.text(min_size=1, max_size=6), "models_dir": st.text(min_size=1, max_size=6)},
    optional={
        "app": slug,
        "variant": slug,
        "link": st.sampled_from(["auto", "symlink", "hardlink", "copy"]),
    },
)
manifest_doc = st.fixed_dictionaries(
    {"version": st.just(1)},
    optional={
        "library": st.text(min_size=1, max_size=6),
        "translations": st.lists(st.text(min_size=1, max_size=6), max_size=2),
        "apps": st.dictionaries(
            st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,5}", fullmatch=True), app, max_size=2
        ),
        "models": st.lists(model, max_size=3),
    },
)
#: Any JSON value but floats (``1.0`` is the one value jsonschema and schema_check judge apart).
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), word),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(word, inner, max_size=3)),
    max_leaves=6,
)


def _paths(data: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*here, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*here, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """A valid document with one to three changes: a value replaced, a key removed or added."""
    data = copy.deepcopy(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            continue
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        how = draw(st.sampled_from(["replace", "delete", "add"]))
        if how == "replace":
            parent[path[-1]] = draw(json_value)
        elif how == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(word)] = draw(json_value)
    return data


def _jsonschema_accepts(schema: str, data: Any) -> bool:
    return not any(True for _ in validator(schema).iter_errors(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest_doc)
def test_schema_check_accepts_valid_manifests(data: dict[str, Any]) -> None:
    assert _jsonschema_accepts("manifest", data)
    check = schema_check("manifest")
    assert check is not None and check(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(manifest_doc))
def test_schema_check_agrees_with_jsonschema_on_mutated_manifests(data: Any) -> None:
    check = schema_check("manifest")
    assert check is not None
    assert check(data) == _jsonschema_accepts("manifest", data)


def _bundled_translations() -> list[Any]:
    folder = Path(__file__).resolve().parents[1] / "translations"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(st.sampled_from(_bundled_translations())))
def test_schema_check_agrees_with_jsonschema_on_mutated_translations(data: Any) -> None:
    check = schema_check("translation")
    assert check is not None
    assert check(data) == _jsonschema_accepts("translation", data)


def _metadata_docs() -> list[Any]:
    meta = Metadata(
        id="diffusion/sdxl/a",
        official_name="A",
        cleaned_name="a",
        model_type=ModelType.DIFFUSION,
        family="sdxl",
        kind="lora",
        source=HfSource("org/a", "main", ("a.safetensors",)),
        files=(FileEntry("a.safetensors", 3, "ab" * 32, "cd" * 32),),
        added_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
        tags=("x",),
    )
    return [metadata_to_dict(meta)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        mutated(st.sampled_from(_metadata_docs())).map(lambda d: ("metadata", d)),
        mutated(
            st.just(overrides_to_dict(Overrides((AppOverride("comfy", versions=">=0.3"),))))
        ).map(lambda d: ("overrides", d)),
    )
)
def test_schema_check_agrees_with_jsonschema_on_metadata_and_overrides(case: Any) -> None:
    schema, data = case
    check = schema_check(schema)
    assert check is not None
    assert check(data) == _jsonschema_accepts(schema, data)


def test_every_bundled_schema_compiles() -> None:
    for name in ("manifest", "metadata", "overrides", "translation", "plan", "status", "list"):
        assert schema_check(name) is not None, name
        json.loads(schema_text(name))


def test_the_strict_corner_falls_back_to_jsonschema() -> None:
    """``version: 1.0`` is a 1 to JSON Schema; schema_check refuses it, jsonschema accepts it."""
    check = schema_check("manifest")
    assert check is not None and not check({"version": 1.0})
    assert schema_problems(Document("m", {"version": 1.0}, Positions()), "manifest") == []
    assert not check({"version": True})
    assert schema_problems(Document("m", {"version": True}, Positions()), "manifest")


# --- parse_yaml_fast against parse_yaml ----------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest_doc, st.sampled_from([None, True, False]))
def test_fast_yaml_reads_what_the_thorough_reader_reads(data: Any, flow: bool | None) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, sort_keys=False, allow_unicode=True)
    slow = parse_yaml(text, "m.yaml")
    fast = parse_yaml_fast(text, "m.yaml")
    assert fast is not None and not slow.problems
    assert fast.data == slow.data
    for key, line in fast.positions.lines.items():
        assert len(key) <= 2 and slow.positions.lines[key] == line, key
    top = [k for k in slow.positions.lines if len(k) <= 2]
    assert sorted(map(str, top)) == sorted(map(str, fast.positions.lines))


FAST_REFUSES = {
    "duplicate top-level key": "version: 1\nversion: 1\n",
    "duplicate nested key": "version: 1\napps:\n  a: {version: '1', version: '2', models_dir: x}\n",
    "duplicate key in a list item": "models:\n  - {name: a, name: b}\n",
    "unsupported tag": "version: !!set {a}\n",
    "custom tag": "version: !thing 1\n",
    "merge key": "base: &b {x: 1}\nother:\n  <<: *b\n",
    "syntax error": "version: [1\n",
    "complex key": "? [a, b]\n: 1\n",
}


@pytest.mark.parametrize("text", FAST_REFUSES.values(), ids=FAST_REFUSES.keys())
def test_fast_yaml_steps_aside_for_what_only_the_thorough_reader_reports(text: str) -> None:
    assert parse_yaml_fast(text, "m.yaml") is None


def test_the_fast_reader_keeps_plain_yaml_types() -> None:
    text = "a: 2024-01-02\nb: 0x1f\nc: ~\nd: 1.5\ne: yes\nf: 'yes'\n7: seven\n"
    fast = parse_yaml_fast(text, "m.yaml")
    assert fast is not None
    assert fast.data == parse_yaml(text, "m.yaml").data
    assert fast.data["7"] == "seven"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_duplicates_are_still_reported_with_every_other_problem(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mlib.yaml",
        """\
        version: 1
        apps:
          comfy: {version: "0.3.62", models_dir: comfy}
        models:
          - name: A
            type: diffusion
            family: sdxl
            kind: lora
            kind: vae
            source: {path: a.safetensors}
          - name: B
            type: nonsense
            family: sdxl
            kind: lora
            source: {path: b.safetensors}
        """,
    )
    with pytest.raises(InvalidInputError) as info:
        load_manifest(path)
    found = {(p.line, p.path) for p in info.value.problems}
    assert (9, "models[0].kind") in found
    assert (12, "models[1].type") in found
    assert any("duplicate key" in p.message for p in info.value.problems)


def test_a_good_manifest_gives_the_same_value_either_way(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "proj" / "mlib.yaml",
        """\
        version: 1
        library: lib
        apps:
          comfy: {app: comfyui, version: "0.3.62", models_dir: ../comfy, link: symlink}
        models:
          - name: SDXL Base 1.0
            type: diffusion
            family: sdxl
            kind: checkpoint
            source: {hf: stabilityai/sdxl, files: [a.safetensors]}
            sha256: "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
            tags: [base]
            apps: {comfy: ">=0.3 <0.4"}

          - name: My LoRA (v2)
            type: diffusion
            family: sdxl
            kind: lora
            source: {path: ~/x/my lora.safetensors, mode: move}
            apps:
              comfy: {versions: "^0.3", folder: loras/mine, filename: my-lora.safetensors}
        """,
    )
    home = tmp_path / "home"
    fast = load_manifest(path, home)
    slow_doc = parse_yaml(path.read_text(), "mlib.yaml")
    from reconciler.manifest import interpret

    assert fast == interpret(slow_doc, path, home, [])
    assert [m.line for m in fast.models] == [6, 15]


# --- the remembered manifest ----------------------------------------------------------------------

SMALL = """\
version: 1
library: {library}
apps:
  comfy: {{version: "0.3.62", models_dir: comfy}}
models:
  - {{name: A, type: diffusion, family: sdxl, kind: lora, source: {{path: a.safetensors}}}}
"""


def _project(tmp_path: Path, library: str = "lib", make_library: bool = True) -> Path:
    manifest = _write(tmp_path / "mlib.yaml", SMALL.format(library=library))
    (tmp_path / "a.safetensors").write_bytes(b"x")
    if make_library:
        (tmp_path / "lib").mkdir(exist_ok=True)
    return manifest


def _cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "lib" / ".mlib" / "cache").glob("manifest-*.pickle"))


def _no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the manifest was read in full")

    import reconciler.loaders

    monkeypatch.setattr(reconciler.loaders, "load_manifest", fail)  # where the cache calls it


def test_make_plan_remembers_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _project(tmp_path)
    first = api.make_plan(manifest)
    assert len(_cache_files(tmp_path)) == 1
    _no_loading(monkeypatch)
    second = api.make_plan(manifest)
    assert second.manifest == first.manifest == load_manifest(manifest)
    assert second.plan == first.plan
    assert second.fingerprint == first.fingerprint


@pytest.mark.parametrize("library", ["lib", "'lib'", '"lib"', "lib   # the library", "./lib"])
def test_the_cache_is_found_from_the_library_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, library: str
) -> None:
    manifest = _project(tmp_path, library)
    api.make_plan(manifest)
    _no_loading(monkeypatch)
    api.make_plan(manifest)


def test_an_edited_manifest_is_read_again(tmp_path: Path) -> None:
    manifest = _project(tmp_path)
    api.make_plan(manifest)
    manifest.write_text(manifest.read_text().replace("kind: lora", "kind: vae"))
    assert api.make_plan(manifest).manifest.models[0].kind == "vae"
    manifest.write_text(manifest.read_text().replace("kind: vae", "kind: vae, kind: lora"))
    with pytest.raises(InvalidInputError, match="duplicate key"):
        api.make_plan(manifest)


def test_the_cache_depends_on_home_and_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _project(tmp_path)
    manifest.write_text(manifest.read_text().replace("a.safetensors", "~/a.safetensors"))
    monkeypatch.setenv("HOME", str(tmp_path / "h1"))
    one = api.make_plan(manifest).manifest
    monkeypatch.setenv("HOME", str(tmp_path / "h2"))
    two = api.make_plan(manifest).manifest
    assert one.models[0].source != two.models[0].source
    assert two == load_manifest(manifest)

    (tmp_path / "sub" / "lib").mkdir(parents=True)
    _write(tmp_path / "sub" / "mlib.yaml", manifest.read_text())
    monkeypatch.chdir(tmp_path)
    api.make_plan(Path("mlib.yaml"))
    monkeypatch.chdir(tmp_path / "sub")
    assert api.make_plan(Path("mlib.yaml")).manifest.library == tmp_path / "sub" / "lib"


def test_no_cache_without_a_library(tmp_path: Path) -> None:
    manifest = _project(tmp_path, make_library=False)
    api.make_plan(manifest)
    assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign class", "other key"])
def test_a_broken_cache_is_ignored(tmp_path: Path, damage: str) -> None:
    manifest = _project(tmp_path)
    api.make_plan(manifest)
    (cache,) = _cache_files(tmp_path)
    header, payload = cache.read_bytes().split(b"\n", 1)
    if damage == "garbage":
        cache.write_bytes(b"not a cache at all")
    elif damage == "truncated":
        cache.write_bytes(header + b"\n" + payload[: len(payload) // 2])
    elif damage == "foreign class":
        evil = pickle.dumps(os.getcwd)  # would call a function when loaded
        fields = header.split(b" ")
        import hashlib

        fields[2] = hashlib.sha256(evil).hexdigest().encode()
        cache.write_bytes(b" ".join(fields) + b"\n" + evil)
    else:
        fields = header.split(b" ")
        fields[1] = b"0" * len(fields[1])
        cache.write_bytes(b" ".join(fields) + b"\n" + payload)
    assert api.make_plan(manifest).manifest == load_manifest(manifest)


# --- observing the library and the links ----------------------------------------------------------


def _walk_reference(folder: str) -> list[str]:
    """The listing observe made with os.walk before the fast scan."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, folder)
        for name in filenames:
            if name.startswith("."):
                continue
            found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return sorted(found)


def test_the_folder_scan_names_what_os_walk_names(tmp_path: Path) -> None:
    root = tmp_path / "m"
    for rel in ["a.bin", ".hidden", "sub/b.bin", "sub/deeper/c.bin", "sub/.dot/d.bin", ".dot/e"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "link-to-file").symlink_to(root / "a.bin")
    (root / "link-to-dir").symlink_to(root / "sub")
    (root / "broken").symlink_to(root / "nothing")
    os.mkfifo(root / "fifo")
    assert sorted(observe._walk_files(str(root))) == _walk_reference(str(root))


def test_observe_links_finds_what_symlinks_into_finds(tmp_path: Path) -> None:
    manifest = _project(tmp_path)
    lib = tmp_path / "lib"
    (lib / "diffusion" / "x").mkdir(parents=True)
    (lib / "diffusion" / "x" / "f.bin").write_bytes(b"x")
    comfy = tmp_path / "comfy"
    (comfy / "loras" / "deep" / "er").mkdir(parents=True)
    (comfy / "loras" / "in").symlink_to(lib / "diffusion" / "x" / "f.bin")
    (comfy / "loras" / "deep" / "rel").symlink_to("../../../lib/diffusion/x")
    (comfy / "loras" / "deep" / "er" / "too-deep").symlink_to(lib / "diffusion")
    (comfy / "loras" / "out").symlink_to(tmp_path / "a.safetensors")
    (comfy / "loras" / "libx").symlink_to(str(lib) + "x")
    m = load_manifest(manifest)
    desired = planner.desire(m, api.select_translations(m), {}, {})
    paths, found = api.observe_links(m, desired, [])
    expected = observe.symlinks_into(comfy, lib)
    assert found == expected == [str(comfy / "loras" / "deep" / "rel"), str(comfy / "loras" / "in")]
    assert list(paths) == sorted({*found, *(link.path for link in desired.links)})
    assert all(paths[p] == observe.observe_path(p) for p in paths)


# --- links_for remembers what each sort of file gets ----------------------------------------------


def _links_reference(t: Any, **kw: Any) -> Any:
    """links_for as it was before it remembered answers: every file matched and filled anew."""
    from pathlib import PurePosixPath

    from reconciler.translations import LinkScope, LinkWant, _fill, _link_name

    values = {"family": kw["family"], "type": kw["type"], "kind": kw["kind"]}
    wants: set[LinkWant] = set()
    for file in kw["files"]:
        name = PurePosixPath(file).name
        rule = t.rule_for(
            type=kw["type"],
            family=kw["family"],
            kind=kw["kind"],
            tags=frozenset(kw["tags"]),
            filename=name,
        )
        if rule is None:
            continue
        for target in rule.targets:
            folder = _fill(t, target, values)
            if rule.link is LinkScope.FOLDER:
                wants.add(LinkWant(None, folder, _link_name(t, kw["cleaned_name"])))
            else:
                wants.add(LinkWant(file, folder, name))
    return tuple(sorted(wants, key=lambda w: (w.folder, w.name, w.file or "")))


TEMPLATED = """{
  "app": "t", "versions": "*",
  "rules": [
    {"match": {"kind": ["diffusers"]}, "targets": ["diffusers/{family}", "x"], "link": "folder"},
    {"match": {"tags": ["big"], "files": ["*.gguf"]}, "targets": ["big/{type}"]},
    {"match": {"kind": ["lora"], "exclude_tags": ["nsfw"]}, "targets": ["loras/{family}", "l"]},
    {"match": {"files": ["*.json"]}, "targets": ["json"]}
  ]
}"""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["diffusion", "llm"]),
                "family": st.sampled_from(["sdxl", "flux", "..", "a/b", ""]),
                "kind": st.sampled_from(["diffusers", "lora", "gguf"]),
                "tags": st.lists(st.sampled_from(["big", "nsfw", "x"]), max_size=2, unique=True),
                "files": st.lists(
                    st.sampled_from(["a.gguf", "b.safetensors", "sub/c.json", "d/", ".", "e.JSON"]),
                    max_size=3,
                ),
                "cleaned_name": st.sampled_from(["model", "..", "a/b", "ok-1"]),
            }
        ),
        min_size=1,
        max_size=6,
    )
)
def test_links_for_answers_as_it_did_before_it_remembered(calls: list[dict[str, Any]]) -> None:
    from reconciler.errors import TranslationError
    from reconciler.translation_files import read_translation
    from reconciler.translations import links_for

    t = read_translation(TEMPLATED, "templated.json")

    def outcome(fn: Any, kw: dict[str, Any]) -> Any:
        try:
            return fn(t, **kw)
        except TranslationError as exc:
            return str(exc)

    for kw in calls + calls:  # every call twice: once filling the memory, once reading it
        assert outcome(links_for, kw) == outcome(_links_reference, kw)


def _library_reference(root: Path) -> dict[str, Any]:
    """observe_library as it was: model_dirs, open() of each file, os.walk for the extras."""
    from reconciler.facts import FileStat, LibraryModel
    from reconciler.library import model_dirs
    from reconciler.metadata import Malformed, metadata_from_dict

    def read(path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except (OSError, UnicodeDecodeError):
            return None

    def size(path: str) -> int:
        try:
            return os.lstat(path).st_size
        except OSError:
            return -1

    out: dict[str, Any] = {}
    for model_id, folder in model_dirs(root):
        text = read(os.path.join(folder, "metadata.json"))
        overrides = read(os.path.join(folder, "overrides.json"))
        meta, error = None, None
        if text is None:
            error = "metadata.json is unreadable"
        else:
            try:
                meta = metadata_from_dict(json.loads(text))
            except json.JSONDecodeError as exc:
                error = f"metadata.json is not valid JSON (line {exc.lineno}: {exc.msg})"
            except Malformed:
                error = "metadata.json does not match the metadata schema"
            if meta is not None and meta.id != model_id:
                error = f"metadata.json says id '{meta.id}' but the folder is '{model_id}'"
        present = []
        listed = {"metadata.json", "overrides.json"}
        if meta is not None:
            for entry in meta.files:
                listed.add(entry.path)
                try:
                    st = os.stat(os.path.join(folder, entry.path), follow_symlinks=False)
                except OSError:
                    continue
                if st.st_mode & 0o170000 == 0o100000:
                    present.append((entry.path, FileStat.of(st)))
        extra = tuple(
            (p, size(os.path.join(folder, p))) for p in _walk_reference(folder) if p not in listed
        )
        subdirs = tuple(sorted(_subdirs_reference(folder)))
        out[model_id] = LibraryModel(
            model_id, folder, meta, text, overrides, error, tuple(present), extra, subdirs
        )
    return out


def _subdirs_reference(folder: str) -> list[str]:
    """The real subfolders under ``folder`` that os.walk enters (not dot-folders, not links)."""
    found = []
    for dirpath, dirnames, _ in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        found += [os.path.relpath(os.path.join(dirpath, d), folder) for d in dirnames]
    return found


def _model(root: Path, model_id: str, files: dict[str, bytes], listed: list[str]) -> Path:
    from reconciler.metadata import dumps

    folder = root / model_id
    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    meta = Metadata(
        id=model_id,
        official_name=model_id,
        cleaned_name=model_id.rsplit("/", 1)[1],
        model_type=ModelType.DIFFUSION,
        family=model_id.split("/")[1],
        kind="lora",
        source=HfSource("org/a", "main"),
        files=tuple(FileEntry(p, 1, "ab" * 32, "cd" * 32) for p in listed),
        added_at="t",
        updated_at="t",
    )
    (folder / "metadata.json").write_bytes(dumps(metadata_to_dict(meta)))
    return folder


def test_observe_library_sees_what_it_saw_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "lib"
    _model(root, "diffusion/a/plain", {"w.bin": b"x"}, ["w.bin"])
    f = _model(
        root,
        "diffusion/a/extras",
        {"w.bin": b"x", "renamed.bin": b"y", ".dot": b""},
        ["w.bin", "gone.bin"],
    )
    (f / "overrides.json").write_text('{"schema_version": 1, "apps": {}}\r\n')
    (f / "link.bin").symlink_to(f / "w.bin")
    (f / "broken").symlink_to(f / "nothing")
    b = _model(
        root,
        "diffusion/a/bundle",
        {"unet/w.bin": b"x", "unet/extra.bin": b"zz", ".git/x": b""},
        ["unet/w.bin"],
    )
    (b / "overrides.json").mkdir()
    (b / "listed-dir").mkdir()
    (b / "listed-dir" / "inner").write_bytes(b"i")
    _model(root, "diffusion/a/wrong-id", {}, []).joinpath("metadata.json").write_text(
        (root / "diffusion/a/plain/metadata.json").read_text()
    )
    (root / "diffusion/a/bad-json").mkdir(parents=True)
    (root / "diffusion/a/bad-json/metadata.json").write_text("{nope")
    (root / "diffusion/a/not-utf8").mkdir(parents=True)
    (root / "diffusion/a/not-utf8/metadata.json").write_bytes(b"\xff\xfe")
    (root / "diffusion/a/dir-meta/metadata.json").mkdir(parents=True)
    (root / "diffusion/a/no-meta").mkdir(parents=True)
    (root / "diffusion/a/.hidden/metadata.json").parent.mkdir(parents=True)
    (root / "diffusion/a/.hidden/metadata.json").write_text("{}")
    assert observe.observe_library(root) == _library_reference(root)

    # A folder that can be searched but not listed (root ignores permissions, so pretend).
    unlisted = str(root / "diffusion/a/extras")
    scandir = os.scandir

    def no_listing(path: Any = ".") -> Any:
        if os.fspath(path) == unlisted:
            raise PermissionError(13, "Permission denied", path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", no_listing)
    seen = observe.observe_library(root)["diffusion/a/extras"]
    before = _library_reference(root)["diffusion/a/extras"]
    assert seen.metadata == before.metadata and seen.overrides_text == before.overrides_text
    assert seen.present == before.present and seen.extra == ()
