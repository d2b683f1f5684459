"""The fuzzer's speed-ups keep its judgements (issue 23): a standby QEMU, started before
its example drew the server's ids and vectors, comes up with what the example drew and
leaves nothing behind; the idle screen of check_idle tells a spinning process from a
sleeping one (a real process each, no QEMU needed for that)."""

from __future__ import annotations

import statistics
import subprocess
import sys

import pytest

from ivflat.device import board
from ivflat.fuzz import FuzzConfig
from ivflat.fuzz.idle import (
    IDLE_SCREEN,
    IDLE_SUSPECT,
    IDLE_WINDOW,
    SAMPLES,
    cpu_share,
    runnable,
    screen,
)
from ivflat.fuzz.standby import Standbys
from ivflat.host.spin import main_thread_ns
from ivflat.qemu.driver import IvshmemFlatDriver


@pytest.mark.needs_device
@pytest.mark.needs_qtest
def test_a_standby_qemu_comes_up_with_what_its_example_drew(wired_qemu, qemu_caps,
                                                            firmware_dir, short_tmp):
    """Both kinds wait in realize until admitted; the qtest VM then has the id and the
    vectors admitted, the CpuMachine's firmware reads its id through the CPU; closing the
    pool and the pairs stops every QEMU and removes every directory."""
    pool = Standbys(FuzzConfig(binary=wired_qemu, qtest_accel=qemu_caps.qtest_accel,
                               workdir=short_tmp, firmware=firmware_dir))
    pairs, stopped = [], []
    try:
        pool.fill()
        assert sorted(pool.ready) == ["cpu", "qtest"]
        for kind, guest_id, vectors in (("qtest", 7, 2), ("cpu", 0x1234, 0)):
            pair = pool.take(kind)
            assert pair is not None
            pairs.append(pair)
            pair.server.admit([guest_id], vectors)
            pair.vm.wait_ready()
            pair.vm.wait_vectors(guest_id, vectors)
            dev = IvshmemFlatDriver(pair.vm)
            assert dev.io.name == kind and dev.ivposition == guest_id
            assert dev.settled_regs([board.IVPOSITION]) == [guest_id]
        done = pairs.pop(0)
        done.server.stop()
        pool.retire(done.vm, done.dir)  # asked to quit, reaped by the next fill
        assert done.dir.is_dir() and pool.retired
        pool.fill()  # a new pair of each kind, left waiting for close(); the retired stopped
        assert sorted(pool.ready) == ["cpu", "qtest"]
        assert done.vm.exitcode is not None and not done.dir.exists() and not pool.retired
        stopped.append(done)
    finally:
        vms = [p.vm for p in [*stopped, *pairs, *pool.ready.values()]]
        for pair in pairs:
            pair.close()
        pool.close()
    assert all(vm.exitcode is not None for vm in vms) and len(vms) == 4
    assert not list(short_tmp.iterdir())


def _ready(code: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", f"print('ready', flush=True)\n{code}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def _stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()


def test_the_idle_screen_tells_a_spinning_process_from_a_sleeping_one():
    """The screen alone sees the spin (the median of ten screens: on a loaded machine a
    runnable process gets its slices within CFS's period, all but rarely), and so does
    the judging window; a sleeping process uses next to nothing."""
    spin = _ready("while True: pass")
    idle = _ready("import sys; sys.stdin.read()")
    try:
        assert cpu_share(idle.pid, IDLE_SCREEN) < IDLE_SUSPECT
        shares = [cpu_share(spin.pid, IDLE_SCREEN) for _ in range(10)]
        assert statistics.median(shares) >= IDLE_SUSPECT, shares
        assert cpu_share(spin.pid, IDLE_WINDOW) >= IDLE_SUSPECT
    finally:
        _stop(spin, idle)


def test_the_screen_finds_a_spinning_thread_runnable_in_every_sample():
    """The scheduler's view, whatever CPU the spin gets: a spinning process is runnable
    in every sample of every screen, a sleeping one in none; with *main_only*, a process
    whose other thread spins is not (its main thread sleeps), one whose main thread
    spins is."""
    spin = _ready("while True: pass")
    idle = _ready("import sys; sys.stdin.read()")
    vcpu = _ready("import sys, threading\n"
                  "def spin():\n    while True: pass\n"
                  "threading.Thread(target=spin, daemon=True).start()\n"
                  "sys.stdin.read()")
    try:
        assert [screen(spin.pid, IDLE_SCREEN)[1] for _ in range(10)] == [SAMPLES] * 10
        assert [screen(idle.pid, IDLE_SCREEN)[1] for _ in range(10)] == [0] * 10
        assert runnable(vcpu.pid) and not runnable(vcpu.pid, main_only=True)
        assert runnable(spin.pid, main_only=True)
    finally:
        _stop(spin, idle, vcpu)


def test_the_main_loop_clock_sees_the_main_thread_alone() -> None:
    """main_thread_ns: a process whose other thread spins (a vCPU that does not idle) is
    quiet by its main thread's clock and busy by the process's; a spinning main thread is
    busy by both."""
    vcpu = _ready("import sys, threading\n"
                  "def spin():\n    while True: pass\n"
                  "threading.Thread(target=spin, daemon=True).start()\n"
                  "sys.stdin.read()")
    main = _ready("while True: pass")
    try:
        assert cpu_share(vcpu.pid, IDLE_WINDOW) >= IDLE_SUSPECT
        assert cpu_share(vcpu.pid, IDLE_WINDOW, clock=main_thread_ns) < IDLE_SUSPECT
        assert cpu_share(main.pid, IDLE_WINDOW, clock=main_thread_ns) >= IDLE_SUSPECT
    finally:
        _stop(vcpu, main)
