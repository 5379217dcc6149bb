"""Killing ``mlib apply`` at any moment and running it again converges (DESIGN.md §6).

A real ``mlib apply -y`` subprocess imports five local models (big single files, copied and moved,
and two multi-file bundles, one copied and one moved) and is SIGKILLed at many points: at delays
spread over an unkilled run, and the moment given files appear in ``.mlib/staging``, the library
or the app folder. After every kill:

(a) each model folder in the library is complete: metadata.json parses and lists exactly the files
    present, with their sizes and sha256; a partial folder exists only inside ``.mlib/staging``;
(b) every source file still has its bytes; a ``move`` source is gone only if its model is complete;
    the app folder holds nothing but correct links;
(c) a second, unkilled apply exits 0, then ``plan --detailed-exitcode``, ``status`` and ``verify``
    exit 0, and the ComfyUI folder holds exactly the expected links.

The other tests kill at exact points with a hook (a tiny ``python -c`` wrapper around the real
``mlib`` entry point that SIGKILLs its own process right after one given function returns).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from scenario import Scenario, StillBroken, app_entries, crash_models, mlib, mlib_popen

pytestmark = pytest.mark.slow

#: Kills at delays spread over an unkilled run: a few during start-up, the rest while it works.
STARTUP_KILLS = 2
WORK_KILLS = 6
RUN_TIMEOUT = 60
POLL = 0.0005
#: Size unit of the models for the exact-point kills, which need no long run.
SMALL = 64 << 10


def _staging(sc: Scenario, model_id: str) -> Path:
    return sc.library / ".mlib" / "staging" / model_id.replace("/", "__")  # the executor's naming


def run_and_kill(
    sc: Scenario, *, delay: float | None = None, when: Callable[[], bool] | None = None
) -> bool:
    """Start ``mlib apply -y`` and SIGKILL it after ``delay`` seconds or once ``when()`` holds.
    Returns whether it finished on its own first (then it must have succeeded)."""
    proc = mlib_popen(sc.manifest, "apply", "-y")
    started = time.monotonic()
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            if (delay is not None and elapsed >= delay) or (when is not None and when()):
                break
            if elapsed > RUN_TIMEOUT:
                pytest.fail(f"mlib apply ran for more than {RUN_TIMEOUT} s")
            time.sleep(POLL)
        finished = proc.poll() is not None
        if not finished:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        _, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    if proc.returncode == 0:
        return True  # it finished on its own, possibly in the instant before the kill
    assert not finished, f"the apply that was not killed failed:\n{stderr}"
    assert proc.returncode == -signal.SIGKILL, stderr
    return False


def timed_reference_run(sc: Scenario, first_import: str) -> tuple[float, float]:
    """An unkilled apply: (seconds until the first import's staging folder appeared, seconds to
    the end)."""
    proc = mlib_popen(sc.manifest, "apply", "-y")
    started = time.monotonic()
    seen: float | None = None
    try:
        while proc.poll() is None and time.monotonic() - started < RUN_TIMEOUT:
            if seen is None and _staging(sc, first_import).exists():
                seen = time.monotonic() - started
            time.sleep(POLL)
        ended = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, f"unkilled apply failed:\n{stdout}{stderr}"
    return (seen if seen is not None else ended / 2), ended


def problems_after_kill(sc: Scenario) -> list[str]:
    """(a) and (b); the app folder may be partly linked, but only with correct links."""
    problems = sc.library_problems() + sc.source_problems()
    expected = sc.expected_links()
    for rel, kind in app_entries(sc.models_dir).items():
        target = expected.get(rel)
        if target is None or kind != "symlink":
            problems.append(f"unexpected {kind} {rel} in the app folder")
        elif os.path.realpath(sc.models_dir / rel) != os.path.realpath(target):
            problems.append(f"{rel} does not show {target}")
    return problems


def check_converges(sc: Scenario, label: str) -> None:
    """(c): apply again, then everything says the library is exactly the manifest."""
    r = mlib(sc.manifest, "apply", "-y")
    assert r.returncode == 0, f"re-apply after {label}:\n{r.stdout}{r.stderr}"
    assert "Traceback" not in r.stderr
    # plan and status only read; verify also writes the stat cache (SQLite in WAL mode lets
    # readers and one writer share the index), so the three run side by side to save time.
    procs = {
        cmd: mlib_popen(sc.manifest, *cmd.split())
        for cmd in ("plan --detailed-exitcode", "status", "verify")
    }
    out = {cmd: (p.communicate(timeout=RUN_TIMEOUT), p.returncode) for cmd, p in procs.items()}
    for cmd, ((stdout, stderr), code) in out.items():
        assert code == 0, f"{cmd} after the re-apply ({label}) exited {code}:\n{stdout}{stderr}"
        assert "Traceback" not in stderr
    assert out["plan --detailed-exitcode"][0][0].startswith("No changes.")
    assert out["status"][0][0].startswith("In sync")
    assert out["verify"][0][0].strip().endswith("0 mismatches")
    problems = sc.library_problems() + sc.source_problems() + sc.app_problems()
    assert not problems, f"after the re-apply ({label}):\n" + "\n".join(problems)
    missing = [m.id for m in sc.models if not sc.model_folder(m).is_dir()]
    assert missing == [], f"missing after the re-apply ({label})"
    assert sc.staging_entries() == [], "staging leftovers were not cleared"


@dataclass(frozen=True)
class Kill:
    """One kill and what stood on disk right after it."""

    label: str
    finished_first: bool
    staging: tuple[str, ...]
    models: int
    links: int

    def __str__(self) -> str:
        what = "finished before the kill" if self.finished_first else "killed"
        found = f"staging {list(self.staging)}; {self.models} models; {self.links} links"
        return f"{self.label}: {what}; {found}"


def test_killing_apply_at_any_moment_then_applying_again_converges(tmp_path: Path) -> None:
    models = crash_models()
    first, moved_lora, encoder, bundle, moved_bundle = models
    assert moved_lora.mode == "move" and moved_bundle.mode == "move" and bundle.is_folder

    # An unkilled run in its own copy: it passes every check, and it times a run.
    reference = Scenario(tmp_path / "reference", models).write()
    work_starts, duration = timed_reference_run(reference, first.id)
    check_converges(reference, "an unkilled run")
    for m in models:  # a finished move leaves no source file behind
        if m.mode == "move":
            left = [f.rel for f in m.files if reference.source_path(m, f).exists()]
            assert left == [], f"{m.source}: moved, yet still has {left}"
    reference.remove()

    points: list[tuple[str, float | None, Callable[[Scenario], bool] | None]] = []
    for i in range(STARTUP_KILLS):
        delay = work_starts * (i + 0.5) / STARTUP_KILLS
        points.append((f"{delay:.3f} s (start-up)", delay, None))
    for i in range(WORK_KILLS):
        delay = work_starts + (duration - work_starts) * (i + 0.5) / WORK_KILLS
        points.append((f"{delay:.3f} s", delay, None))
    events: list[tuple[str, Callable[[Scenario], bool]]] = [
        ("the first import's staging folder appears", lambda sc: _staging(sc, first.id).exists()),
        ("the bundle's unet/ appears in staging", lambda sc: (_staging(sc, bundle.id) / "unet").exists()),
        ("the encoder's metadata.json is staged", lambda sc: (_staging(sc, encoder.id) / "metadata.json").exists()),
        ("the moved LoRA's folder appears", lambda sc: sc.model_folder(moved_lora).is_dir()),
        ("the moved bundle's folder appears", lambda sc: sc.model_folder(moved_bundle).is_dir()),
        ("the first link appears in ComfyUI", lambda sc: bool(app_entries(sc.models_dir))),
    ]  # fmt: skip
    points += [(label, None, cond) for label, cond in events]

    kills: list[Kill] = []
    for n, (label, after, cond) in enumerate(points):
        sc = Scenario(tmp_path / f"kill{n:02d}", models).write()
        when = None if cond is None else (lambda c=cond, s=sc: c(s))
        finished = run_and_kill(sc, delay=after, when=when)
        kill = Kill(
            f"kill at {label}",
            finished,
            tuple(sc.staging_entries()),
            sum(sc.model_folder(m).is_dir() for m in models),
            len(app_entries(sc.models_dir)),
        )
        kills.append(kill)
        problems = problems_after_kill(sc)
        assert not problems, f"right after the {kill}:\n" + "\n".join(problems)
        check_converges(sc, kill.label)
        sc.remove()

    # The kills must have hit the moments that matter, or this test proved little. (The timed
    # kills land where the load of the machine puts them; the kills on events are exact.)
    summary = f"unkilled run: work from {work_starts:.3f} s to {duration:.3f} s\n" + "\n".join(
        f"  {k}" for k in kills
    )
    timed = kills[: STARTUP_KILLS + WORK_KILLS]
    assert any(not k.finished_first and (k.staging or k.models) for k in timed), (
        "no timed kill fell while apply worked:\n" + summary
    )
    assert any(k.staging for k in kills), "no kill interrupted an import:\n" + summary
    assert any(0 < k.models < len(models) for k in kills), "none between imports:\n" + summary
    assert any(k.models == len(models) and k.links < len(models) for k in kills), (
        "none between the imports and the last link:\n" + summary
    )


# --- kills at exact points --------------------------------------------------------------------

#: Runs the real CLI after wrapping ``module.func`` so that the process SIGKILLs itself right after
#: a call for which ``condition`` (a Python expression over ``args``) holds.
HOOK = """
import os, signal, sys
from pathlib import Path
import {module} as _m
_orig = _m.{func}
def _hook(*args, **kwargs):
    result = _orig(*args, **kwargs)
    if {condition}:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
_m.{func} = _hook
from reconciler.cli import main
main(prog_name="mlib")
"""


def apply_killed_at(sc: Scenario, module: str, func: str, condition: str) -> None:
    code = HOOK.format(module=module, func=func, condition=condition)
    r = subprocess.run(
        [sys.executable, "-c", code, "-m", str(sc.manifest), "apply", "-y"],
        cwd=sc.folder,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert r.returncode == -signal.SIGKILL, f"the hook never fired:\n{r.stdout}{r.stderr}"


def _kill_after_rename_of(sc: Scenario, slug: str) -> None:
    # The executor fsyncs the model's parent folder right after renaming the staged model into
    # place, and only then removes a moved source: kill there.
    apply_killed_at(sc, "reconciler.fsops", "fsync_dir", f"(Path(args[0]) / {slug!r}).is_dir()")


@pytest.mark.parametrize("slug", ["moved_lora", "moved_bundle"])
def test_a_kill_between_the_rename_and_the_removal_of_a_moved_source_loses_nothing(
    tmp_path: Path, slug: str
) -> None:
    sc = Scenario(tmp_path, crash_models(SMALL)).write()
    model = next(m for m in sc.models if m.slug == slug)
    _kill_after_rename_of(sc, slug)
    assert sc.model_folder(model).is_dir()
    assert all(sc.source_path(model, f).exists() for f in model.files), "removed too early?"
    assert not problems_after_kill(sc)
    check_converges(sc, f"the kill after {slug} was renamed into place")


@pytest.mark.parametrize("slug", ["moved_lora", "moved_bundle"])
def test_a_move_interrupted_after_the_rename_is_finished_by_the_next_apply(
    tmp_path: Path, slug: str
) -> None:
    sc = Scenario(tmp_path, crash_models(SMALL)).write()
    model = next(m for m in sc.models if m.slug == slug)
    _kill_after_rename_of(sc, slug)
    check_converges(sc, f"the kill after {slug} was renamed into place")
    left = [str(sc.source_path(model, f)) for f in model.files if sc.source_path(model, f).exists()]
    if left:
        raise StillBroken(f"the moved source is still there after apply converged: {left}")


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_copy_link_interrupted_mid_copy_leaves_nothing_in_the_app_folder(
    tmp_path: Path, what: str
) -> None:
    sc = Scenario(tmp_path, crash_models(SMALL)).write(link="copy")
    # _copy_content copies one file of a link; a folder link copies its files one by one.
    condition = "'/diffusers/' in str(args[1])" if what == "folder" else "True"
    apply_killed_at(sc, "reconciler.fsops", "_copy_content", condition)
    r = mlib(sc.manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    found = app_entries(sc.models_dir)
    top = {rel.split("/")[0] + "/" + rel.split("/")[1] for rel in found}
    assert set(sc.expected_links()) <= top, "a link is missing"
    if top != set(sc.expected_links()):
        raise StillBroken(f"left in the app folder: {sorted(top - set(sc.expected_links()))}")
