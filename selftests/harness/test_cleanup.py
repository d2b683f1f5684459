"""Nothing is left behind: after a test passes, fails, hits pytest-timeout, or the runner
gets SIGINT, SIGTERM or SIGHUP (and more of them during its teardown), no QEMU process,
server socket or shm object of it survives, and a failing test leaves its artifacts
(command line, stderr, trace, transcript, reproducer). After a SIGKILL of the runner, its
children die with it (parent-death signal) and the next run sweeps the rest
(ivflat.host.reaper).

Each scenario runs in a pytest subprocess whose environment carries a unique marker; QEMU
inherits it, so leftovers are found through /proc/*/environ even under pytest-xdist. Every
wait is on an event (a pipe the inner test writes when its VM is up, the inner run's exit)
with a scaled bound; on any failure the outer test kills the inner run and everything that
carries its marker, so a broken scenario cannot orphan QEMUs."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ivflat.device import traces
from ivflat.host import reaper, signals, timeouts
from ivflat.host.paths import REPO
from selftests.inner import INNER_OPTS

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]
MARKER_VAR = "IVSHMEM_TEST_CLEANUP_MARKER"  # in the environment of everything an inner run starts

INNER = '''
import os
import select
import subprocess
import pytest
from ivflat.host import timeouts

def _started(vm, host_peer):
    os.write(int(os.environ["IVSHMEM_TEST_STARTED_FD"]), b"up")

def test_passes(vm, dev, host_peer):
    _started(vm, host_peer)
    assert dev.ivposition != host_peer.id

def test_fails(vm, dev, host_peer):
    _started(vm, host_peer)
    dev.ring(dev.ivposition, 0)
    assert False, "deliberate failure"

@pytest.mark.timeout(3, func_only=True)
def test_times_out(vm, host_peer):
    _started(vm, host_peer)
    vm.wait_irq(99, timeout=600)  # never comes: pytest-timeout fires first

def test_interrupted(vm, host_peer):
    _started(vm, host_peer)
    vm.wait_irq(99, timeout=600)  # the outer test signals the runner meanwhile

@pytest.fixture
def slow_teardown():
    """Torn down first (set up last): says so on the started pipe, waits (bounded) until
    the outer test has sent more signals, then starts a child and records its ignored
    signals. A later signal that raised in here would leave no record."""
    yield
    os.write(int(os.environ["IVSHMEM_TEST_STARTED_FD"]), b"td")
    go = int(os.environ["IVSHMEM_TEST_GO_FD"])
    select.select([go], [], [], timeouts.scaled(None, timeouts.START))
    child = subprocess.Popen(["tail", "-f", "/dev/null"])
    try:
        with open(f"/proc/{child.pid}/status") as f:
            sigign = [l.split()[1] for l in f if l.startswith("SigIgn:")][0]
    finally:
        child.kill()
        child.wait()
    with open(os.environ["IVSHMEM_TEST_ORDER_FILE"], "w") as f:
        f.write(sigign)

def test_signals_in_teardown(vm, host_peer, slow_teardown):
    _started(vm, host_peer)
    vm.wait_irq(99, timeout=600)  # the outer test signals the runner meanwhile

def test_records_teardown_order(vm, ivshmem_server):
    def logged(obj, method, tag):
        orig = getattr(obj, method)
        def wrapper(*args, **kw):
            with open(os.environ["IVSHMEM_TEST_ORDER_FILE"], "a") as f:
                f.write(tag + "\\n")
            return orig(*args, **kw)
        setattr(obj, method, wrapper)
    logged(vm, "shutdown", "qemu")
    logged(ivshmem_server, "stop", "server")
'''


@dataclass
class Inner:
    """One inner pytest run and what it left."""

    rc: int | None
    out: str
    pid: int
    marker: str
    tmp: Path
    left: dict[str, list[Any]] = field(default_factory=dict)  # pids, names


def _marked_pids(marker: str) -> list[int]:
    return reaper.pids_with_env(MARKER_VAR, marker)


def _leftovers(inner: Inner) -> dict[str, list[Any]]:
    return {
        "processes": _marked_pids(inner.marker),
        # the inner run's shm objects and temporary directories carry its owner tag
        "shm": sorted(n for n in os.listdir("/dev/shm")
                      if n.startswith(f"{reaper.SHM_PREFIX}-{inner.pid}.")),
        "tmp": sorted(p.name for p in inner.tmp.iterdir()
                      if not p.name.startswith("pytest-of-")),
    }


def _wait_gone(marker: str) -> list[int]:
    """Bounded wait for the marked processes to exit (a parent-death signal is
    asynchronous); returns those still there."""
    with contextlib.suppress(timeouts.WaitTimeout):  # no event tells another's exit: polls
        timeouts.wait_for(lambda: not _marked_pids(marker), None, "", base=timeouts.START)
    return _marked_pids(marker)


def _kill_marked(marker: str) -> None:
    """Last resort of a failed scenario: SIGKILL everything the inner run started."""
    for pid in _marked_pids(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(marker)


def _await(fd: int, what: bytes, proc: subprocess.Popen[str], log: Path) -> None:
    """Read *what* from the inner test's started pipe (bounded); fail with its output."""
    up = timeouts.scaled(None, timeouts.START)
    got = b""
    while len(got) < len(what) and select.select([fd], [], [], up)[0]:
        if not (chunk := os.read(fd, len(what) - len(got))):
            break
        got += chunk
    if got != what:
        proc.kill()
        proc.wait()
        pytest.fail(f"inner test did not say {what!r} within {up}s (got {got!r}):\n"
                    f"{log.read_text()[-4000:]}")


def _deliver(pid: int, sig: signal.Signals) -> None:
    """Send *sig* to *pid* and wait (bounded) until it is no longer pending, i.e. some
    thread of it has taken the signal."""
    os.kill(pid, sig)
    bit = 1 << (sig - 1)

    def taken() -> bool:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        pending = [int(line.split()[1], 16) for line in status
                   if line.startswith(("SigPnd:", "ShdPnd:"))]
        return not any(p & bit for p in pending)

    # no event tells us another process took a signal: wait_for polls
    timeouts.wait_for(taken, None, f"{sig.name} still pending in {pid}", base=timeouts.START,
                      poll=0.01)


def _run_inner(tmp_path: Path, test: str, qemu: Path, *, send: signal.Signals | None = None,
               to_group: bool = False, in_teardown: tuple[signal.Signals, ...] = (),
               nohup: bool = False,
               backend: str = "python", private_tmp: Path | None = None,
               extra_env: dict[str, str] | None = None) -> Inner:
    """Run *test* of INNER in a pytest of its own session. *send*: the signal for the
    runner once its VM is up (*to_group*: for its whole process group, as a terminal's
    Ctrl-C or the ci/ tools' killpg); *in_teardown*: signals for it once its first
    finalizer (slow_teardown) runs, each taken before that finalizer goes on; *nohup*:
    the runner starts with SIGHUP ignored."""
    marker = uuid.uuid4().hex
    (tmp_path / "test_inner.py").write_text(INNER)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "IVSHMEM_TEST_"))}
    # a private, short TMPDIR (UNIX socket paths must stay < 108 bytes): whatever the inner
    # run leaves there is its own, even with other xdist workers busy in /tmp
    private_tmp = private_tmp or Path(tempfile.mkdtemp(prefix="ivfc-"))
    env.update({MARKER_VAR: marker}, IVSHMEM_TEST_STARTED_FD=str(ready_w),
               IVSHMEM_TEST_GO_FD=str(go_r),
               TMPDIR=str(private_tmp), **(extra_env or {}),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "fixtures"),
                                                        env.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           *INNER_OPTS, "-p", "ivflat.plugin.options", f"--rootdir={tmp_path}",
           "-c", str(REPO / "pyproject.toml"),
           f"--qemu={qemu}",
           f"--artifacts-dir={tmp_path / 'art'}", f"--ivshmem-server={backend}",
           f"{tmp_path / 'test_inner.py'}::{test}"]
    if nohup:
        cmd.insert(0, "nohup")
    # the inner output goes to a file, not a pipe: a process the inner run failed to stop
    # would hold a pipe open and turn "something was left" into a hang of this test
    log = tmp_path / "inner.log"
    with open(log, "w") as out_file:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out_file,
                                stderr=subprocess.STDOUT, text=True,
                                pass_fds=[ready_w, go_r], start_new_session=True)
    os.close(ready_w)
    os.close(go_r)
    ok = False
    try:
        if send is not None:
            _await(ready_r, b"up", proc, log)
            if to_group:
                os.killpg(proc.pid, send)
            else:
                proc.send_signal(send)
        if in_teardown:
            _await(ready_r, b"td", proc, log)
            for sig in in_teardown:
                _deliver(proc.pid, sig)
            os.write(go_w, b"go")
        bound = timeouts.scaled(None, timeouts.START) * 3  # below pytest-timeout's 120 s
        try:
            proc.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            alive = _marked_pids(marker)
            proc.kill()
            proc.wait()
            pytest.fail(f"inner pytest still running {bound:.0f}s after "
                        f"{send.name if send else 'its start'} (its processes then: "
                        f"{alive}); output:\n{log.read_text()[-4000:]}")
        inner = Inner(proc.returncode, log.read_text(), proc.pid, marker, private_tmp)
        if send is signal.SIGKILL:
            _wait_gone(marker)
        inner.left = _leftovers(inner)
        ok = True
        return inner
    finally:
        os.close(ready_r)
        os.close(go_w)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not ok:
            _kill_marked(marker)


def _cleanup_tmp(inner: Inner) -> None:
    shutil.rmtree(inner.tmp, ignore_errors=True)


NOTHING: dict[str, list[Any]] = {"processes": [], "shm": [], "tmp": []}


@pytest.mark.parametrize("test,rc,backend", [
    ("test_passes", 0, "python"), ("test_fails", 1, "python"), ("test_times_out", 1, "python"),
    ("test_fails", 1, "qemu"), ("test_times_out", 1, "qemu")])
def test_nothing_left_behind(tmp_path, wired_qemu, test, rc, backend):
    """Whether the inner test passes, fails or hits pytest-timeout, on either server
    backend, the run exits with that test's status and leaves no QEMU, shm object or
    temporary directory: one run must not leak into the next."""
    inner = _run_inner(tmp_path, test, wired_qemu, backend=backend)
    _cleanup_tmp(inner)
    assert inner.rc == rc, inner.out
    assert inner.left == NOTHING, inner.out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: s.name)
@pytest.mark.parametrize("backend", ["python", "qemu"])
def test_nothing_left_after_a_signal(tmp_path, wired_qemu, backend, sig):
    """Ctrl-C, a CI cancel (SIGTERM) or a closed terminal (SIGHUP) mid-test: the same
    orderly teardown (pytest's exit status 2, "interrupted")."""
    inner = _run_inner(tmp_path, "test_interrupted", wired_qemu, send=sig, backend=backend)
    _cleanup_tmp(inner)
    assert inner.rc == 2, inner.out
    assert inner.left == NOTHING, inner.out


def test_ctrl_c_of_the_process_group_reaches_only_pytest(tmp_path, wired_qemu):
    """A terminal's Ctrl-C (SIGINT to the whole foreground group, as the ci/ tools' killpg
    too): QEMU's ivshmem-server runs in a session of its own, so it keeps serving until
    the harness stops it; had the SIGINT reached it, it would exit 0 mid-test and every
    teardown would report "exited with 0"."""
    inner = _run_inner(tmp_path, "test_interrupted", wired_qemu, send=signal.SIGINT,
                       to_group=True, backend="qemu")
    _cleanup_tmp(inner)
    assert inner.rc == 2, inner.out
    assert "exited with" not in inner.out, inner.out
    assert inner.left == NOTHING, inner.out


@pytest.mark.parametrize("nohup", [False, True], ids=["plain", "nohup"])
def test_second_signals_in_teardown_are_caught_and_dropped(tmp_path, wired_qemu, nohup):
    """SIGTERM, then SIGHUP, a Ctrl-C and another SIGTERM while a finalizer runs: none of
    them raises in it (it finishes and records), a child it starts then does not ignore
    them (a caught handler, not SIG_IGN, which exec would pass on), and nothing is left.
    Under nohup SIGHUP stays ignored, for that child too."""
    record = tmp_path / "sigign.txt"
    inner = _run_inner(tmp_path, "test_signals_in_teardown", wired_qemu, send=signal.SIGTERM,
                       in_teardown=(signal.SIGHUP, signal.SIGINT, signal.SIGTERM),
                       nohup=nohup, extra_env={"IVSHMEM_TEST_ORDER_FILE": str(record)})
    _cleanup_tmp(inner)
    assert inner.rc == 2, inner.out
    assert record.exists(), f"the finalizer was cut short:\n{inner.out}"
    ignored = int(record.read_text(), 16)
    assert [s.name for s in signals.STOP_SIGNALS if ignored & 1 << (s - 1)] == \
        (["SIGHUP"] if nohup else []), inner.out
    assert inner.left == NOTHING, inner.out


@pytest.mark.parametrize("backend", ["python", "qemu"])
def test_sigkill_leaves_only_what_the_next_run_sweeps(tmp_path, wired_qemu, backend):
    """SIGKILL of the runner: QEMU and QEMU's ivshmem-server die of their parent-death
    signal (the server unlinks its socket and shm object on that SIGTERM); what is left is
    the test's private socket directory (<tmp>/ivf-<owner>-*), and the next run (here a
    passing test with the same TMPDIR) sweeps it."""
    inner = _run_inner(tmp_path, "test_interrupted", wired_qemu, send=signal.SIGKILL,
                       backend=backend)
    try:
        assert inner.rc == -signal.SIGKILL
        assert inner.left["processes"] == [] and inner.left["shm"] == [], inner.left
        assert [n.startswith(f"{reaper.TMP_PREFIX}-{inner.pid}.")
                for n in inner.left["tmp"]] == [True], inner.left
        nxt = _run_inner(tmp_path, "test_passes", wired_qemu, backend=backend,
                         private_tmp=inner.tmp)
        assert nxt.rc == 0, nxt.out
        assert nxt.left == NOTHING, nxt.out
    finally:
        _cleanup_tmp(inner)


def test_sweep_takes_only_what_dead_owners_left(tmp_path):
    """The start-up sweep kills a process, unlinks a shm object and removes a directory
    tagged with a dead owner, and leaves a live owner's (ours) alone."""
    owner = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    dead = reaper.owner_token(owner.pid)
    victim = subprocess.Popen(["cat"], stdin=subprocess.PIPE,
                              env={**os.environ, reaper.OWNER_VAR: dead})
    owner.communicate()
    shm_dead = Path("/dev/shm") / f"{reaper.SHM_PREFIX}-{dead}-x"
    shm_live = Path("/dev/shm") / f"{reaper.tagged_name(reaper.SHM_PREFIX)}x"
    tmp_dead = tmp_path / f"{reaper.TMP_PREFIX}-{dead}-x"
    tmp_live = tmp_path / f"{reaper.tagged_name(reaper.TMP_PREFIX)}x"
    try:
        for p in (shm_dead, shm_live):
            p.touch()
        for d in (tmp_dead, tmp_live):
            d.mkdir()
        swept = reaper.sweep(tmp_path)
        assert victim.wait(timeout=timeouts.scaled()) == -signal.SIGKILL
        assert not shm_dead.exists() and not tmp_dead.exists()
        assert shm_live.exists() and tmp_live.exists()
        # what this sweep itself took: the dead owner's only (not a count: any other
        # pytest starting meanwhile, an xdist sibling's inner run, sweeps the same
        # leftovers first, rightly; the soak saw 2 of 3 once in 20 runs)
        assert all(dead in s for s in swept), swept
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.communicate()
        for p in (shm_dead, shm_live):
            p.unlink(missing_ok=True)


def test_qemu_stops_before_its_server(tmp_path, wired_qemu):
    """Fixture teardown stops QEMU first and the server after it, so a test never ends
    through the device's server-disconnect path (and QEMU's own shutdown is what is
    judged)."""
    order = tmp_path / "order.txt"
    inner = _run_inner(tmp_path, "test_records_teardown_order", wired_qemu,
                       extra_env={"IVSHMEM_TEST_ORDER_FILE": str(order)})
    _cleanup_tmp(inner)
    assert inner.rc == 0, inner.out
    assert order.read_text().split() == ["qemu", "server"]


def test_failure_leaves_bug_report_material(tmp_path, wired_qemu):
    """A failing test leaves, per VM, its command line, stderr, trace, qtest transcript and
    commands and a reproducer, none empty and each holding what the test did (its DOORBELL
    write, the ring's trace), and the report names them: what an upstream bug report needs."""
    inner = _run_inner(tmp_path, "test_fails", wired_qemu)
    _cleanup_tmp(inner)
    assert inner.rc == 1
    (vmdir,) = (tmp_path / "art").glob("*test_fails/vm0")
    for name in ("cmdline.txt", "stderr.log", "trace.log", "qtest.log", "reproduce.sh",
                 "qtest-commands.txt"):
        assert (vmdir / name).stat().st_size > 0, name
    assert "writel 0x400ff00c" in (vmdir / "qtest-commands.txt").read_text()
    assert traces.INTERRUPT_PEER in (vmdir / "trace.log").read_text()
    assert "command line" in inner.out and "qtest transcript" in inner.out
