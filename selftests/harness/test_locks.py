"""File locks between runs are bounded and name their holder (issue 22).

Why: the firmware build took its flock with no time limit, so a stuck ci/build-images in
one run hung every other run's session set-up silently. ivflat.host.locks.file_lock now
serves the ci/ tools, the firmware build and the probe cache: it waits at most its bound
(scaled) and then says who holds the lock. Judged against a real holder process.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivflat.errors import UserError
from ivflat.host import timeouts
from ivflat.host.locks import LockBusy, file_lock, is_held, owner_lock
from ivflat.host.paths import REPO


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding the flock of ``<tmp>/firmware/.build-images.lock`` (the
    firmware build's when the firmware goes to ``<tmp>/firmware``) until the test ends."""
    path = tmp_path / "firmware" / ".build-images.lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(REPO / "fixtures")!r})
            from pathlib import Path
            from ivflat.host.locks import file_lock
            with file_lock(Path({str(path)!r}), "the test's lock"):
                print("locked", flush=True)
                sys.stdin.read()  # until the test closes stdin
            """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeouts.scaled(None, timeouts.START))
        assert ready and proc.stdout.readline() == "locked\n", "the holder took no lock"
        yield path, proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=timeouts.scaled())
        proc.stdout.close()


def test_a_busy_lock_fails_at_once_naming_its_holder(holder):
    """Without a wait, a lock another process holds fails at once with LockBusy naming its
    pid and command, and LockBusy is a UserError (exit 2, no traceback)."""
    path, proc = holder
    with (pytest.raises(LockBusy, match=rf"in use by another run \(pid {proc.pid}: .*python"),
          file_lock(path, "the lock")):
        pass
    assert issubclass(LockBusy, UserError)


def test_the_wait_for_a_busy_lock_is_bounded_and_names_the_holder(holder):
    """With a wait, a lock held throughout fails after the scaled bound, not before and not
    much later, naming the holder."""
    path, proc = holder
    start = time.monotonic()
    with (pytest.raises(LockBusy, match=rf"still in use by another run \(pid {proc.pid}: "),
          file_lock(path, "the lock", wait=0.2)):
        pass
    assert timeouts.scaled(0.2) <= time.monotonic() - start < timeouts.scaled(0.2) + 5


def test_the_lock_is_taken_once_its_holder_lets_go(holder):
    """The waiter gets the lock when the holder exits, and writes itself in as holder."""
    path, proc = holder
    assert proc.stdin is not None
    proc.stdin.close()  # the holder leaves its block, then exits
    with file_lock(path, "the lock", wait=timeouts.START):
        assert path.read_text().startswith(f"pid {os.getpid()}: ")


def test_the_firmware_build_does_not_wait_forever_for_a_held_lock(holder, tmp_path):
    """build_firmware in a process of its own, its output's firmware lock held by another:
    it gives up after FIRMWARE_WAIT (here scaled down to ~0.6 s), naming the holder,
    instead of hanging the session's set-up. It uses a cache of its own: the lock belongs
    to the output make writes, so a run with another cache (validate-patch's self-test
    runs one inside the suite) still waits instead of racing make in the same tree."""
    path, proc = holder
    env = dict(os.environ, IVSHMEM_IMAGES_OUT=str(path.parent), IVSHMEM_TIMEOUT_SCALE="0.001",
               IVSHMEM_SUITE_CACHE=str(tmp_path / "a-cache-of-its-own"))
    res = subprocess.run(
        [sys.executable, "-c", "from ivflat.host.paths import build_firmware; build_firmware()"],
        env=dict(env, PYTHONPATH=str(REPO / "fixtures")), capture_output=True, text=True,
        timeout=timeouts.scaled(None, timeouts.START))
    assert res.returncode != 0
    assert f"the firmware build still in use by another run (pid {proc.pid}: " in res.stderr, \
        res.stderr[-2000:]


def test_an_owner_lock_is_held_while_its_process_lives(holder, tmp_path):
    """is_held sees another process's lock (the holder's) and our own owner_lock, which a
    second owner_lock refuses at once naming us; once the holder is gone (its lock dropped
    by the kernel) and our file is closed, nothing holds either, and a missing file is not
    held."""
    path, proc = holder
    assert is_held(path)
    mine = tmp_path / "run" / ".owner"
    fh = owner_lock(mine, "the run")
    try:
        assert is_held(mine) and mine.read_text().startswith(f"pid {os.getpid()}: ")
        with pytest.raises(LockBusy, match=rf"the run is owned by another run \(pid {os.getpid()}"):
            owner_lock(mine, "the run").close()
    finally:
        fh.close()
    assert not is_held(mine)
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=timeouts.scaled())
    assert not is_held(path)
    assert not is_held(tmp_path / "no-such-file")
