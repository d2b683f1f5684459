"""A hang proven by the CPU it burns (ivflat.host.spin), issue 23.

Why: judged by a wall bound, the known hang eof-mid-greeting costs two 5 s bounds per run
of the catalogue; its tests stop as soon as QEMU's main thread has burnt the spin bound. These pin
what that proof may and may not conclude, with real processes: a spinning one is proven
hung long before the wall bound, a sleeping one never is (its wall bound judges), and one
that exits is waited for as ever.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ivflat.host import spin, timeouts


@pytest.fixture
def child() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def _start(procs: list[subprocess.Popen[bytes]], code: str) -> subprocess.Popen[bytes]:
    procs.append(subprocess.Popen([sys.executable, "-c", code]))
    return procs[-1]


def test_a_spinning_process_is_proven_hung_by_its_cpu_time(child):
    """A main thread in a busy loop: Spinning (a TimeoutError) saying the CPU it burnt, at
    least the scaled spin bound, before the wall bound (huge here) could expire."""
    proc = _start(child, "while True: pass")
    start = time.monotonic()
    with pytest.raises(spin.Spinning, match=r"main thread has burnt [\d.]+s of CPU") as info:
        spin.wait_exit(proc, 600, lambda: "busy", spin=True)
    assert isinstance(info.value, TimeoutError)
    assert spin.main_thread_ns(proc.pid) / 1e9 >= timeouts.scaled(base=spin.SPIN)
    assert time.monotonic() - start < timeouts.scaled(base=timeouts.START)


def test_a_sleeping_process_is_never_called_spinning(child):
    """No CPU burnt, no proof: only the wall bound ends the wait, as a WaitTimeout."""
    proc = _start(child, "import time; time.sleep(600)")
    with pytest.raises(timeouts.WaitTimeout, match=r"asleep"):
        spin.wait_exit(proc, 0.5, lambda: "asleep", spin=True)
    assert spin.spun(proc.pid) is None


def test_without_spin_a_spinning_process_meets_the_wall_bound(child):
    """*spin* False (a QEMU that is up may spend CPU on its work): the wall bound judges."""
    proc = _start(child, "while True: pass")
    with pytest.raises(timeouts.WaitTimeout):
        spin.wait_exit(proc, 2 * spin.SPIN, lambda: "busy")


def test_an_exit_is_waited_for_and_its_status_returned(child):
    """A process that exits by itself: its status, whatever *spin* says."""
    assert spin.wait_exit(_start(child, "raise SystemExit(3)"), None, lambda: "x",
                          spin=True) == 3
