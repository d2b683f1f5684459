"""Self-tests of the machine layer against a real QEMU: a timed-out qtest request does not
shift replies, the stderr fence holds with a reader that lags, a crash or sanitizer report
at shutdown is reported, and server socket paths QEMU's option syntax or sun_path would
break (a comma, more than 107 bytes) still connect.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from pathlib import Path

import pexpect
import pytest

from ivflat.device import board, traces
from ivflat.device.wirings import semantics
from ivflat.host import timeouts
from ivflat.host.reaper import release_all
from ivflat.host.sockpath import too_long
from ivflat.plugin.fixtures import stop_machines
from ivflat.protocol.qtest import QTestTimeout
from ivflat.qemu.driver import IvshmemFlatDriver
from ivflat.qemu.machine import DeviceConfig, GuestMachine, QtestMachine
from ivflat.qemu.machine.output import StderrCapture
from ivflat.qemu.reproducer import write_reproducer
from ivflat.servers.python_server import IvshmemServer

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]


def test_late_reply_of_a_timed_out_request_is_not_the_next_ones(vm):
    """QEMU stopped (SIGSTOP) while a readl waits: the readl times out; once QEMU runs
    again, the next readl gets its own value, not the late reply of the first."""
    a, b = board.SHMEM_ADDR, board.SHMEM_ADDR + 4
    vm.writel(a, 0xAAAA0001)
    vm.writel(b, 0xBBBB0002)
    os.kill(vm.pid, signal.SIGSTOP)
    try:
        with pytest.raises(QTestTimeout, match="late reply will be dropped"):
            vm.qtest.cmd(f"readl 0x{a:x}", timeout=0.2)
    finally:
        os.kill(vm.pid, signal.SIGCONT)
    assert vm.readl(b) == 0xBBBB0002
    assert vm.readl(a) == 0xAAAA0001


def _lagging_reader(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every Machine's stderr reader slow, as on a machine starved of CPU."""
    take = StderrCapture._take_line

    def slow(self: StderrCapture, line: str) -> bool:
        time.sleep(seconds)  # sleep-ok: simulates a reader thread starved of CPU
        return take(self, line)

    monkeypatch.setattr(StderrCapture, "_take_line", slow)


def test_trace_fence_waits_for_a_lagging_reader(vm, dev, monkeypatch):
    """200 register reads, each traced, while the stderr reader lags: after
    sync_traces() every one of their traces is there (the fence waits for a marker QEMU
    writes after them, not for a count of traces that earlier reads can satisfy)."""
    before = len(vm.traces(traces.READ_MMR))
    _lagging_reader(monkeypatch, 0.001)
    for _ in range(200):
        dev.reg(board.INTMASK)
    dev.sync_traces()
    assert len(vm.traces(traces.READ_MMR, sync=False)) == before + 200


def test_stderr_is_fenced_for_assertions(ivshmem_server, launch_vm, monkeypatch, qemu_caps):
    """The realize-time warning QEMU prints without x-irq-qompath (in its wiring's words:
    ivflat.device.wirings) is in stderr_lines() right after launch, even with a lagging reader
    (the flake of test_no_irq_path_means_no_irq_but_device_works)."""
    warning = semantics(qemu_caps.wiring).no_irq_warning
    _lagging_reader(monkeypatch, 0.02)
    vm = launch_vm(ivshmem_server, irq_qompath=None)
    assert any(warning in ln for ln in vm.stderr_lines()), vm.stderr_lines()


def _fake_sanitizer(tmp_path: Path, qemu: Path, epilogue: str) -> Path:
    """A wrapper standing in for a sanitizer build: runs the real QEMU, then does
    *epilogue* as QEMU's exit would (prints a report, dies of a signal)."""
    script = tmp_path / "qemu-wrapper"
    script.write_text(f'#!/bin/sh\n"{qemu}" "$@"\nrc=$?\n{epilogue}\nexit $rc\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.parametrize("epilogue,expect", [
    ('echo "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x1" >&2',
     "AddressSanitizer"),
    ("kill -ABRT $$", "SIGABRT")])
def test_crash_at_shutdown_is_a_test_error(tmp_path, wired_qemu, ivshmem_server, epilogue,
                                           expect):
    """A QEMU that crashes or reports a sanitizer error while quitting fails the test
    (through the fixtures' stop_machines), with the death reason."""
    vm = QtestMachine(_fake_sanitizer(tmp_path, wired_qemu, epilogue), name="vm0",
                      workdir=tmp_path / "vm0",
                      devices=[DeviceConfig(Path(ivshmem_server.socket_path))])
    try:
        vm.launch()
        vm.qmp("query-status")  # QMP up: shutdown quits through it, no signal of ours
    except BaseException:
        vm.shutdown()
        raise
    with pytest.raises(pytest.fail.Exception, match=expect):
        stop_machines([vm])
    assert vm.shutdown_report and "while shutting down" in vm.shutdown_report


def test_clean_shutdown_reports_nothing(vm):
    """A QEMU that quits cleanly when asked leaves no shutdown report: the fixtures turn a
    report into a test error, so a false one would fail every test at teardown."""
    vm.shutdown()
    assert vm.shutdown_report is None


def test_release_all_releases_everything_then_raises():
    """One failing release neither stops the others nor hides the failure."""
    released = []

    def release(i: int) -> None:
        released.append(i)
        if i in (1, 3):
            raise RuntimeError(f"item {i}")

    with pytest.raises(RuntimeError, match="item 1") as info:
        release_all(range(5), release)
    assert released == [0, 1, 2, 3, 4]
    assert "item 3" in "".join(info.value.__notes__)


def _server_at(path: Path) -> IvshmemServer:
    path.parent.mkdir(parents=True, exist_ok=True)
    return IvshmemServer(path).start()


@pytest.mark.parametrize("where", ["comma", "long"])
def test_server_socket_path_qemu_cannot_take_verbatim(short_tmp, launch_vm, where):
    """A socket in a directory named with a comma (QEMU option syntax: ``,,``) and one
    longer than sun_path (connected through /proc/self/fd/N/<name>) both work."""
    if where == "comma":
        path = short_tmp / "a,b" / "srv.sock"
    else:
        path = short_tmp / ("d" * 60) / ("e" * 60) / "srv.sock"
        assert too_long(path)
    server = _server_at(path)
    try:
        vm = launch_vm(server)
        assert IvshmemFlatDriver(vm).ivposition == server.wait_peers(1)[0]
        vm.shutdown()
    finally:
        server.stop()


@pytest.mark.guest
def test_guest_reproducer_runs_on_a_terminal_and_cleans_up(ivshmem_server, wired_qemu,
                                                            firmware_dir, tmp_path):
    """reproduce.sh of a firmware VM (serial on the terminal) boots it on a real pty: QEMU
    stays in the terminal's foreground group (a background one is stopped by SIGTTOU when
    it sets the tty up), and a SIGTERM to the group leaves no shm object or directory."""
    vm = GuestMachine(wired_qemu, name="g", workdir=tmp_path / "g",
                      kernel=firmware_dir / "hello.elf",
                      devices=[DeviceConfig(Path(ivshmem_server.socket_path))],
                      server=ivshmem_server)
    script = write_reproducer(vm, tmp_path / "repro")
    limit = timeouts.scaled(None, timeouts.CONSOLE)
    child: pexpect.spawn[bytes] = pexpect.spawn(
        "sh", [str(script)], timeout=limit,
        env={**os.environ, "IVSHMEM_REPRO_SECONDS": str(int(limit) * 2)})
    assert child.pid is not None
    work = None
    try:
        child.expect(r"reproduce\.sh: working in (\S+) ")
        assert isinstance(child.match, re.Match)
        work = Path(child.match.group(1).decode())
        assert work.is_dir(), work
        child.expect("READY")  # hello booted (its lines interleave with trace lines)
    finally:  # the script's trap cleans up once QEMU (maybe stopped) has gone
        for sig in (signal.SIGTERM, signal.SIGCONT):
            os.killpg(child.pid, sig)
        child.expect(pexpect.EOF)
        child.close(force=True)
    # its own directory, by the name it said: xdist workers' reproducers make others
    # meanwhile (a listing of /dev/shm counted theirs: 2 red runs in 5 under load)
    assert work is not None and not work.exists(), work


@pytest.mark.guest
@pytest.mark.parametrize("access_path", ["cpu"])
def test_cpu_path_reproducer_types_the_console_requests(vm, dev, tmp_path):
    """reproduce.sh of a CpuMachine feeds the recorded access requests to the firmware on
    -serial stdio (not the qtest transcript: two channels cannot share stdin): the replayed
    self-ring reaches the device again and the firmware answers each request."""
    dev.ring(dev.ivposition, 0)
    script = write_reproducer(vm, tmp_path / "repro")
    requests = (tmp_path / "repro" / "console-requests.txt").read_text().splitlines()
    assert requests[-1] == f"{len(requests)} w4 {board.IOMEM_ADDR + board.DOORBELL:x} 0", \
        requests
    limit = timeouts.scaled(None, timeouts.CONSOLE)
    child: pexpect.spawn[bytes] = pexpect.spawn(
        "sh", [str(script)], timeout=limit,
        env={**os.environ, "IVSHMEM_REPRO_SECONDS": str(int(limit) * 2)})
    assert child.pid is not None
    try:
        child.expect(rf"{traces.INTERRUPT_PEER} Interrupting peer ID \d+, vector 0")
        # the last reply's end (trace lines on the same terminal can split its start off)
        child.expect(r"bfar=0x00000000 irqs=\d+\r?\n")
    finally:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            os.killpg(child.pid, sig)
        child.expect(pexpect.EOF)
        child.close(force=True)
