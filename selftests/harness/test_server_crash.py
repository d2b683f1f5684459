"""Both server backends report a server that dies under a test the same way: ServerError,
from the next wait and from stop(), with the socket and shared memory cleaned up all the
same. The servers come from the suite's ``make_server`` fixture, as in a device test.

How each one dies: QEMU's ivshmem-server is SIGKILLed; the Python server's IO thread
fails on a fault policy that raises (a bug in a test's policy is this failure's real
cause).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable

import pytest

from ivflat.servers.api import ServerBackend, ServerError
from ivflat.servers.faults import Fault
from ivflat.servers.python_server import IvshmemServer
from ivflat.servers.qemu_server import QemuIvshmemServer

SIZE = 64 * 1024


def _broken_policy(index: int) -> Fault | None:
    raise ZeroDivisionError(f"policy bug at connection {index}")


def _crash(srv: ServerBackend) -> str:
    """Make *srv* die; return what its ServerError must say."""
    if isinstance(srv, QemuIvshmemServer):
        assert srv.pid is not None
        os.kill(srv.pid, signal.SIGKILL)
        return "killed by SIGKILL"
    assert isinstance(srv, IvshmemServer)
    srv.set_fault(_broken_policy)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(srv.socket_path))  # the IO thread accepts, asks the policy, dies
    return "IO thread failed: ZeroDivisionError"


@pytest.mark.parametrize("kind", ["python", pytest.param("qemu", marks=pytest.mark.interop)])
def test_dead_server_is_a_server_error(make_server: Callable[..., ServerBackend],
                                       kind: str) -> None:
    """A server that died under a test, either backend, is a ServerError saying how it died,
    from the next wait and from stop(), not a timeout; stop() still removes its socket and
    shared memory, and reports the death once, so the fixture's own stop stays quiet."""
    srv = make_server(kind=kind, shm_size=SIZE)
    sock = srv.socket_path
    shm_path = srv.shm_path if isinstance(srv, QemuIvshmemServer) else None
    says = _crash(srv)
    with pytest.raises(ServerError, match=says):
        srv.wait_peers(1)
    with pytest.raises(ServerError, match=says):
        srv.stop()
    assert not sock.exists(), "stop() of a dead server left its socket"
    assert shm_path is None or not shm_path.exists(), "stop() left the shm object"
    srv.stop()  # reported once: the fixture's own stop at teardown is quiet


@pytest.mark.parametrize("kind", ["python", pytest.param("qemu", marks=pytest.mark.interop)])
def test_stop_of_a_live_server_reports_nothing(make_server: Callable[..., ServerBackend],
                                               kind: str) -> None:
    """The error above is about dying: stopping a healthy server is no error."""
    srv = make_server(kind=kind, shm_size=SIZE)
    assert srv.wait_peers(0) == []
    srv.stop()
