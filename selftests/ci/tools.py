"""Helpers of the ci/ self-tests: start a tool, wait for its events, Ctrl-C it, and check
that nothing it started is left (found through /proc: procps may not be installed).

Every wait is bounded and scaled by ``$IVSHMEM_TIMEOUT_SCALE``, as the tools' own waits.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ivflat.ci.gitrepo import FIXED_ENV
from ivflat.ci.proc import STOP_GRACE
from ivflat.device.board import DEVICE_SOURCE
from ivflat.host.paths import REPO
from ivflat.host.reaper import pids_with_env
from ivflat.host.timeouts import scaled, wait_for
from selftests.inner import INNER_OPTS

BISECT = REPO / "ci" / "bisect"
VALIDATE = REPO / "ci" / "validate-patch"
BUILD_QEMU = REPO / "ci" / "build-qemu"
SOAK = REPO / "ci" / "soak"
GATE = Path(__file__).resolve().with_name("compile_gate.py")
MARKER_VAR = "IVSHMEM_TEST_CI_MARKER"
History = dict[str, Any]  # the synthetic history: repo, commit ids, work clone path
# What the tools run as the suite in most self-tests: the IVPOSITION tests, named by their
# module (the whole catalogue collected only to deselect the rest proves nothing more; the
# default, the catalogue, is what the tests that name no module get).
IVPOSITION = ["qtests/test_registers.py", "-k", "test_ivposition", *INNER_OPTS]
TOOL_TIMEOUT = 3000.0  # a whole bisect on a loaded machine (x scale)
EVENT_TIMEOUT = 900.0  # until a progress event of a tool (x scale)


# A brand-new machine has no git identity: the tests' own commits carry the tools' one.
GIT_IDENTITY = {k: v for k, v in FIXED_ENV.items() if k.endswith(("_NAME", "_EMAIL"))}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env={**os.environ, **GIT_IDENTITY}).stdout.strip()


def repo_state(repo: Path) -> tuple[str, ...]:
    """Everything a tool must leave as it found it in the user's repository: HEAD, the work
    tree and index, worktrees, refs, the stash, the object count and .git's entries."""
    gitdir = repo / ".git"
    return (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain"),
            git(repo, "worktree", "list", "--porcelain"),
            " ".join(sorted(p.name for p in gitdir.iterdir())),
            git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
            git(repo, "stash", "list"),
            # objects (loose and packed); not "garbage": a concurrent reader's temp file
            "\n".join(ln for ln in git(repo, "count-objects", "-v").splitlines()
                      if not ln.startswith(("garbage", "size-garbage"))),
            (gitdir / "index").read_bytes().hex())


def fake_qemu_repo(path: Path, device: bool = False) -> Path:
    """Just enough of a QEMU tree for the tools to accept it and for ci/build-qemu to
    decline it at once (exit 125: no hw/misc/ivshmem-flat.c, or with *device* one no wiring
    variant applies to) -- nothing is ever built. Two commits."""
    env = dict(os.environ, **FIXED_ENV)
    files = ["configure", "hw/misc/meson.build", "hw/arm/meson.build"]
    if device:
        files.append(DEVICE_SOURCE)
    for rel in files:
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(f"# {rel}\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", "-C", str(path), *cmd], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    (path / "hw/misc/meson.build").write_text("# two\n")
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-a", "-m", "two"], check=True,
                   env=env)
    return path


PREBUILT_CONFIGURE = rf"""#!/bin/sh
# A stand-in for QEMU's configure (ci/ self-tests): ci/build-qemu runs it in the build dir.
src=$(cd "$(dirname "$0")" && pwd)
cat > build.ninja <<EOF
rule cc
  command = cc -MD -MF \$out.d -O2 -Wall -c \$in -o \$out
  depfile = \$out.d
  deps = gcc
rule cp
  command = cp \$in \$out
build device.o: cc $src/{DEVICE_SOURCE}
build qemu-system-arm: cp @QEMU@ | device.o
build contrib/ivshmem-server/ivshmem-server: cp /bin/true | device.o
build contrib/ivshmem-client/ivshmem-client: cp /bin/true | device.o
EOF
ninja -t compdb cc > compile_commands.json  # as meson writes it: ci/build-qemu reads it
"""
DEVICE_C = 'const char *ivshmem_flat_property = "x-bus-address-iomem";\n'


def prebuilt_qemu_repo(path: Path, qemu: Path) -> Path:
    """A QEMU tree that ci/build-qemu --in-place builds in a second: its configure writes a
    build.ninja that compiles the device source (one real C file, so a series that breaks
    it is a real compile error; -Wall as QEMU's, so a series can add a warning) with its
    compile_commands.json, and copies the prebuilt *qemu* as qemu-system-arm
    (ivshmem-server/-client are /bin/true: the tests run on it must not use them). It
    carries the wiring's property, so no wiring patch is applied. One commit."""
    env = dict(os.environ, **FIXED_ENV)
    for rel, text in (("configure", PREBUILT_CONFIGURE.replace("@QEMU@", str(qemu))),
                      (DEVICE_SOURCE, DEVICE_C), ("hw/arm/meson.build", "\n")):
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    (path / "configure").chmod(0o755)
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", "-C", str(path), *cmd], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    return path


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries *marker*: everything a tool started."""
    return pids_with_env(MARKER_VAR, marker)


def processes_mentioning(text: str) -> list[str]:
    """Command lines (from /proc) that contain *text*, e.g. a work clone's path. Only of
    processes under our own root: a run in a chroot on the same machine (a fresh root
    checking the README's commands) has paths that read the same and are not ours. The
    roots are compared as inodes: readlink() of a root outside a chroot reads "/" there,
    like the chroot's own (seen: a host's ci/bisect counted as a leftover of a chroot's)."""
    found = []
    me = os.stat("/proc/self/root")
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            with contextlib.suppress(OSError):
                root = os.stat(d / "root")
                if (root.st_dev, root.st_ino) != (me.st_dev, me.st_ino):
                    continue
                args = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
                if text in args:
                    found.append(f"{d.name}: {args}")
    return found


@dataclass
class Tool:
    proc: subprocess.Popen[bytes]
    marker: str


@contextlib.contextmanager
def started_tool(cmd: list[str], env: dict[str, str] | None = None,
                 cwd: Path = REPO) -> Iterator[Tool]:
    """Start a tool with an environment marker (and in its own session, as a shell would).
    Whatever happens in the test, the tool and then every process carrying the marker are
    SIGKILLed (the tools run their children in sessions of their own, the harness runs
    QEMU in one: a process group kill would miss them), and the tool is reaped."""
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, **(env or {}), **{MARKER_VAR: marker}))
    try:
        yield Tool(proc, marker)
    finally:
        if proc.poll() is None:
            proc.kill()
        for _ in range(100):  # each pass kills all it finds; killed processes fork no more
            left = marked_pids(marker)
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        proc.communicate()


def run_tool(cmd: list[str], env: dict[str, str] | None = None,
             cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion (bounded); on timeout or any failure it is killed with
    everything it started."""
    limit = scaled(TOOL_TIMEOUT)
    with started_tool(cmd, env, cwd) as tool:
        try:
            out, err = tool.proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{cmd[1]} still running after {limit:.0f}s")
    text = err.decode(errors="replace")
    sys.stderr.write(text)  # shown by pytest on failure: the tools' progress lines
    return subprocess.CompletedProcess(cmd, tool.proc.returncode,
                                       out.decode(errors="replace"), text)


class Events:
    """What a running tool says: its stderr, and datagrams on a UNIX socket from
    selftests/ci/ready_plugin.py ("test <ppid> <nodeid>": a test body runs, its QEMU up) and
    selftests/ci/compile_gate.py ("compile <ppid> <file>": a compile is held)."""

    def __init__(self, sock_path: Path) -> None:
        self.path = sock_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(sock_path))
        self.stderr = b""

    def close(self) -> None:
        self.sock.close()

    def env(self, gate: Path | None = None) -> dict[str, str]:
        """For the tool: where to announce; with *gate*, compiles go through
        compile_gate.py (held while the file *gate* exists) and miss ccache."""
        env = {"IVSHMEM_TEST_READY_SOCKET": str(self.path)}
        if gate is not None:
            env.update(CCACHE_PREFIX=str(GATE), CCACHE_RECACHE="1", IVSHMEM_TEST_CI_GATE=str(gate))
        return env

    def wait(self, tool: Tool, pattern: str | None = None, kind: str | None = None,
             not_from: int | None = None) -> str:
        """A bounded, event-driven wait (select, no polling) until *pattern* (a regex)
        matches the stderr read so far, or a datagram of *kind* arrives (with *not_from*:
        one not sent by a child of that pid, e.g. from a `git bisect run` step's pytest
        rather than one the tool started itself). Returns the stderr read; WaitTimeout
        quoting it after :data:`EVENT_TIMEOUT` (scaled)."""
        assert tool.proc.stderr is not None
        fd = tool.proc.stderr.fileno()
        came = False  # a datagram of *kind*

        def text() -> str:
            return self.stderr.decode(errors="replace")

        def seen() -> bool:
            return came or bool(pattern and re.search(pattern, text(), re.S | re.M))

        def read(left: float) -> None:
            nonlocal came
            readable = select.select([fd, self.sock.fileno()], [], [], left)[0]
            if fd in readable:
                chunk = os.read(fd, 65536)
                assert chunk, f"the tool exited before {pattern or kind}:\n{text()}"
                self.stderr += chunk
            if self.sock.fileno() in readable:
                what, ppid, _ = (self.sock.recv(4096).decode() + "  ").split(" ", 2)
                if kind and what == kind and (not_from is None or int(ppid) != not_from):
                    came = True

        wait_for(seen, None, lambda: f"{pattern or kind}; the tool said:\n{text()}",
                 base=EVENT_TIMEOUT, block=read)
        return text()


def interrupt(tool: Tool) -> tuple[int, str, str]:
    """Ctrl-C as a terminal sends it (SIGINT to the foreground process group, i.e. the
    tool's); returns the exit status and the rest of stdout/stderr. Bounded by the tools'
    own grace period (they SIGKILL what did not stop in it, and say so)."""
    os.killpg(tool.proc.pid, signal.SIGINT)
    limit = scaled(STOP_GRACE + 60)
    try:
        out, err = tool.proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {limit:.0f}s after SIGINT")
    return tool.proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def no_leftovers(tool: Tool, work: Path) -> None:
    left = marked_pids(tool.marker)
    assert left == [], f"the tool's processes outlived it: {left}"
    mentioning = processes_mentioning(str(work))
    assert mentioning == [], f"processes still at work in {work}: {mentioning}"
