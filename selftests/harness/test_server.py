"""Self-tests of the ivshmem server side of the harness: the Python server (protocol order,
ids, fault hooks, cleanup), HostPeer, and both against QEMU's own ivshmem-server and
ivshmem-client. No qemu-system-arm needed; the QEMU tools are skipped when not built.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ivflat.device import board
from ivflat.host import reaper, timeouts
from ivflat.host.paths import reference_dir, reference_tool
from ivflat.host.reaper import release_all
from ivflat.protocol.ivshmem import MessageReader, ProtocolError, readable, recv_msg
from ivflat.servers import make_server
from ivflat.servers.faults import Fault, FaultKind
from ivflat.servers.peer import HostPeer
from ivflat.servers.python_server import IvshmemServer

SIZE = 64 * 1024  # small shm keeps the tests fast; sizes are not what is under test


def _tool(name: str) -> Path:
    path = reference_tool(name)
    if path is None:
        pytest.skip(f"QEMU's {name} not built: {reference_dir() / name} is missing "
                    "(run ci/build-qemu; the cache is $IVSHMEM_SUITE_CACHE or "
                    "~/.cache/ivshmem-flat-suite)")
    return path


@pytest.fixture
def start_server(short_tmp: Path) -> Iterator[Callable[..., IvshmemServer]]:
    """Factory for started Python servers, all stopped at teardown."""
    servers: list[IvshmemServer] = []

    def factory(**kw: Any) -> IvshmemServer:
        kw.setdefault("shm_size", SIZE)
        srv = IvshmemServer(short_tmp / f"s{len(servers)}.sock", **kw)
        servers.append(srv)
        return srv.start()

    try:
        yield factory
    finally:
        release_all(servers, lambda srv: srv.stop())


def _fd_kind(fd: int) -> str:
    """'memfd:<size>', 'eventfd', 'pipe' or the /proc link, for exact message asserts."""
    link = os.readlink(f"/proc/self/fd/{fd}")
    if link.startswith("/memfd:"):
        return f"memfd:{os.fstat(fd).st_size}"
    if link == "anon_inode:[eventfd]":
        return "eventfd"
    if stat.S_ISFIFO(os.fstat(fd).st_mode):
        return "pipe"
    return link


class Raw:
    """A bare protocol client: reads messages, describes their fds, asserts silence."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.reader = MessageReader(self.sock)
        self.kept: list[int] = []

    def take(self, n: int, keep: bool = False) -> list[tuple[int, str | None]]:
        out = []
        for _ in range(n):
            value, fd = recv_msg(self.reader, timeouts.scaled())
            out.append((value, None if fd is None else _fd_kind(fd)))
            if fd is not None:
                (self.kept.append if keep else os.close)(fd)
        return out

    def quiet(self) -> bool:
        """Nothing more is queued for us (callers first wait until the server is done)."""
        return not readable(self.sock, 0)

    def close(self) -> None:
        for fd in self.kept:
            os.close(fd)
        self.reader.close()
        self.sock.close()


@pytest.fixture
def raw(request: pytest.FixtureRequest) -> Iterator[Callable[[Path], Raw]]:
    clients: list[Raw] = []

    def factory(path: Path) -> Raw:
        clients.append(Raw(path))
        return clients[-1]

    try:
        yield factory
    finally:
        release_all(clients, lambda c: c.close())


def _greeting(peer_id: int, version: int = 0, shm: str | None = f"memfd:{SIZE}"):
    return [(version, None), (peer_id, None), (-1, shm)]


# --------------------------------------------------------------------------- protocol


def test_exact_message_order_mirrors_qemu(start_server, raw):
    """Greeting, others' vectors, own vectors; the existing peer hears of the new one;
    a hang-up is the id without fd to the rest."""
    srv = start_server(vectors=2)
    a = raw(srv.socket_path)
    srv.wait_accepted(1)
    assert a.take(5) == [*_greeting(0), (0, "eventfd"), (0, "eventfd")]
    assert a.quiet()
    b = raw(srv.socket_path)
    srv.wait_accepted(2)
    assert b.take(7) == [*_greeting(1), (0, "eventfd"), (0, "eventfd"),
                         (1, "eventfd"), (1, "eventfd")]
    assert a.take(2) == [(1, "eventfd"), (1, "eventfd")]
    assert a.quiet() and b.quiet()
    c = raw(srv.socket_path)
    srv.wait_accepted(3)
    assert c.take(9) == [*_greeting(2), *[(0, "eventfd")] * 2, *[(1, "eventfd")] * 2,
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
    assert client.take(3 + n) == _greeting(0) + [(0, "eventfd")] * n
    srv.wait_peers(1)
    assert srv.queued(0) == 0 and srv.send_errors == []


# --------------------------------------------------------------------------- faults


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
    assert c.take(4) == [*_greeting(0, version=version), (0, "eventfd")]
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
    assert c.take(4) == [*_greeting(0, shm=shm), (0, "eventfd")]
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
    assert first.take(4) == [*_greeting(0), (0, "eventfd")]
    srv.set_fault(Fault.TOO_MANY_VECTORS)
    second = raw(srv.socket_path)
    srv.wait_accepted(2)
    assert second.take(4 + 65) == [*_greeting(1), (0, "eventfd"), *[(1, "eventfd")] * 65]
    assert first.take(65) == [(1, "eventfd")] * 65
    assert second.quiet() and first.quiet()
    assert len(srv.vectors_of(1)) == 65


def test_server_wide_70_vectors(start_server, raw):
    """A server of 70 vectors per peer sends all 70 after the greeting, then nothing."""
    _, c = _faulted(start_server, raw, None, vectors=70)
    assert c.take(73) == [*_greeting(0), *[(0, "eventfd")] * 70]
    assert c.quiet()


def test_fault_disconnect_unknown_id(start_server, raw):
    """DISCONNECT_UNKNOWN_ID follows the greeting with a disconnect of an id nobody holds
    (the value given, else one no peer has): a message the device must ignore."""
    _, c = _faulted(start_server, raw, Fault(FaultKind.DISCONNECT_UNKNOWN_ID, value=999))
    assert c.take(5) == [*_greeting(0), (0, "eventfd"), (999, None)]
    assert c.quiet()
    srv, c2 = _faulted(start_server, raw, Fault.DISCONNECT_UNKNOWN_ID)
    (*_, (bogus, fd)) = c2.take(5)
    assert fd is None and bogus not in (0, *srv.peers)


def test_fault_disconnect_own_id(start_server, raw):
    """DISCONNECT_OWN_ID follows the greeting with a disconnect of the client's own id."""
    _, c = _faulted(start_server, raw, Fault.DISCONNECT_OWN_ID, first_id=3)
    assert c.take(5) == [*_greeting(3), (3, "eventfd"), (3, None)]
    assert c.quiet()


def _half_then_silence(c: Raw) -> bytes:
    """The 4 bytes of a cut message, and proof the connection is open and silent."""
    with pytest.raises(TimeoutError, match="partial bytes") as exc:
        recv_msg(c.reader, 0.05)
    assert c.quiet()
    assert not c.reader.eof
    return bytes.fromhex(str(exc.value).rsplit(": ", 1)[1].rstrip(")"))


def test_fault_truncated_after_greeting(start_server, raw):
    """TRUNCATED sends the first 4 bytes of a message after the greeting and then nothing
    more to that client, with its connection left open; other clients are served as usual."""
    srv, c = _faulted(start_server, raw, Fault(FaultKind.TRUNCATED, value=0x1234))
    assert c.take(4) == [*_greeting(0), (0, "eventfd")]
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


def test_fault_close_mid_greeting(start_server, raw):
    """CLOSE_MID_GREETING sends the version and closes: the client sees EOF, the id it was
    given is used up (as QEMU's server would), and it is no peer."""
    srv, c = _faulted(start_server, raw, Fault.CLOSE_MID_GREETING)
    assert c.take(1) == [(0, None)]
    with pytest.raises(ProtocolError, match="closed"):
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
    assert b.take(5) == [*_greeting(1), (0, "eventfd"), (1, "eventfd")] and b.quiet()

    srv.set_fault(lambda index: Fault.WRONG_VERSION if index % 2 else None)
    c, d = raw(srv.socket_path), None
    srv.wait_accepted(3)
    assert c.take(1) == [(0, None)]  # index 2
    d = raw(srv.socket_path)
    srv.wait_accepted(4)
    assert d.take(1) == [(1, None)]  # index 3


def test_host_peer_refuses_wrong_version_without_leaks(start_server):
    """HostPeer refuses a greeting of another protocol version with a ProtocolError naming
    it, and leaves no fd behind, nor a connection on the server."""
    srv = start_server(fault=Fault.WRONG_VERSION)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ProtocolError, match="version 1"):
        HostPeer(srv.socket_path)
    srv.wait_peers(0)  # the server side of the refused connection is gone too
    assert set(os.listdir("/proc/self/fd")) == before


# --------------------------------------------------------------------------- cleanup


def _harness_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ivflat-")]


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
    assert _harness_threads() == []
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
    assert set(os.listdir("/proc/self/fd")) == before and _harness_threads() == []


def test_make_server_kinds(short_tmp):
    """make_server builds the kind asked for, refuses an unknown kind, and refuses a fault
    for QEMU's server, which has no fault hooks."""
    assert isinstance(make_server("python", short_tmp / "p.sock", vectors=2), IvshmemServer)
    with pytest.raises(ValueError, match="unknown server kind"):
        make_server("rust", short_tmp / "r.sock")
    with pytest.raises(TypeError, match="cannot do"):
        make_server("qemu", short_tmp / "q.sock", binary="/bin/true", fault=Fault.TRUNCATED)


# --------------------------------------------------------------------------- QEMU tools


@pytest.mark.interop
def test_qemu_client_on_python_server(start_server, short_tmp):
    """QEMU's ivshmem-client works with the Python server: it gets its id and every peer's
    vectors, reports a ring of its vector, and rings a host peer's vectors one by one or
    all at once; an unknown peer is an error."""
    from ivflat.servers.qemu_client import QemuIvshmemClient

    binary = _tool("ivshmem-client")
    srv = start_server(vectors=2)
    with HostPeer(srv.socket_path) as host, \
            QemuIvshmemClient(binary, srv.socket_path, logdir=short_tmp) as client:
        assert client.own_id == 1
        client.wait_peer_vectors(client.own_id, 2)
        client.wait_peer_vectors(host.id, 2)
        dump = client.dump()
        assert "our_id = 1" in dump and "peer_id = 0" in dump
        assert dump.count("is enabled") == 4
        host.wait_peer_vectors(client.own_id, 2)
        host.ring(client.own_id, 1)
        # The client prints ITS OWN id, not the sender's.
        assert client.expect_notification(vector=1) == (1, 1)
        client.interrupt(host.id, 0)
        assert host.wait_vector(0) == 1
        client.interrupt_all()
        assert (host.wait_vector(0), host.wait_vector(1)) == (1, 1)
        with pytest.raises(Exception, match="cannot find peer_id = 9"):
            client.interrupt(9, 0)
    assert (short_tmp / "ivshmem-client-0.log").exists() or any(short_tmp.glob("*.log"))
    assert "receive notification from peer_id=1 vector=1" in client.transcript
    srv.wait_peers(0)


@pytest.mark.interop
def test_qemu_client_close_kills_and_reaps_even_a_stopped_client(start_server, short_tmp):
    """close() ends the client whatever state it is in (here stopped: it can answer no
    SIGHUP) and reaps it: no process, no zombie, and the transcript is kept. The wait is
    on the client's exit (a pidfd), bounded by the scaled WAIT, never pexpect's fixed
    0.1 s sleeps, which a loaded machine can outlast."""
    import signal

    from ivflat.servers.qemu_client import QemuIvshmemClient

    srv = start_server(vectors=1)
    client = QemuIvshmemClient(_tool("ivshmem-client"), srv.socket_path,
                               logdir=short_tmp).start()
    pid = client.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    client.close()
    with pytest.raises(ProcessLookupError):  # reaped, not a zombie
        os.kill(pid, 0)
    assert client.pid is None
    assert client.log_path is not None
    assert "listen on server socket" in client.log_path.read_text()
    srv.wait_peers(0)


@pytest.mark.interop
def test_qemu_client_cannot_connect_is_an_error(short_tmp):
    """A client with no server to connect to fails with an error saying so, and leaves no
    thread behind."""
    from ivflat.servers.qemu_client import IvshmemClientError, QemuIvshmemClient

    binary = _tool("ivshmem-client")
    with pytest.raises(IvshmemClientError, match="cannot connect"):
        QemuIvshmemClient(binary, short_tmp / "nobody.sock").start()
    assert _harness_threads() == []


@pytest.mark.interop
def test_host_peers_on_qemu_server(short_tmp):
    """HostPeer works with QEMU's ivshmem-server: ids from 0 never reused, every vector, the
    shared memory, rings and disconnects; once stopped the server leaves no socket, shm
    file, thread or fd."""
    from ivflat.servers.qemu_server import QemuIvshmemServer

    binary = _tool("ivshmem-server")
    fds_before = set(os.listdir("/proc/self/fd"))
    srv = QemuIvshmemServer(binary, short_tmp / "q.sock", vectors=3, shm_size=SIZE,
                            log_path=short_tmp / "server.log")
    with srv:
        assert srv.shm_path.exists()
        with HostPeer(srv.socket_path) as a, HostPeer(srv.socket_path) as b:
            assert (a.id, b.id) == (0, 1)
            assert srv.wait_peers(2) == [0, 1]
            a.wait_peer_vectors(b.id, 3)
            b.wait_peer_vectors(a.id, 3)
            b.wait_own_vectors(3)
            assert len(a.vectors) == 3 and len(a.peers[1]) == 3
            srv.write(0, b"qemu shm")
            assert a.shm[:8] == b"qemu shm" == b.shm[:8]
            a.shm[16:20] = b"host"
            assert srv.read(16, 4) == b"host"
            a.ring(b.id, 2)
            assert b.wait_vector(2) == 1
            b.close()
            a.wait_peer_gone(1)
            assert srv.wait_peers(1) == [0]
        with HostPeer(srv.socket_path) as c:
            assert c.id == 2  # QEMU's counter never goes back either
    assert "new peer id = 2" in srv.output
    assert "new peer id = 0" in (short_tmp / "server.log").read_text()
    assert not srv.socket_path.exists() and not srv.shm_path.exists()
    assert _harness_threads() == []
    assert set(os.listdir("/proc/self/fd")) == fds_before


@pytest.mark.interop
def test_qemu_server_rounds_size_to_power_of_two(short_tmp):
    """QEMU's server rounds the memory size up to a power of two, and the harness reports
    the size it really has (a guest's shmem-size must match that one)."""
    from ivflat.servers.qemu_server import QemuIvshmemServer

    with QemuIvshmemServer(_tool("ivshmem-server"), short_tmp / "q.sock",
                           shm_size=3 * 4096) as srv, HostPeer(srv.socket_path) as p:
        assert len(p.shm) == 4 * 4096 == srv.actual_shm_size


@pytest.mark.interop
def test_qemu_server_early_exit_reports_output(short_tmp):
    """A QEMU server that cannot start (too many vectors, a missing binary) is an error
    that says why, and leaves no shm file or thread."""
    from ivflat.servers.qemu_server import QemuIvshmemServer, QemuServerError

    srv = QemuIvshmemServer(_tool("ivshmem-server"), short_tmp / "q.sock",
                            vectors=board.MAX_VECTORS + 1)
    with pytest.raises(QemuServerError, match="too many requested vectors"):
        srv.start()
    assert not srv.shm_path.exists() and _harness_threads() == []
    with pytest.raises(QemuServerError, match="missing or not executable"):
        QemuIvshmemServer(short_tmp / "nope", short_tmp / "q.sock").start()


@pytest.mark.interop
def test_qemu_client_on_qemu_server(short_tmp):
    """QEMU's own client and server work with each other and a host peer, each in its own
    session (a Ctrl-C for pytest does not reach them), and leave no fd or thread."""
    from ivflat.servers.qemu_client import QemuIvshmemClient
    from ivflat.servers.qemu_server import QemuIvshmemServer

    server, client_bin = _tool("ivshmem-server"), _tool("ivshmem-client")
    fds_before = set(os.listdir("/proc/self/fd"))
    with QemuIvshmemServer(server, short_tmp / "q.sock", vectors=1,
                           shm_size=SIZE) as srv, HostPeer(srv.socket_path) as host, \
            QemuIvshmemClient(client_bin, srv.socket_path) as client:
        assert client.own_id == 1
        # sessions of their own: a Ctrl-C for pytest's process group does not reach them
        assert os.getsid(srv.pid) == srv.pid and os.getsid(client.pid) == client.pid
        host.wait_peer_vectors(1, 1)
        client.wait_peer_vectors(host.id, 1)
        host.ring(1, 0)
        assert client.expect_notification() == (1, 0)
        client.interrupt(0, 0)
        assert host.wait_vector(0) == 1
    assert set(os.listdir("/proc/self/fd")) == fds_before and _harness_threads() == []


@pytest.mark.interop
def test_qemu_tools_on_a_socket_path_longer_than_sun_path(short_tmp):
    """A long TMPDIR (a CI workspace) makes the socket path longer than sun_path: QEMU's
    server binds and its client connects through the short alias, as QEMU's chardev does
    (they used to refuse the path: "exited with 1 before listening")."""
    from ivflat.host.sockpath import too_long
    from ivflat.servers.qemu_client import QemuIvshmemClient
    from ivflat.servers.qemu_server import QemuIvshmemServer

    path = short_tmp / ("d" * 60) / ("e" * 60) / "q.sock"
    path.parent.mkdir(parents=True)
    assert too_long(path)
    fds_before = set(os.listdir("/proc/self/fd"))
    with QemuIvshmemServer(_tool("ivshmem-server"), path, vectors=1,
                           shm_size=SIZE) as srv, HostPeer(path) as host, \
            QemuIvshmemClient(_tool("ivshmem-client"), path) as client:
        assert srv.wait_peers(2) == [host.id, client.own_id]
        client.wait_peer_vectors(host.id, 1)
        client.interrupt(host.id, 0)
        assert host.wait_vector(0) == 1
    assert not path.exists() and not srv.shm_path.exists()
    assert set(os.listdir("/proc/self/fd")) == fds_before and _harness_threads() == []


def test_qemu_server_listening_check_is_by_socket_not_name(short_tmp):
    """The alias of a long path (/proc/self/fd/N/<name>) reads the same in every process
    that binds one: "listening" is judged on the sockets the server process holds."""
    import subprocess

    from ivflat.host.sockpath import usable
    from ivflat.servers.qemu_server import _is_listening

    path = short_tmp / ("d" * 60) / ("e" * 60) / "q.sock"
    path.parent.mkdir(parents=True)
    other = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, \
                usable(path) as name:
            sock.bind(name)
            assert not _is_listening(name, os.getpid())
            sock.listen()
            assert _is_listening(name, os.getpid())
            assert not _is_listening(name, other.pid)
    finally:
        other.communicate()


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
        assert a.take(5) == [*_greeting(7), (7, "eventfd"), (7, "eventfd")]
        assert srv.peers == [7]
    finally:
        srv.stop()
