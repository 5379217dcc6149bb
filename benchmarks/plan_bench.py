"""No-op ``mlib plan`` at scale: N models already applied, linked into one or three app targets.

    python benchmarks/plan_bench.py N [--apps 1|3] [--keep DIR]

Builds (without going through apply, which would fsync N model folders) exactly the state that
apply leaves: a manifest of N local-source models, N model folders with metadata.json,
overrides.json and a 1-byte file, models.db with current rows and the link registry, and one
relative symlink per model and app. Checks that the plan is empty, then prints the time of a
warm no-op plan: computed in full (in process by phase, and as a whole ``mlib plan`` command with
the plan cache removed first, as after any change), and replayed from the plan cache when nothing
changed (``reconciler.cache``), as a whole command. "load manifest" is the
manifest as ``make_plan`` loads it, remembered from the previous plan; "(manifest, full read)" is
what it costs after the manifest was edited.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reconciler import api, cache, observe, planner, stamps
from reconciler.index import open_index
from reconciler.library import gc_paused, read_entries
from reconciler.metadata import dumps, metadata_to_dict, overrides_to_dict
from reconciler.model import FileEntry, LocalSource, Metadata, ModelType, Overrides

HEX = "ab" * 32


def build(root: Path, n: int, apps: int) -> Path:
    lib = root / "lib"
    names = [f"model {i:06d}" for i in range(n)]
    lines = ["version: 1", "library: lib", "apps:"]
    for a in range(apps):
        lines.append(f'  app{a}: {{app: comfyui, version: "0.3.62", models_dir: app{a}}}')
    lines.append("models:")
    for i, name in enumerate(names):
        lines.append(
            f"  - {{name: {name}, type: diffusion, family: f{i % 50}, kind: lora,"
            f" source: {{path: src/{i}.safetensors}}}}"
        )
    manifest = root / "mlib.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    overrides = dumps(overrides_to_dict(Overrides()))
    for i, name in enumerate(names):
        mid = f"diffusion/f{i % 50}/{name.replace(' ', '_')}"
        folder = lib / mid
        folder.mkdir(parents=True)
        file = f"{i}.safetensors"
        (folder / file).write_bytes(b"x")
        meta = Metadata(
            id=mid,
            official_name=name,
            cleaned_name=name.replace(" ", "_"),
            model_type=ModelType.DIFFUSION,
            family=f"f{i % 50}",
            kind="lora",
            source=LocalSource(str(root / "src" / file)),
            files=(FileEntry(file, 1, HEX, HEX),),
            added_at="2026-01-01T00:00:00Z",
            updated_at="2026-01-01T00:00:00Z",
        )
        (folder / "metadata.json").write_bytes(dumps(metadata_to_dict(meta)))
        (folder / "overrides.json").write_bytes(overrides)
        for a in range(apps):
            link = root / f"app{a}" / "loras" / file
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(folder / file, link.parent), link)
    entries, skipped = read_entries(lib)
    assert not skipped, skipped[:3]
    with open_index(lib) as index:
        index.rebuild(entries)
        rows = [
            (f"app{a}", str(root / f"app{a}" / "loras" / e.meta.files[0].path), e.meta.id,
             e.meta.files[0].path, "symlink")
            for e in entries
            for a in range(apps)
        ]  # fmt: skip
        with index.conn:
            index.conn.execute("BEGIN")
            index.conn.executemany("INSERT INTO links VALUES (?, ?, ?, ?, ?)", rows)
    return manifest


def phases(manifest: Path) -> dict[str, float]:
    """One in-process plan, timed by phase (the same steps as api.make_plan, which pauses the
    cyclic garbage collector while it works)."""
    with gc_paused():
        return _phases(manifest)


def _phases(manifest: Path) -> dict[str, float]:
    t: dict[str, float] = {}
    start = time.perf_counter()
    m = cache.remembered_manifest(cache.ManifestInput.read(manifest))
    t["load manifest"] = time.perf_counter() - start
    mark = time.perf_counter()
    translations = api.select_translations(m)
    library = observe.observe_library(m.library)
    t["observe library"] = time.perf_counter() - mark
    mark = time.perf_counter()
    desired = planner.desire(m, translations, library, {})
    t["desire"] = time.perf_counter() - mark
    mark = time.perf_counter()
    with open_index(m.library) as index:
        texts, registry = index.metadata_texts(), index.links()
    paths, found = api.observe_links(m, desired, registry)
    t["observe links + index"] = time.perf_counter() - mark
    mark = time.perf_counter()
    observed = planner.Observed(
        library=library,
        paths=paths,
        registry=tuple(registry),
        index=texts,
        app_dirs={a.name: True for a in m.apps},
        found_links=tuple(found),
    )
    plan = planner.plan(m, desired, observed, translations)
    t["plan"] = time.perf_counter() - mark
    t["total"] = time.perf_counter() - start
    assert not plan.actions, [a.reason for a in plan.actions[:5]]
    return t


def full_read(manifest: Path) -> float:
    """Reading the manifest in full, as after an edit (make_plan remembers it otherwise)."""
    with gc_paused():
        start = time.perf_counter()
        api.load(manifest)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int)
    parser.add_argument("--apps", type=int, default=1)
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="mlib-plan-bench-"))
    manifest = root / "mlib.yaml"
    if not manifest.exists():
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        build(root, args.n, args.apps)
        print(f"built {args.n} models x {args.apps} app(s) in {time.perf_counter() - t0:.1f} s")
    time.sleep(stamps.SETTLED_NS / 1e9)  # only a plan of settled files is kept
    check = api.make_plan(manifest)
    assert not check.plan.actions, [a.reason for a in check.plan.actions[:5]]
    runs = [phases(manifest) for _ in range(3)]
    links = args.n * args.apps
    print(f"no-op plan, {args.n} models, {args.apps} app(s), {links} links (median of 3, warm)")
    print("computed in full (as after any change), in process:")
    for name in runs[0]:
        print(f"  {name:<24} {statistics.median(r[name] for r in runs):7.3f} s")
    edited = statistics.median(full_read(manifest) for _ in range(3))
    print(f"  {'(manifest, full read)':<24} {edited:7.3f} s  (after an edit, not cached)")
    mlib = Path(sys.executable).parent / "mlib"
    kept = list((check.manifest.library / ".mlib" / "cache").glob("plan-*.pickle"))
    assert kept, "the plan was not kept"

    def command(forget: bool) -> float:
        if forget:
            for path in kept:
                path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        subprocess.run([mlib, "-m", str(manifest), "plan"], check=True, capture_output=True)
        return time.perf_counter() - t0

    full = statistics.median(command(forget=True) for _ in range(3))
    print(f"  {'mlib plan (process)':<24} {full:7.3f} s  (plan cache removed first)")
    command(forget=False)  # keeps the plan again
    replayed = statistics.median(command(forget=False) for _ in range(5))
    print("nothing changed since the last plan (replayed from the plan cache):")
    print(f"  {'mlib plan (process)':<24} {replayed:7.3f} s  (median of 5)")
    print(json.dumps({"n": args.n, "apps": args.apps, "plan_s": replayed, "full_plan_s": full}))


if __name__ == "__main__":
    main()
