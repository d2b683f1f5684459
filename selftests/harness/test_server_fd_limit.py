"""The Python server under the kernel's limit on file descriptors in flight.

An fd sent over a unix socket counts against the sender's RLIMIT_NOFILE until the
receiver reads it; past that, sendmsg fails with ETOOMANYREFS, and no poll event says when
it would succeed again, so the server queues the message (with a dup of its fd) and
retries on a short timer (ivflat.servers.connection). Root is exempt (CAP_SYS_RESOURCE), so the
server runs here in a child process as ``nobody`` (setpriv) with a low RLIMIT_NOFILE,
while this process plays clients that read nothing until the server has had to queue.

Why queueing here can only be ETOOMANYREFS: the messages are 8 bytes each, about 1 KiB per
client in all, far below a socket buffer, so EAGAIN never happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.host import timeouts
from ivflat.host.paths import REPO, child_env
from ivflat.protocol.ivshmem import MessageReader, recv_msg

PEERS, VECTORS = 4, 8
# In flight if nobody reads: PEERS * (1 + PEERS * VECTORS) = 132 fds. Held by the server:
# ~PEERS * (VECTORS + 1) + 10, plus a dup per queued fd; 100 lies between.
NOFILE = 100

_CHILD = """
import json, resource, sys
from ivflat.servers.python_server import IvshmemServer

sock, peers, vectors, nofile = sys.argv[1], *map(int, sys.argv[2:5])
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
with IvshmemServer(sock, shm_size=4096, vectors=vectors) as srv:
    print("ready", flush=True)
    sys.stdin.readline()  # the clients are connected
    srv.wait_accepted(peers)
    for _ in range(2):
        print(json.dumps({"queued": sum(srv.queued(p) for p in srv.peers),
                          "send_errors": srv.send_errors}), flush=True)
        sys.stdin.readline()  # then: the clients have read everything
"""


def _unprivileged(workdir: Path, env: dict[str, str]) -> tuple[list[str], str]:
    """How to run the server without the exemption: the setpriv prefix and a Python that
    user can run. *workdir* is made usable for it, and the harness is copied beside it
    (PYTHONPATH in *env*): the checkout, like a pyenv Python, may sit in a home only root
    can read, and then the test would skip exactly where CI runs it."""
    if os.geteuid() != 0:
        return [], sys.executable  # already unprivileged (assuming no CAP_SYS_RESOURCE)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("util-linux's setpriv is missing: cannot drop root for this test")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to run the server as")
    workdir.parent.chmod(0o711)
    os.chown(workdir, nobody.pw_uid, nobody.pw_gid)
    lib = workdir.parent / "lib"
    shutil.copytree(REPO / "fixtures" / "ivflat", lib / "ivflat",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in [lib, *lib.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    env["PYTHONPATH"] = str(lib)
    prefix = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
              "--clear-groups", "--"]
    errors = []
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        res = subprocess.run([*prefix, python, "-c", "import ivflat.servers.python_server"],
                             env=env, cwd=workdir, capture_output=True, text=True,
                             timeout=timeouts.scaled(None, timeouts.START))
        if res.returncode == 0:
            return prefix, python
        errors.append(f"{python}: {res.stderr.strip()[-200:]}")
    pytest.skip(f"'nobody' cannot run the harness with any Python: {'; '.join(errors)}")


def _expected(peer: int) -> list[tuple[int, bool]]:
    """(value, has fd) of every message client *peer* gets, in QEMU's order."""
    msgs = [(0, False), (peer, False), (-1, True)]
    msgs += [(p, True) for p in range(peer) for _ in range(VECTORS)]  # earlier peers
    msgs += [(peer, True)] * VECTORS  # its own
    msgs += [(p, True) for p in range(peer + 1, PEERS) for _ in range(VECTORS)]  # later
    return msgs


def test_etoomanyrefs_is_retried_until_every_fd_is_delivered(short_tmp: Path) -> None:
    """With more fds in flight than its RLIMIT_NOFILE allows, the server queues what
    sendmsg refuses (ETOOMANYREFS) instead of taking the client for gone, and once the
    clients read, every client gets every message with its fd, in QEMU's order, with
    nothing left queued and no send error."""
    workdir = short_tmp / "srv"
    workdir.mkdir()
    env = {**child_env(), "PYTHONPATH": str(REPO / "fixtures")}
    prefix, python = _unprivileged(workdir, env)
    sock = workdir / "s.sock"
    child = subprocess.Popen(
        [*prefix, python, "-c", _CHILD, str(sock), str(PEERS), str(VECTORS),
         str(NOFILE)], env=env, cwd=workdir, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients: list[socket.socket] = []
    try:
        assert child.stdin is not None and child.stdout is not None

        def ask(line: str | None = None) -> str:
            if line is not None:
                child.stdin.write(line + "\n")  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
            got = child.stdout.readline()  # type: ignore[union-attr]
            assert got, f"server child ended: {child.stderr.read()}"  # type: ignore[union-attr]
            return got.strip()

        assert ask() == "ready"
        for _ in range(PEERS):
            clients.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            clients[-1].connect(str(sock))
        state = json.loads(ask("connected"))
        assert state["queued"] > 0 and not state["send_errors"], (
            f"nothing queued for a retry (server state {state}): ETOOMANYREFS taken for a "
            "gone peer, or the server runs with CAP_SYS_RESOURCE")
        for peer, client in enumerate(clients):
            reader = MessageReader(client)
            got = []
            for _ in _expected(peer):
                value, fd = recv_msg(reader)
                got.append((value, fd is not None))
                if fd is not None:
                    os.close(fd)
            assert got == _expected(peer), f"client {peer}"
        assert json.loads(ask("read")) == {"queued": 0, "send_errors": []}
        _, err = child.communicate(timeout=timeouts.scaled(None, timeouts.START))
        assert child.returncode == 0, err
    finally:
        for client in clients:
            client.close()
        if child.poll() is None:
            child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout, child.stderr):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
