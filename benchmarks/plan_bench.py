"""mlib at scale: N models already applied, linked into one or three app targets.

    python benchmarks/plan_bench.py N [--apps A [A ...]] [--runs R] [--full-runs F] [--keep DIR]
                                      [--json PATH]

Builds (without going through apply, which would fsync N model folders) exactly the state that
apply leaves: a manifest of N local-source models with 5 tags each (of the 40 of
``benchmarks.synth.VOCABULARY``), N model folders with metadata.json, overrides.json and a 1-byte
file, models.db with current rows and the link registry, and one relative symlink per model and
app. With several app counts (``--apps 1 3``) one library serves them all: after the first is
measured, the links of the next app targets are added. Checks that the plan is empty, then
measures, warm (everything in the page cache):

- index rebuild: ``reconciler.api.rebuild_index`` (one unmeasured run, then the median of R; the
  rebuild carries the N x apps link rows over);
- no-op plan: computed in full (in process by phase, and as a whole ``mlib plan`` command with the
  plan cache removed first, as after any change), and replayed from the plan cache when nothing
  changed (``reconciler.cache``), as a whole command. "load manifest" is the manifest as
  ``make_plan`` loads it, remembered from the previous plan; "(manifest, full read)" is what it
  costs after the manifest was edited;
- ``mlib status``: replayed from the plan cache, and with the cache removed;
- list by tag: ``reconciler.api.query`` for one tag and for two (in process, full rows), and the
  whole ``mlib list --tag base`` command, with the manifest (``-m``: the manifest as remembered
  since the last plan) and with ``--root`` only.

Every count is checked (the plan and status are empty, a tag query returns the models that carry
the tag). The temporary folder is deleted afterwards unless ``--keep`` names one (a kept folder is
reused by the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.synth import VOCABULARY
from benchmarks.timing import median_s, mlib_script, run_quiet, timed
from reconciler import api, cache, observe, planner, stamps
from reconciler.index import Query, open_index
from reconciler.library import gc_paused, read_entries
from reconciler.loaders import load_manifest
from reconciler.metadata import dumps, metadata_to_dict, overrides_to_dict
from reconciler.model import FileEntry, LocalSource, Metadata, ModelType, Overrides

HEX = "ab" * 32
TAGS_PER_MODEL = 5
#: What a kept folder holds: {"n": models, "apps": app targets}.
STATE_FILE = ".plan-bench.json"
ONE_TAG = ("base",)
TWO_TAGS = ("base", "fp16")


def model_tags(n: int, seed: int = 0) -> list[tuple[str, ...]]:
    """The tags of each of ``n`` models: 5 distinct ones of the vocabulary, drawn from ``seed``."""
    rng = random.Random(seed)
    return [tuple(rng.sample(VOCABULARY, TAGS_PER_MODEL)) for _ in range(n)]


def write_manifest(root: Path, n: int, apps: int) -> Path:
    """The manifest of ``n`` models and ``apps`` app targets (``app0``, ``app1``, ...)."""
    tags = model_tags(n)
    lines = ["version: 1", "library: lib", "apps:"]
    for a in range(apps):
        lines.append(f'  app{a}: {{app: comfyui, version: "0.3.62", models_dir: app{a}}}')
    lines.append("models:")
    for i in range(n):
        lines.append(
            f"  - {{name: model {i:06d}, type: diffusion, family: f{i % 50}, kind: lora,"
            f" tags: [{', '.join(tags[i])}], source: {{path: src/{i}.safetensors}}}}"
        )
    manifest = root / "mlib.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _model(i: int) -> tuple[str, str]:
    """Model ``i``'s id and file name."""
    return f"diffusion/f{i % 50}/model_{i:06d}", f"{i}.safetensors"


def link_apps(root: Path, n: int, first: int, last: int) -> None:
    """Link every model into app targets ``first`` to ``last - 1`` and record the links."""
    lib = root / "lib"
    rows = []
    for a in range(first, last):
        link_dir = os.fspath(root / f"app{a}" / "loras")
        os.makedirs(link_dir)
        for i in range(n):
            mid, file = _model(i)
            link = os.path.join(link_dir, file)
            os.symlink(f"../../lib/{mid}/{file}", link)  # from <root>/app<a>/loras/
            rows.append((f"app{a}", link, mid, file, "symlink"))
    with open_index(lib) as index, index.conn:
        index.conn.execute("BEGIN")
        index.conn.executemany("INSERT INTO links VALUES (?, ?, ?, ?, ?)", rows)


def add_apps(root: Path, n: int, have: int, want: int) -> None:
    """Turn the state :func:`build` left for ``have`` app targets into the one for ``want``."""
    write_manifest(root, n, want)
    link_apps(root, n, have, want)
    (root / STATE_FILE).write_text(json.dumps({"n": n, "apps": want}))


def build(root: Path, n: int, apps: int) -> Path:
    lib = root / "lib"
    names = [f"model {i:06d}" for i in range(n)]
    tags = model_tags(n)
    manifest = write_manifest(root, n, apps)
    overrides = dumps(overrides_to_dict(Overrides()))
    # plain strings and one mkdir per folder: at 100k x 3 apps, Path objects and relpath cost
    # minutes of setup
    lib_s = os.fspath(lib)
    for family in range(min(n, 50)):
        os.makedirs(os.path.join(lib_s, "diffusion", f"f{family}"))
    for i, name in enumerate(names):
        mid = f"diffusion/f{i % 50}/{name.replace(' ', '_')}"
        folder = os.path.join(lib_s, mid)
        os.mkdir(folder)
        file = f"{i}.safetensors"
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
            tags=tags[i],
        )
        for leaf, data in (
            (file, b"x"),
            ("metadata.json", dumps(metadata_to_dict(meta))),
            ("overrides.json", overrides),
        ):
            with open(os.path.join(folder, leaf), "wb") as fh:
                fh.write(data)
    entries, skipped = read_entries(lib)
    assert not skipped, skipped[:3]
    with open_index(lib) as index:
        index.rebuild(entries)
    link_apps(root, n, 0, apps)
    (root / STATE_FILE).write_text(json.dumps({"n": n, "apps": apps}))
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
    """Reading the manifest in full, as after an edit (``api.load`` and ``make_plan`` remember it
    otherwise)."""
    with gc_paused():
        start = time.perf_counter()
        load_manifest(manifest)
        return time.perf_counter() - start


def bench(
    root: Path, n: int, apps: int, runs: int = 3, full_runs: int | None = None
) -> dict[str, Any]:
    """Build (or reuse) the state in ``root``, measure it, print and return the figures.

    ``runs`` times each measurement (the replayed commands at least 5 times); ``full_runs`` (by
    default ``runs``) the slow ones that compute a plan in full or read the manifest in full.
    """
    full_runs = runs if full_runs is None else full_runs
    manifest = root / "mlib.yaml"
    lib = root / "lib"
    out: dict[str, Any] = {"n": n, "apps": apps, "links": n * apps, "runs": runs}
    out["full_runs"] = full_runs
    state = root / STATE_FILE
    kept = json.loads(state.read_text()) if state.exists() else None
    if kept is None:
        root.mkdir(parents=True, exist_ok=True)
        out["build_s"], _ = timed(partial(build, root, n, apps))
        print(f"built {n} models x {apps} app(s) in {out['build_s']:.1f} s")
    elif kept["n"] != n or kept["apps"] > apps:
        raise SystemExit(f"plan_bench: {root} holds {kept['n']} models x {kept['apps']} apps")
    elif kept["apps"] < apps:
        out["build_s"], _ = timed(partial(add_apps, root, n, kept["apps"], apps))
        print(f"linked {n} models into {apps - kept['apps']} more app(s) in {out['build_s']:.1f} s")
    else:
        out["build_s"] = None
        print(f"reusing {n} models x {apps} app(s) in {root}")
    # What was just built is still being written back to disk; measured meanwhile, a rebuild
    # (which writes models.db) took 4.3-4.7 s at 100k against 3.5-3.6 s once it was done.
    os.sync()
    mlib = mlib_script()

    # index rebuild (warm: the metadata was just written or read)
    def rebuild() -> None:
        report = api.rebuild_index(lib)
        if report.indexed != n or report.skipped:
            raise SystemExit(f"plan_bench: indexed {report.indexed} of {n}: {report.skipped[:3]}")

    rebuild()
    out["rebuild_s"], out["rebuild_runs_s"], _ = median_s(rebuild, runs)

    time.sleep(stamps.SETTLED_NS / 1e9)  # only a plan of settled files is kept
    check = api.make_plan(manifest)
    assert not check.plan.actions, [a.reason for a in check.plan.actions[:5]]
    kept = list((check.manifest.library / ".mlib" / "cache").glob("plan-*.pickle"))
    assert kept, "the plan was not kept"

    def forget() -> None:
        for path in kept:
            path.unlink(missing_ok=True)

    def command(*args: str, ok: tuple[int, ...] = (0,), cwd_lib: bool = False) -> float:
        # --root alone: run in the library, where no mlib.yaml is found to be read
        argv = [mlib, "--root", str(lib), *args] if cwd_lib else [mlib, "-m", str(manifest), *args]
        took, _ = timed(partial(run_quiet, argv, ok=ok, cwd=lib if cwd_lib else None))
        return took

    # no-op plan, computed in full
    plans = [phases(manifest) for _ in range(full_runs)]
    out["phases_s"] = {k: statistics.median(r[k] for r in plans) for k in plans[0]}
    out["manifest_full_read_s"], _, _ = median_s(partial(full_read, manifest), full_runs)
    full_plans = []
    for _ in range(full_runs):
        forget()
        full_plans.append(command("plan"))
    out["plan_full_s"] = statistics.median(full_plans)
    # no-op plan, replayed (the plan is kept again by the first command)
    command("plan")
    out["plan_s"], out["plan_runs_s"], _ = median_s(partial(command, "plan"), max(runs, 5))

    # status: replayed, then computed in full
    out["status_s"], _, _ = median_s(partial(command, "status"), max(runs, 5))
    full_status = []
    for _ in range(full_runs):
        forget()
        full_status.append(command("status"))
    out["status_full_s"] = statistics.median(full_status)

    # list by tag
    tags = model_tags(n)
    expected = {t: sum(set(t) <= set(m) for m in tags) for t in (ONE_TAG, TWO_TAGS)}
    query_s: dict[str, float] = {}
    for t in (ONE_TAG, TWO_TAGS):
        query_s["+".join(t)], _, rows = median_s(partial(api.query, lib, Query(tags=t)), 5)
        if len(rows) != expected[t]:
            raise SystemExit(f"plan_bench: query {t} gave {len(rows)}, not {expected[t]}")
    out["query_s"] = query_s
    out["tag_matches"] = {"+".join(t): c for t, c in expected.items()}
    listed = run_quiet([mlib, "-m", str(manifest), "list", "--tag", ONE_TAG[0]]).stdout
    if not listed.rstrip().endswith(f"{expected[ONE_TAG]} models"):
        raise SystemExit(f"plan_bench: mlib list printed {listed[-200:]!r}")
    out["list_s"], _, _ = median_s(partial(command, "list", "--tag", ONE_TAG[0]), runs)
    out["list_root_s"], _, _ = median_s(
        partial(command, "list", "--tag", ONE_TAG[0], cwd_lib=True), runs
    )

    report(out)
    return out


def report(out: dict[str, Any]) -> None:
    n, apps, runs = out["n"], out["apps"], out["runs"]
    print(f"{n} models, {apps} app(s), {out['links']} links; warm; median of {runs} unless said")
    print(f"  (computed in full and full reads: median of {out['full_runs']})")
    print(f"  {'index rebuild':<32} {out['rebuild_s']:7.3f} s")
    print("  no-op plan computed in full (as after any change), in process:")
    for name, value in out["phases_s"].items():
        print(f"    {name:<30} {value:7.3f} s")
    print(
        f"    {'(manifest, full read)':<30} {out['manifest_full_read_s']:7.3f} s  (after an edit)"
    )
    print(f"  {'mlib plan, plan cache removed':<32} {out['plan_full_s']:7.3f} s")
    print(f"  {'mlib plan, replayed':<32} {out['plan_s']:7.3f} s  (median of {max(runs, 5)})")
    print(f"  {'mlib status, replayed':<32} {out['status_s']:7.3f} s  (median of {max(runs, 5)})")
    print(f"  {'mlib status, plan cache removed':<32} {out['status_full_s']:7.3f} s")
    for tags, value in out["query_s"].items():
        label = f"api.query tag {tags} ({out['tag_matches'][tags]})"
        print(f"  {label:<32} {value * 1000:7.1f} ms (median of 5)")
    print(f"  {'mlib -m M list --tag base':<32} {out['list_s']:7.3f} s")
    print(f"  {'mlib --root L list --tag base':<32} {out['list_root_s']:7.3f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mlib at scale: rebuild, plan, status, list")
    parser.add_argument("n", type=int)
    parser.add_argument(
        "--apps",
        type=int,
        nargs="+",
        default=[1],
        help="app target counts, measured in turn on one library (e.g. --apps 1 3)",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each measurement")
    parser.add_argument(
        "--full-runs", type=int, metavar="F", help="timed runs of full plans and reads (--runs)"
    )
    parser.add_argument("--keep", type=Path, help="build in DIR and keep it (reused next time)")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the figures here (a list)"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or min(args.apps) < 1 or args.runs < 1 or (args.full_runs or 1) < 1:
        parser.error("N, --apps and --runs must be at least 1")
    root = args.keep or Path(tempfile.mkdtemp(prefix="mlib-plan-bench-"))
    try:
        results = [bench(root, args.n, a, args.runs, args.full_runs) for a in sorted(args.apps)]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.pop("MLIB_MANIFEST", None)
    sys.exit(main())
