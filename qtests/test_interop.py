"""Interop with QEMU's own contrib/ tools: the same doorbell and memory behaviour against
QEMU's ivshmem-server, and QEMU's interactive ivshmem-client as the peer (pexpect)."""

from __future__ import annotations

import os

import pytest

from ivflat.device import board
from ivflat.host.paths import tool_beside
from ivflat.servers.peer import HostPeer
from ivflat.servers.qemu_client import QemuIvshmemClient

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest, pytest.mark.interop]


@pytest.fixture
def qemu_server(make_server):
    return make_server(kind="qemu", vectors=2)


def test_guest_on_qemu_server_ids_memory_and_self_doorbell(qemu_server, launch_dev):
    """QEMU's own contrib/ivshmem-server is a server the device must work with: the id
    it hands out is IVPOSITION, its memory is the shared RAM (checked at the end of the
    window), and a ring of the guest's own vector pulses its IRQ."""
    dev = launch_dev(qemu_server)  # its own 2 vectors registered
    assert qemu_server.wait_peers(1) == [dev.ivposition]
    blob = os.urandom(4096)
    dev.shm_write(board.SHMEM_SIZE - 4096, blob)
    assert qemu_server.read(board.SHMEM_SIZE - 4096, 4096) == blob
    mark = dev.mark()
    dev.ring(dev.ivposition, 0)
    dev.wait_pulses(1, since=mark)


def test_host_peer_and_guest_on_qemu_server(qemu_server, launch_dev):
    """With QEMU's server in between, the guest and a host peer ring each other: the
    guest's DOORBELL reaches exactly the peer's eventfd it names, and the peer's ring
    pulses the guest's IRQ."""
    with HostPeer(qemu_server.socket_path) as peer:
        dev = launch_dev(qemu_server)
        dev.wait_vectors(peer.id, 2)
        peer.wait_peer_vectors(dev.ivposition, 2)
        dev.ring(peer.id, 1)
        assert peer.wait_vector(1) == 1
        assert not peer.pending(0)
        mark = dev.mark()
        peer.ring(dev.ivposition, 0)
        dev.wait_pulses(1, since=mark)


@pytest.mark.parametrize("backend", ["python", "qemu"])
def test_qemu_ivshmem_client_as_peer(make_server, launch_dev, qemu_binary, short_tmp, backend):
    """QEMU's interactive ivshmem-client: the guest rings it (it reports the notification),
    and `int <guest> 0` from its prompt pulses the guest's IRQ."""
    binary = tool_beside(qemu_binary, "ivshmem-client")
    if binary is None:
        pytest.skip("QEMU's ivshmem-client not found beside --qemu nor in the reference build")
    server = make_server(kind=backend, vectors=1)
    dev = launch_dev(server)
    client = QemuIvshmemClient(binary, server.socket_path, logdir=short_tmp)
    try:
        client.start()
        dev.wait_vectors(client.own_id)
        dev.ring(client.own_id, 0)
        client.expect_notification(vector=0)
        mark = dev.mark()
        client.interrupt(dev.ivposition, 0)
        dev.wait_pulses(1, since=mark)
    finally:
        client.close()
