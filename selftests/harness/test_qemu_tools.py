"""Self-tests against QEMU's own contrib/ivshmem-server and ivshmem-client (the reference
build's; skipped when not built): our Python server with their client, our HostPeer with
their server, both of theirs together, and how the harness starts, checks and stops them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

from ivflat.device import board
from ivflat.host.sockpath import too_long, usable
from ivflat.servers.peer import HostPeer
from ivflat.servers.qemu_client import IvshmemClientError, QemuIvshmemClient
from ivflat.servers.qemu_server import QemuIvshmemServer, QemuServerError, is_listening

from .servertools import SIZE, harness_threads, tool


@pytest.mark.interop
def test_qemu_client_on_python_server(start_server, short_tmp):
    """QEMU's ivshmem-client works with the Python server: it gets its id and every peer's
    vectors, reports a ring of its vector, and rings a host peer's vectors one by one or
    all at once; an unknown peer is an error."""
    binary = tool("ivshmem-client")
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
    srv = start_server(vectors=1)
    client = QemuIvshmemClient(tool("ivshmem-client"), srv.socket_path,
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
    binary = tool("ivshmem-client")
    with pytest.raises(IvshmemClientError, match="cannot connect"):
        QemuIvshmemClient(binary, short_tmp / "nobody.sock").start()
    assert harness_threads() == []


@pytest.mark.interop
def test_host_peers_on_qemu_server(short_tmp):
    """HostPeer works with QEMU's ivshmem-server: ids from 0 never reused, every vector, the
    shared memory, rings and disconnects; once stopped the server leaves no socket, shm
    file, thread or fd."""
    binary = tool("ivshmem-server")
    fds_before = set(os.listdir("/proc/self/fd"))
    srv = QemuIvshmemServer(binary, short_tmp / "q.sock", vectors=3, shm_size=SIZE,
                            log_path=short_tmp / "server.log")
    with srv:
        assert srv.shm_path.exists()
        with HostPeer(srv.socket_path) as a, HostPeer(srv.socket_path) as b:
            assert a.shm is not None and b.shm is not None  # mapped by the greeting
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
    assert harness_threads() == []
    assert set(os.listdir("/proc/self/fd")) == fds_before


@pytest.mark.interop
def test_qemu_server_rounds_size_to_power_of_two(short_tmp):
    """QEMU's server rounds the memory size up to a power of two, and the harness reports
    the size it really has (a guest's shmem-size must match that one)."""
    with QemuIvshmemServer(tool("ivshmem-server"), short_tmp / "q.sock",
                           shm_size=3 * 4096) as srv, HostPeer(srv.socket_path) as p:
        assert p.shm is not None and len(p.shm) == 4 * 4096 == srv.actual_shm_size


@pytest.mark.interop
def test_qemu_server_early_exit_reports_output(short_tmp):
    """A QEMU server that cannot start (too many vectors, a missing binary) is an error
    that says why, and leaves no shm file or thread."""
    srv = QemuIvshmemServer(tool("ivshmem-server"), short_tmp / "q.sock",
                            vectors=board.MAX_VECTORS + 1)
    with pytest.raises(QemuServerError, match="too many requested vectors"):
        srv.start()
    assert not srv.shm_path.exists() and harness_threads() == []
    with pytest.raises(QemuServerError, match="missing or not executable"):
        QemuIvshmemServer(short_tmp / "nope", short_tmp / "q.sock").start()


@pytest.mark.interop
def test_qemu_client_on_qemu_server(short_tmp):
    """QEMU's own client and server work with each other and a host peer, each in its own
    session (a Ctrl-C for pytest does not reach them), and leave no fd or thread."""
    server, client_bin = tool("ivshmem-server"), tool("ivshmem-client")
    fds_before = set(os.listdir("/proc/self/fd"))
    with QemuIvshmemServer(server, short_tmp / "q.sock", vectors=1,
                           shm_size=SIZE) as srv, HostPeer(srv.socket_path) as host, \
            QemuIvshmemClient(client_bin, srv.socket_path) as client:
        assert client.own_id == 1
        # sessions of their own: a Ctrl-C for pytest's process group does not reach them
        assert srv.pid is not None and client.pid is not None
        assert os.getsid(srv.pid) == srv.pid and os.getsid(client.pid) == client.pid
        host.wait_peer_vectors(1, 1)
        client.wait_peer_vectors(host.id, 1)
        host.ring(1, 0)
        assert client.expect_notification() == (1, 0)
        client.interrupt(0, 0)
        assert host.wait_vector(0) == 1
    assert set(os.listdir("/proc/self/fd")) == fds_before and harness_threads() == []


@pytest.mark.interop
def test_qemu_tools_on_a_socket_path_longer_than_sun_path(short_tmp):
    """A long TMPDIR (a CI workspace) makes the socket path longer than sun_path: QEMU's
    server binds and its client connects through the short alias, as QEMU's chardev does
    (given the long path itself, neither can: the server exits 1 before listening)."""
    path = short_tmp / ("d" * 60) / ("e" * 60) / "q.sock"
    path.parent.mkdir(parents=True)
    assert too_long(path)
    fds_before = set(os.listdir("/proc/self/fd"))
    with QemuIvshmemServer(tool("ivshmem-server"), path, vectors=1,
                           shm_size=SIZE) as srv, HostPeer(path) as host, \
            QemuIvshmemClient(tool("ivshmem-client"), path) as client:
        assert srv.wait_peers(2) == [host.id, client.own_id]
        client.wait_peer_vectors(host.id, 1)
        client.interrupt(host.id, 0)
        assert host.wait_vector(0) == 1
    assert not path.exists() and not srv.shm_path.exists()
    assert set(os.listdir("/proc/self/fd")) == fds_before and harness_threads() == []


def test_qemu_server_listening_check_is_by_socket_not_name(short_tmp):
    """The alias of a long path (/proc/self/fd/N/<name>) reads the same in every process
    that binds one: "listening" is judged on the sockets the server process holds."""
    path = short_tmp / ("d" * 60) / ("e" * 60) / "q.sock"
    path.parent.mkdir(parents=True)
    other = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, \
                usable(path) as name:
            sock.bind(name)
            assert not is_listening(name, os.getpid())
            sock.listen()
            assert is_listening(name, os.getpid())
            assert not is_listening(name, other.pid)
    finally:
        other.communicate()
