"""Nothing is left behind: after a test passes, fails, hits pytest-timeout or is
interrupted with SIGINT, no QEMU process, server socket or shm object of it survives, and a
failing test leaves its artifacts (command line, stderr, trace, transcript, reproducer).

Each scenario runs in a pytest subprocess whose environment carries a unique marker; QEMU
inherits it, so leftovers are found through /proc/*/environ even under pytest-xdist."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from ivflat.paths import REPO

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]

INNER = '''
import os
import pytest
from ivflat.device import IvshmemFlat

def _started(vm, host_peer):
    os.write(int(os.environ["IVF_STARTED_FD"]), b"up")

def test_passes(vm, host_peer):
    _started(vm, host_peer)
    assert IvshmemFlat(vm).ivposition != host_peer.id

def test_fails(vm, host_peer):
    _started(vm, host_peer)
    IvshmemFlat(vm).ring(IvshmemFlat(vm).ivposition, 0)
    assert False, "deliberate failure"

@pytest.mark.timeout(3)
def test_times_out(vm, host_peer):
    _started(vm, host_peer)
    vm.wait_irq(99, timeout=60)  # never comes: pytest-timeout fires first

def test_interrupted(vm, host_peer):
    _started(vm, host_peer)
    vm.wait_irq(99, timeout=60)  # the outer test sends SIGINT meanwhile
'''


def _marked_pids(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "environ").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def _run_inner(tmp_path: Path, test: str, qemu: Path, interrupt: bool = False,
               backend: str = "python"):
    marker = f"IVF_CLEANUP_MARKER={uuid.uuid4().hex}"
    (tmp_path / "test_inner.py").write_text(INNER)
    ready_r, ready_w = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "IVF_"))}
    # a private, short TMPDIR (UNIX socket paths must stay < 108 bytes): whatever the inner
    # run leaves there is its own, even with other xdist workers busy in /tmp
    private_tmp = Path(tempfile.mkdtemp(prefix="ivfc-"))
    env.update(dict([marker.split("=", 1)]), IVF_STARTED_FD=str(ready_w),
               TMPDIR=str(private_tmp),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "fixtures"),
                                                        env.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           "-p", "ivflat.plugin", f"--rootdir={tmp_path}", "-c", str(REPO / "pyproject.toml"),
           f"--qemu={qemu}",
           f"--keep-artifacts={tmp_path / 'art'}", f"--ivshmem-server={backend}",
           f"{tmp_path / 'test_inner.py'}::{test}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, pass_fds=[ready_w])
    os.close(ready_w)
    try:
        if interrupt:
            # bounded wait for "VM up" from the inner test, then interrupt it
            assert select.select([ready_r], [], [], 30)[0], "inner test never started its VM"
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(ready_r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    leftovers = {
        "processes": _marked_pids(marker.split("=", 1)[1]),
        # QEMU's ivshmem-server objects are named after the creating process (ivflat-PID-)
        "shm": sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"ivflat-{proc.pid}-")),
        "tmp": sorted(p.name for p in private_tmp.iterdir()
                      if not p.name.startswith("pytest-of-")),
    }
    shutil.rmtree(private_tmp, ignore_errors=True)
    return proc.returncode, out, leftovers


@pytest.mark.parametrize("test,rc,backend", [
    ("test_passes", 0, "python"), ("test_fails", 1, "python"), ("test_times_out", 1, "python"),
    ("test_fails", 1, "qemu"), ("test_times_out", 1, "qemu")])
def test_nothing_left_behind(tmp_path, wired_qemu, test, rc, backend):
    code, out, left = _run_inner(tmp_path, test, wired_qemu, backend=backend)
    assert code == rc, out
    assert left == {"processes": [], "shm": [], "tmp": []}, out


@pytest.mark.parametrize("backend", ["python", "qemu"])
def test_nothing_left_after_sigint(tmp_path, wired_qemu, backend):
    code, out, left = _run_inner(tmp_path, "test_interrupted", wired_qemu, interrupt=True,
                                 backend=backend)
    assert code == 2, out  # pytest's "interrupted"
    assert left == {"processes": [], "shm": [], "tmp": []}, out


def test_failure_leaves_bug_report_material(tmp_path, wired_qemu):
    code, out, _ = _run_inner(tmp_path, "test_fails", wired_qemu)
    assert code == 1
    (vmdir,) = (tmp_path / "art").glob("*test_fails/vm0")
    for name in ("cmdline.txt", "stderr.log", "trace.log", "qtest.log", "reproduce.sh",
                 "qtest-commands.txt"):
        assert (vmdir / name).stat().st_size > 0, name
    assert "writel 0x400ff00c" in (vmdir / "qtest-commands.txt").read_text()
    assert "ivshmem_flat_interrupt_peer" in (vmdir / "trace.log").read_text()
    assert "command line" in out and "qtest transcript" in out
