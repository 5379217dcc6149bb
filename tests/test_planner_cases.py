"""Planner cases as data: given a manifest and observed facts, expect these actions and conflicts.

Each file in tests/cases/ is one case (see README.md there). The planner is pure, so no disk is
involved: facts are built from the case, paths live under a virtual /case root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import planner
from reconciler.actions import Plan
from reconciler.facts import (
    FileStat,
    LibraryModel,
    LinkRecord,
    PathFacts,
    PathKind,
    RemoteFacts,
    RemoteFile,
    SourceFacts,
)
from reconciler.loaders import parse_yaml, schema_problems
from reconciler.manifest import interpret
from reconciler.metadata import dumps, metadata_to_dict, overrides_to_dict
from reconciler.model import (
    FileEntry,
    LocalSource,
    Manifest,
    Metadata,
    ModelSpec,
    ModelType,
    Overrides,
)
from reconciler.translation_files import load_translations
from reconciler.translations import Translation, select

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))
BASE = Path("/case")
HEX = "0123456789abcdef" * 4


def _abs(rel: str) -> str:
    return os.path.normpath(BASE / rel)


def load_case(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def build_manifest(case: dict[str, Any]) -> Manifest:
    doc = parse_yaml(case["manifest"], "mlib.yaml")
    return interpret(doc, BASE / "mlib.yaml", BASE / "home", schema_problems(doc, "manifest"))


def metadata_for(spec: ModelSpec | None, model_id: str, entry: dict[str, Any]) -> Metadata:
    type_, family, name = model_id.split("/")
    files = tuple(
        FileEntry(path, size, HEX, HEX[::-1]) for path, size in entry.get("files", {}).items()
    )
    base = Metadata(
        id=model_id,
        official_name=spec.name if spec else name,
        cleaned_name=spec.cleaned_name if spec else name,
        model_type=spec.type if spec else ModelType(type_),
        family=spec.family if spec else family,
        kind=spec.kind if spec else entry.get("kind", "lora"),
        source=spec.source if spec else LocalSource("/elsewhere/x.safetensors"),
        files=files,
        added_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
        tags=spec.tags if spec else (),
    )
    if "source_path" in entry:
        base = Metadata(**{**base.__dict__, "source": LocalSource(entry["source_path"])})
    if "tags" in entry:
        base = Metadata(**{**base.__dict__, "tags": tuple(entry["tags"])})
    return base


def build_library(case: dict[str, Any], manifest: Manifest) -> dict[str, LibraryModel]:
    specs = {s.id: s for s in manifest.models}
    out: dict[str, LibraryModel] = {}
    for model_id, entry in (case.get("library") or {}).items():
        entry = entry or {}
        folder = _abs(f"lib/{model_id}")
        if entry.get("broken"):
            out[model_id] = LibraryModel(model_id, folder, None, "{", None, "invalid JSON")
            continue
        meta = metadata_for(specs.get(model_id), model_id, entry)
        spec = specs.get(model_id)
        overrides = dumps(overrides_to_dict(Overrides(spec.apps if spec else ()))).decode()
        present_sizes = entry.get("present", {f.path: f.size for f in meta.files})
        present = tuple(
            (name, FileStat(size, 1, i + 1, 1))
            for i, (name, size) in enumerate(present_sizes.items())
        )
        extra = tuple((name, size) for name, size in (entry.get("extra") or {}).items())
        out[model_id] = LibraryModel(
            model_id,
            folder,
            meta,
            dumps(metadata_to_dict(meta)).decode(),
            None if entry.get("no_overrides") else overrides,
            None,
            present,
            extra,
        )
    return out


def build_sources(case: dict[str, Any], manifest: Manifest) -> dict[str, SourceFacts]:
    given = case.get("sources") or {}
    out: dict[str, SourceFacts] = {}
    for spec in manifest.models:
        path = getattr(spec.source, "path", None)
        if path is None:
            continue
        rel = os.path.relpath(path, BASE)
        value = given.get(rel)
        if value is None:
            out[path] = SourceFacts(path, error="does not exist")
        elif isinstance(value, dict):
            files = tuple((name, FileStat(size, 1, 1, 1)) for name, size in sorted(value.items()))
            out[path] = SourceFacts(path, files, is_dir=True)
        else:
            out[path] = SourceFacts(path, ((os.path.basename(path), FileStat(value, 1, 1, 1)),))
    return out


def build_remotes(case: dict[str, Any]) -> dict[str, RemoteFacts]:
    """``remotes: {model id: {origin, files: [[path, url, size, sha256]], locked} | {error, fix}}``"""
    out: dict[str, RemoteFacts] = {}
    for model_id, value in (case.get("remotes") or {}).items():
        if "error" in value:
            out[model_id] = RemoteFacts(model_id, error=value["error"], fix=value.get("fix", ""))
            continue
        files = tuple(RemoteFile(p, u, size, sha or None) for p, u, size, sha in value["files"])
        out[model_id] = RemoteFacts(
            model_id, value["origin"], files, locked=bool(value.get("locked"))
        )
    return out


def build_paths(case: dict[str, Any], wanted: set[str]) -> dict[str, PathFacts]:
    out = {p: PathFacts(p, PathKind.MISSING) for p in wanted}
    for rel, value in (case.get("paths") or {}).items():
        path = _abs(rel)
        if isinstance(value, dict) and "symlink" in value:
            target = _abs(value["symlink"])
            out[path] = PathFacts(path, PathKind.SYMLINK, target, True)
        else:
            out[path] = PathFacts(path, PathKind(value), None, True, 7, 1, 1)
    return out


def translations_for(manifest: Manifest) -> dict[str, Translation | str]:
    user, bundled = load_translations(())
    return {a.name: select(user, bundled, a.app, a.variant, a.version) for a in manifest.apps}


def run_case(case: dict[str, Any], prune: bool) -> Plan:
    manifest = build_manifest(case)
    translations = translations_for(manifest)
    library = build_library(case, manifest)
    sources = build_sources(case, manifest)
    remotes = build_remotes(case)
    desired = planner.desire(manifest, translations, library, sources, remotes)
    registry = tuple(
        LinkRecord(app, _abs(path), model, file, mode)
        for app, path, model, file, mode in case.get("registry") or []
    )
    index = {
        mid: (library[mid].metadata_text or "") if mid in library else "{}"
        for mid in case.get("index") or []
    }
    index |= {mid: "stale" for mid in case.get("stale_index") or []}
    found = tuple(_abs(p) for p in case.get("found_links") or [])
    wanted = {link.path for link in desired.links} | {r.link_path for r in registry} | set(found)
    observed = planner.Observed(
        library=library,
        sources=sources,
        paths=build_paths(case, wanted),
        registry=registry,
        index=index,
        app_dirs={
            a.name: a.name not in (case.get("missing_app_dirs") or []) for a in manifest.apps
        },
        found_links=found,
        staging=tuple(_abs(p) for p in case.get("staging") or []),
        remotes=remotes,
    )
    return planner.plan(manifest, desired, observed, translations, prune=prune)


def _rel(path: str) -> str:
    return os.path.relpath(path, BASE) if path.startswith(str(BASE)) else path


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    case = load_case(path)
    result = run_case(case, prune=bool(case.get("prune")))
    expect = case["expect"]
    got = [[a.kind.value, a.model, _rel(a.path)] for a in result.actions]
    assert got == [
        list(map(str, row)) if len(row) == 3 else row for row in expect.get("actions", [])
    ]
    conflicts = sorted([c.kind.value, c.model, _rel(c.path)] for c in result.conflicts)
    assert conflicts == sorted(expect.get("conflicts", []))
    if "drift" in expect:
        assert sorted({d.kind.value for d in result.drift}) == sorted(expect["drift"])
    for text in expect.get("reasons", []):
        reasons = [a.reason for a in result.actions] + [n.reason for n in result.noops]
        assert any(text in r for r in reasons), (text, reasons)
    for a in result.actions:
        assert a.reason, "every action says why"
    for link in expect.get("link_targets", []):
        (action,) = [a for a in result.actions if _rel(a.path) == link[0]]
        assert _rel(action.target) == link[1]


def test_there_are_cases() -> None:
    assert len(CASES) >= 15
