"""Self-tests of the Python server's fault hooks: each Fault changes exactly the messages
it says (ivflat.servers.faults), one-shot or per connection, and a HostPeer refuses a
wrong greeting without leaks. No qemu-system-arm needed.
"""

from __future__ import annotations

import os

import pytest

from ivflat.protocol.ivshmem import IvshmemProtocolError, recv_msg
from ivflat.servers.faults import Fault, FaultKind
from ivflat.servers.peer import HostPeer
from ivflat.servers.python_server import IvshmemServer

from .servertools import SIZE, Raw, greeting


def _faulted(start_server, raw, fault, **kw) -> tuple[IvshmemServer, Raw]:
    srv = start_server(fault=fault, **kw)
    client = raw(srv.socket_path)
    srv.wait_accepted(1)
    return srv, client


@pytest.mark.parametrize("fault,version", [(Fault.WRONG_VERSION, 1),
                                           (Fault(FaultKind.WRONG_VERSION, value=7), 7)])
def test_fault_wrong_version(start_server, raw, fault, version):
    """WRONG_VERSION (1, or the value given) replaces only the version of the greeting; the
    rest follows as usual, then nothing."""
    _, c = _faulted(start_server, raw, fault)
    assert c.take(4) == [*greeting(0, version=version), (0, "eventfd")]
    assert c.quiet()


@pytest.mark.parametrize("fault,shm", [
    (Fault.NO_SHM_FD, None),
    (Fault.WRONG_SIZE_FD, f"memfd:{SIZE // 2}"),
    (Fault(FaultKind.WRONG_SIZE_FD, value=4096), "memfd:4096"),
    (Fault.NON_SHM_FD, "pipe"),
    (Fault.of("non_shm_fd", fd_kind="eventfd"), "eventfd"),
])
def test_fault_bad_shm_fd(start_server, raw, fault, shm):
    """Each bad shared memory fault sends the greeting with that fd instead of the memory
    (none, a memfd of another size, a pipe, an eventfd), the rest as usual."""
    _, c = _faulted(start_server, raw, fault)
    assert c.take(4) == [*greeting(0, shm=shm), (0, "eventfd")]
    assert c.quiet()


@pytest.mark.parametrize("fault,value", [(Fault.SHM_MESSAGE_VALUE, 0),
                                         (Fault.of("shm_message_value", value=5), 5)])
def test_fault_shm_message_value(start_server, raw, fault, value):
    """The real memfd, in a shared memory message that is not -1."""
    _, c = _faulted(start_server, raw, fault)
    assert c.take(4) == [(0, None), (0, None), (value, f"memfd:{SIZE}"), (0, "eventfd")]
    assert c.quiet()


def test_fault_too_many_vectors_also_announced_to_others(start_server, raw):
    """TOO_MANY_VECTORS gives the new peer 65 vectors, one past the device's maximum, and the
    peers already connected are told the same 65: the drop is tested from both sides."""
    srv = start_server()
    first = raw(srv.socket_path)
    srv.wait_accepted(1)
    assert first.take(4) == [*greeting(0), (0, "eventfd")]
    srv.set_fault(Fault.TOO_MANY_VECTORS)
    second = raw(srv.socket_path)
    srv.wait_accepted(2)
    assert second.take(4 + 65) == [*greeting(1), (0, "eventfd"), *[(1, "eventfd")] * 65]
    assert first.take(65) == [(1, "eventfd")] * 65
    assert second.quiet() and first.quiet()
    assert len(srv.vectors_of(1)) == 65


def test_server_wide_70_vectors(start_server, raw):
    """A server of 70 vectors per peer sends all 70 after the greeting, then nothing."""
    _, c = _faulted(start_server, raw, None, vectors=70)
    assert c.take(73) == [*greeting(0), *[(0, "eventfd")] * 70]
    assert c.quiet()


def test_fault_disconnect_unknown_id(start_server, raw):
    """DISCONNECT_UNKNOWN_ID follows the greeting with a disconnect of an id nobody holds
    (the value given, else one no peer has): a message the device must ignore."""
    _, c = _faulted(start_server, raw, Fault(FaultKind.DISCONNECT_UNKNOWN_ID, value=999))
    assert c.take(5) == [*greeting(0), (0, "eventfd"), (999, None)]
    assert c.quiet()
    srv, c2 = _faulted(start_server, raw, Fault.DISCONNECT_UNKNOWN_ID)
    (*_, (bogus, fd)) = c2.take(5)
    assert fd is None and bogus not in (0, *srv.peers)


def test_fault_disconnect_own_id(start_server, raw):
    """DISCONNECT_OWN_ID follows the greeting with a disconnect of the client's own id."""
    _, c = _faulted(start_server, raw, Fault.DISCONNECT_OWN_ID, first_id=3)
    assert c.take(5) == [*greeting(3), (3, "eventfd"), (3, None)]
    assert c.quiet()


def _half_then_silence(c: Raw) -> bytes:
    """The 4 bytes of a cut message, and proof the connection is open and silent."""
    with pytest.raises(TimeoutError, match="partial bytes") as exc:
        recv_msg(c.reader, 0.05)
    assert c.quiet()
    assert not c.reader.eof
    return bytes.fromhex(str(exc.value).rsplit(": ", 1)[1].rstrip(")"))


def test_fault_truncated_aftergreeting(start_server, raw):
    """TRUNCATED sends the first 4 bytes of a message after the greeting and then nothing
    more to that client, with its connection left open; other clients are served as usual."""
    srv, c = _faulted(start_server, raw, Fault(FaultKind.TRUNCATED, value=0x1234))
    assert c.take(4) == [*greeting(0), (0, "eventfd")]
    assert _half_then_silence(c) == (0x1234).to_bytes(8, "little")[:4]
    with HostPeer(srv.socket_path) as other:  # nothing more reaches the cut client
        assert other.id == 1
        srv.wait_peers(2)
    assert c.quiet()


def test_fault_truncated_at_shm_message(start_server, raw):
    """TRUNCATED at the shared memory message sends its first half with the fd, then
    silence: the device sees a message cut where realize waits for it."""
    _, c = _faulted(start_server, raw, Fault(FaultKind.TRUNCATED, at=2))
    assert c.take(2) == [(0, None), (0, None)]
    assert _half_then_silence(c) == b"\xff" * 4
    assert len(c.reader._fds) == 1  # the fd came with the first half


def test_fault_close_midgreeting(start_server, raw):
    """CLOSE_MID_GREETING sends the version and closes: the client sees EOF, the id it was
    given is used up (as QEMU's server would), and it is no peer."""
    srv, c = _faulted(start_server, raw, Fault.CLOSE_MID_GREETING)
    assert c.take(1) == [(0, None)]
    with pytest.raises(IvshmemProtocolError, match="closed"):
        recv_msg(c.reader, 5.0)
    assert srv.peers == []
    with HostPeer(srv.socket_path) as p:
        assert p.id == 1  # the id was consumed, as QEMU's would be


def test_fault_is_one_shot_and_policy_is_per_connection(start_server, raw):
    """A fault hits the next connection only, the one after is served normally, and a policy
    (a function of the connection index) decides per connection: a test breaks exactly
    the client it means to."""
    srv = start_server(fault=Fault.DISCONNECT_OWN_ID)
    a, b = raw(srv.socket_path), None
    srv.wait_accepted(1)
    assert a.take(5)[-1] == (0, None)
    b = raw(srv.socket_path)
    srv.wait_accepted(2)
    assert b.take(5) == [*greeting(1), (0, "eventfd"), (1, "eventfd")] and b.quiet()

    srv.set_fault(lambda index: Fault.WRONG_VERSION if index % 2 else None)
    c, d = raw(srv.socket_path), None
    srv.wait_accepted(3)
    assert c.take(1) == [(0, None)]  # index 2
    d = raw(srv.socket_path)
    srv.wait_accepted(4)
    assert d.take(1) == [(1, None)]  # index 3


def test_host_peer_refuses_wrong_version_without_leaks(start_server):
    """HostPeer refuses a greeting of another protocol version with an IvshmemProtocolError naming
    it, and leaves no fd behind, nor a connection on the server."""
    srv = start_server(fault=Fault.WRONG_VERSION)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(IvshmemProtocolError, match="version 1"):
        HostPeer(srv.socket_path)
    srv.wait_peers(0)  # the server side of the refused connection is gone too
    assert set(os.listdir("/proc/self/fd")) == before
