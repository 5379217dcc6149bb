"""One ``apply`` at a time per library (DESIGN.md §6): a second one waits, or fails with one clear
line naming the lock and ``--lock-timeout``, and touches nothing meanwhile.

The lock is held either by this test process itself (``reconciler.lock.library_lock``: exact and
deterministic) or by a real ``mlib apply`` caught holding it and frozen with SIGSTOP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import pytest
from scenario import MiB, Scenario, app_entries, crash_models, mlib, mlib_popen

from reconciler.lock import library_lock

TIMEOUT = 60
SMALL = MiB // 8  # model sizes: the lock, not the bytes, is what these tests are about
WAITING = "waiting for another mlib apply to release"


class Watched:
    """A running process whose stdout and stderr are read on threads, so a test can wait for a
    line on stderr while the process runs, then collect everything once it ends."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(stream, into), daemon=True)
            for stream, into in ((proc.stdout, self.out), (proc.stderr, self.err))
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.err):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no {text!r} on stderr: {self.err} (exit {self.proc.poll()})")
            time.sleep(0.01)

    def finish(self) -> tuple[str, str]:
        """Wait for the end (killing it after TIMEOUT); return its stdout and stderr."""
        try:
            self.proc.wait(timeout=TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=TIMEOUT)
            for t in self._threads:
                t.join(timeout=TIMEOUT)
        return "\n".join(self.out), "\n".join(self.err)


def untouched(sc: Scenario) -> None:
    """Nothing was imported, indexed or linked; every source is as it was."""
    assert sorted(p.name for p in sc.library.iterdir()) == [".mlib"]
    assert sc.staging_entries() == []
    assert app_entries(sc.models_dir) == {}
    assert sc.source_problems() == []
    assert all(sc.source_path(m, f).exists() for m in sc.models for f in m.files)


def in_sync(sc: Scenario) -> None:
    r = mlib(sc.manifest, "plan", "--detailed-exitcode")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("No changes.")
    r = mlib(sc.manifest, "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not sc.library_problems() + sc.source_problems() + sc.app_problems()


def assert_lock_error(stderr: str, lock: Path, pid: int) -> None:
    """Exactly one error line, naming the lock file, its holder and --lock-timeout."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("mlib: error:")]
    assert len(errors) == 1, stderr
    (error,) = errors
    assert str(lock) in error and "--lock-timeout" in error and f"(pid {pid})" in error, error
    # Besides it, at most the notice that it waited; nothing else.
    assert all(line == error or WAITING in line for line in lines), stderr


def test_second_apply_fails_after_its_lock_timeout_while_the_lock_is_held(tmp_path: Path) -> None:
    sc = Scenario(tmp_path, crash_models(SMALL)).write()
    sc.library.mkdir()
    with library_lock(sc.library, timeout=0):
        started = time.monotonic()
        r = mlib(sc.manifest, "apply", "-y", "--lock-timeout", "1", timeout=TIMEOUT)
        waited = time.monotonic() - started
        assert r.returncode == 1, r.stdout + r.stderr
        assert_lock_error(r.stderr, sc.library / ".mlib" / "lock", os.getpid())
        assert 1.0 <= waited < 10, f"it gave up after {waited:.2f} s, not after about 1 s"
        assert "Applied" not in r.stdout
        untouched(sc)
    # Once the lock is free, the same command applies everything.
    r = mlib(sc.manifest, "apply", "-y", "--lock-timeout", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    in_sync(sc)


def test_second_apply_waits_for_the_lock_then_applies(tmp_path: Path) -> None:
    sc = Scenario(tmp_path, crash_models(SMALL)).write()
    sc.library.mkdir()
    with library_lock(sc.library, timeout=0):
        waiter = Watched(mlib_popen(sc.manifest, "apply", "-y", "--lock-timeout", "30"))
        try:
            waiter.wait_for(WAITING)
            time.sleep(0.3)  # it keeps waiting, and does nothing while it waits
            assert waiter.proc.poll() is None
            untouched(sc)
        except BaseException:
            waiter.proc.kill()
            waiter.finish()
            raise
        released = time.monotonic()
    stdout, stderr = waiter.finish()
    assert waiter.proc.returncode == 0, stdout + stderr
    assert time.monotonic() - released < 20
    assert "Traceback" not in stderr
    actions = 2 * len(sc.models) + len(sc.expected_links())  # import + index each, then links
    assert f"Applied {actions} of {actions} actions; 0 failed" in stdout, stdout
    in_sync(sc)


def _catch_holding_the_lock(sc: Scenario) -> subprocess.Popen[str]:
    """Start a real apply and SIGSTOP it as soon as it holds the library lock (it writes its pid
    into the lock file right after taking it)."""
    lock = sc.library / ".mlib" / "lock"
    proc = mlib_popen(sc.manifest, "apply", "-y")
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if lock.read_text().strip() == str(proc.pid):
                os.kill(proc.pid, signal.SIGSTOP)
                return proc
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    proc.kill()
    out, err = proc.communicate(timeout=TIMEOUT)
    pytest.fail(f"never caught the first apply holding the lock:\n{out}{err}")


def test_two_real_applies_one_at_a_time(tmp_path: Path) -> None:
    sc = Scenario(tmp_path, crash_models(SMALL)).write()
    first = _catch_holding_the_lock(sc)
    waiter: Watched | None = None
    try:
        r = mlib(sc.manifest, "apply", "-y", "--lock-timeout", "0.5")
        assert r.returncode == 1, r.stdout + r.stderr
        assert_lock_error(r.stderr, sc.library / ".mlib" / "lock", first.pid)
        assert sc.staging_entries() in ([], [sc.models[0].id.replace("/", "__")])
        assert app_entries(sc.models_dir) == {}

        waiter = Watched(mlib_popen(sc.manifest, "apply", "-y", "--lock-timeout", "60"))
        waiter.wait_for(WAITING)
        os.kill(first.pid, signal.SIGCONT)
        out, first_err = first.communicate(timeout=TIMEOUT)
        assert first.returncode == 0, out + first_err
        out, err = waiter.finish()
        assert waiter.proc.returncode == 0, out + err
        # The first did all the work; the second, planning only once it held the lock, found
        # nothing left to do.
        assert "Applied 0 of 0 actions" in out, out
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate(timeout=TIMEOUT)
        if waiter is not None:
            waiter.finish()
    in_sync(sc)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    sc = Scenario(tmp_path, crash_models(SMALL)).write()
    first = _catch_holding_the_lock(sc)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=TIMEOUT)
    assert (sc.library / ".mlib" / "lock").read_text().strip() == str(first.pid)
    started = time.monotonic()
    r = mlib(sc.manifest, "apply", "-y", "--lock-timeout", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert WAITING not in r.stderr
    assert time.monotonic() - started < 10
    in_sync(sc)
