"""Self-tests of the suite's Python ivshmem server and HostPeer: protocol order, ids,
shared memory, cleanup, make_server, a held server (faults: test_server_faults.py; QEMU's
own server and client: test_qemu_tools.py). No qemu-system-arm needed.
"""

from __future__ import annotations

import os
import socket

import pytest

from ivflat.host import reaper
from ivflat.servers import make_server
from ivflat.servers.api import NoServerBinary
from ivflat.servers.faults import Fault, FaultKind
from ivflat.servers.peer import HostPeer
from ivflat.servers.python_server import IvshmemServer

from .servertools import SIZE, greeting, harness_threads

# --------------------------------------------------------------------------- protocol


def test_exact_message_order_mirrors_qemu(start_server, raw):
    """Greeting, others' vectors, own vectors; the existing peer hears of the new one;
    a hang-up is the id without fd to the rest."""
    srv = start_server(vectors=2)
    a = raw(srv.socket_path)
    srv.wait_accepted(1)
    assert a.take(5) == [*greeting(0), (0, "eventfd"), (0, "eventfd")]
    assert a.quiet()
    b = raw(srv.socket_path)
    srv.wait_accepted(2)
    assert b.take(7) == [*greeting(1), (0, "eventfd"), (0, "eventfd"),
                         (1, "eventfd"), (1, "eventfd")]
    assert a.take(2) == [(1, "eventfd"), (1, "eventfd")]
    assert a.quiet() and b.quiet()
    c = raw(srv.socket_path)
    srv.wait_accepted(3)
    assert c.take(9) == [*greeting(2), *[(0, "eventfd")] * 2, *[(1, "eventfd")] * 2,
                         *[(2, "eventfd")] * 2]
    b.close()
    srv.wait_peers(2)
    assert a.take(3) == [(2, "eventfd"), (2, "eventfd"), (1, None)]
    assert c.take(1) == [(1, None)]
    assert a.quiet() and c.quiet()


def test_ids_count_up_and_are_never_reused(start_server):
    """Ids are handed out from 0 up and a departed peer's id is not given again, as QEMU's
    server does: a late message about an old id can never be taken for a new peer."""
    srv = start_server()
    with HostPeer(srv.socket_path) as p0:
        with HostPeer(srv.socket_path) as p1:
            assert (p0.id, p1.id) == (0, 1)
        srv.wait_peers(1)
        with HostPeer(srv.socket_path) as p2:
            assert p2.id == 2  # QEMU's counter never goes back
            assert srv.peers == [0, 2]


def test_explicit_ids_then_counter(start_server):
    """The ids a test asks for are handed out first, in its order, then the counter takes
    over from first_id: tests can place a guest at any id, edges included."""
    srv = start_server(ids=[5, 2], first_id=7)
    peers = [HostPeer(srv.socket_path) for _ in range(3)]
    try:
        assert [p.id for p in peers] == [5, 2, 7]
        assert srv.wait_peers(3) == [5, 2, 7]
    finally:
        for p in peers:
            p.close()


def test_host_peers_see_each_other_and_ring(start_server):
    """Two host peers get each other's vectors and their own, and a ring reaches exactly the
    vector it names (eventfd counts add up: two rings, one read of 2), one's own id rings
    itself; a ring of an unknown peer or vector is an error naming it, and a wait for a
    ring that never comes times out saying which vector."""
    srv = start_server(vectors=3)
    with HostPeer(srv.socket_path) as a, HostPeer(srv.socket_path) as b:
        assert a.version == 0 and (a.id, b.id) == (0, 1)
        a.wait_peer_vectors(b.id, 3)
        b.wait_peer_vectors(a.id, 3)
        b.wait_own_vectors(3)
        assert len(srv.vectors_of(b.id)) == 3
        a.ring(b.id, 2)
        a.ring(b.id, 2)
        assert b.wait_vector(2) == 2  # eventfd counts: two rings, one read
        assert not b.pending(2) and not b.pending(0)
        b.ring(a.id, 0)
        assert a.wait_vector(0) == 1
        a.ring(a.id, 1)  # our own id rings ourselves
        assert a.pending(1)
        with pytest.raises(KeyError, match="unknown peer 9"):
            a.ring(9, 0)
        with pytest.raises(IndexError, match="no vector 3"):
            a.ring(b.id, 3)
        with pytest.raises(TimeoutError, match="vector 0 not rung"):
            b.wait_vector(0, timeout=0.05)


def test_disconnects_are_announced(start_server):
    """A peer that leaves, or that the server drops, is announced to the others as a
    disconnect of its id, and the dropped peer sees its connection closed: the device's
    forget-a-peer path gets exactly the message QEMU's server sends."""
    srv = start_server()
    a = HostPeer(srv.socket_path)
    b = HostPeer(srv.socket_path)
    c = HostPeer(srv.socket_path)
    try:
        a.wait_peer_vectors(c.id, 1)
        b.close()
        a.wait_peer_gone(1)
        assert srv.wait_peers(2) == [0, 2] and sorted(a.peers) == [2]
        srv.disconnect(c.id)  # the server drops a client
        a.wait_peer_gone(2)
        c.wait_server_closed()
        assert srv.peers == [0]
    finally:
        for p in (a, b, c):
            p.close()
    assert a.disconnected == [1, 2] and not a.anomalies


def test_shm_is_shared(start_server):
    """Server and peers map one memory of the configured size: a write on either side is
    read on the other, at both ends; an access outside it is refused."""
    srv = start_server()
    with HostPeer(srv.socket_path) as a, HostPeer(srv.socket_path) as b:
        assert a.shm is not None and b.shm is not None  # mapped by the greeting
        assert len(a.shm) == SIZE
        srv.write(100, b"from server")
        assert a.shm[100:111] == b"from server" == b.shm[100:111]
        b.shm[SIZE - 4:] = b"tail"
        assert srv.read(SIZE - 4, 4) == b"tail"
        with pytest.raises(ValueError, match="outside shm"):
            srv.read(SIZE - 1, 2)


def test_send_raw_reaches_a_host_peer(start_server):
    """send_raw delivers the message a test composes (an id with or without an fd) as is: with
    an eventfd it is a vector the peer can ring, without one a disconnect; a message for an
    id nobody holds is an error."""
    srv = start_server()
    efd = os.eventfd(0)
    try:
        with HostPeer(srv.socket_path) as p:
            srv.send_raw(p.id, 4242, fd=efd)
            p.wait_peer_vectors(4242, 1)
            p.ring(4242, 0)
            assert os.eventfd_read(efd) == 1
            srv.send_raw(p.id, 4242)
            p.wait_peer_gone(4242)
            with pytest.raises(KeyError, match="no connected peer with id 77"):
                srv.send_raw(77, 1)
    finally:
        os.close(efd)


def test_wait_peers_timeout_says_what(start_server):
    """A wait for peers that never come times out saying how many were expected and which
    are there."""
    srv = start_server()
    with pytest.raises(TimeoutError, match=r"expected 2 connected peer\(s\), have \[\]"):
        srv.wait_peers(2, timeout=0.05)


def test_many_vectors_and_peers_flow_through(start_server):
    """64 vectors x 4 peers: more fd messages than fit a socket buffer at once."""
    srv = start_server(vectors=64)
    peers = [HostPeer(srv.socket_path) for _ in range(4)]
    try:
        for p in peers:
            p.wait_own_vectors(64)
            for q in peers:
                p.wait_peer_vectors(q.id, 64)
        peers[0].ring(peers[3].id, 63)
        assert peers[3].wait_vector(63) == 1
    finally:
        for p in peers:
            p.close()


def test_slow_reader_gets_every_vector_with_its_fd(start_server, raw):
    """A client that reads nothing until its whole greeting is queued (far more fd
    messages than its socket takes) still gets every vector message with its eventfd, in
    order: a full socket delays a message, it never strips the fd off it (which would turn
    a vector announcement into a bare "peer gone")."""
    n = 1000
    srv = start_server(vectors=n)
    client = raw(srv.socket_path)
    srv.wait_accepted(1)
    assert srv.queued(0) > 0, "the socket never filled: the test proves nothing"
    assert client.take(3 + n) == greeting(0) + [(0, "eventfd")] * n
    srv.wait_peers(1)
    assert srv.queued(0) == 0 and srv.send_errors == []


# --------------------------------------------------------------------------- cleanup


def test_python_server_leaves_nothing_behind(short_tmp):
    """Stopping the server with peers connected, one gone and a cut message with fds in
    flight leaves no thread, socket file, fd or shm object of this process, and a second
    stop() is harmless."""
    fds_before = set(os.listdir("/proc/self/fd"))
    shm_before = set(os.listdir("/dev/shm"))
    path = short_tmp / "leak.sock"
    srv = IvshmemServer(path, vectors=4, shm_size=SIZE).start()
    a = HostPeer(path)
    b = HostPeer(path)
    a.wait_peer_vectors(b.id, 4)
    srv.set_fault(Fault(FaultKind.TRUNCATED, at=5))  # a half message + fds in flight
    raw_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw_sock.connect(str(path))
    srv.wait_accepted(3)
    raw_sock.close()
    a.close()
    srv.stop()
    b.close()
    assert harness_threads() == []
    assert not path.exists()
    assert set(os.listdir("/proc/self/fd")) == fds_before
    # this process's objects only: other xdist workers create and remove theirs meanwhile
    mine = reaper.tagged_name(reaper.SHM_PREFIX)
    assert [n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith(mine)] == []
    srv.stop()  # idempotent


def test_failed_start_releases_everything(short_tmp):
    """A server whose socket path is taken fails to start (FileExistsError) and holds no
    fd or thread afterwards."""
    path = short_tmp / "taken.sock"
    path.touch()
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FileExistsError):
        IvshmemServer(path).start()
    assert set(os.listdir("/proc/self/fd")) == before and harness_threads() == []


def test_make_server_kinds(short_tmp, monkeypatch):
    """make_server builds the kind asked for, refuses an unknown kind, refuses a fault
    for QEMU's server, which has no fault hooks, and says NoServerBinary when QEMU's is
    asked for and there is none (an environment to fix, no server failed)."""
    assert isinstance(make_server("python", short_tmp / "p.sock", vectors=2), IvshmemServer)
    with pytest.raises(ValueError, match="unknown server kind"):
        make_server("rust", short_tmp / "r.sock")
    with pytest.raises(TypeError, match="cannot do"):
        make_server("qemu", short_tmp / "q.sock", binary="/bin/true", fault=Fault.TRUNCATED)
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(short_tmp / "empty-cache"))
    with pytest.raises(NoServerBinary, match="no ivshmem-server binary"):
        make_server("qemu", short_tmp / "q.sock")


def test_a_held_server_greets_only_once_admitted(short_tmp, raw):
    """start(hold=True): a client connects but is neither accepted nor greeted (the
    fuzzer's standby QEMU waits so in its device's realize) until admit() gives the ids,
    vectors and fault; then it is greeted with those."""
    srv = IvshmemServer(short_tmp / "held.sock", shm_size=SIZE).start(hold=True)
    try:
        a = raw(srv.socket_path)
        assert srv.peers == [] and a.quiet()
        srv.admit([7], vectors=2)
        srv.wait_accepted(1)
        assert a.take(5) == [*greeting(7), (7, "eventfd"), (7, "eventfd")]
        assert srv.peers == [7]
    finally:
        srv.stop()
