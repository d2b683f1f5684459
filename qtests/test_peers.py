"""Peers coming and going while the guest runs: the device tracks the server's new-peer
and disconnect messages; two guests on one server interrupt each other."""

from __future__ import annotations

import pytest

from ivflat.servers.peer import HostPeer

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]


def _forgotten(dev, ivshmem_server, gone: int) -> None:
    """Barrier: the device has processed *gone*'s disconnect. The server announces it before
    any later peer, and the device handles messages in order, so once a newly connected
    peer's vector is registered, the disconnect was handled."""
    with HostPeer(ivshmem_server.socket_path) as probe:
        dev.wait_vectors(probe.id)
    dev.ring(gone, 0)
    dev.wait_ring_to_nobody(gone)


def test_peer_connecting_after_guest_is_reachable(dev, ivshmem_server):
    """A peer that connects after the guest is announced to it (new-peer) with its
    vectors, and a ring of the guest then reaches that peer's eventfd once."""
    with HostPeer(ivshmem_server.socket_path) as late:
        dev.wait_new_peer(late.id)
        dev.wait_vectors(late.id)
        dev.ring(late.id, 0)
        assert late.wait_vector(0) == 1


def test_ringing_departed_peer_does_nothing(dev, ivshmem_server):
    """After a peer disconnects the device forgets it: a ring is traced as an invalid peer
    and QEMU keeps working."""
    peer = HostPeer(ivshmem_server.socket_path)
    pid = peer.id
    dev.wait_vectors(pid)
    peer.close()
    _forgotten(dev, ivshmem_server, pid)
    mark = dev.mark()
    dev.ring(dev.ivposition, 0)
    dev.wait_pulses(1, since=mark)


def test_departed_peer_fds_are_closed(dev, ivshmem_server):
    """Each vector of a peer is an fd QEMU holds; when the peer leaves, the device closes
    them all: QEMU's fd count goes back to what it was (else every peer that comes and
    goes leaks, until QEMU runs out)."""
    before = dev.open_fds()
    for _cycle in range(2):
        with HostPeer(ivshmem_server.socket_path) as peer:
            n = ivshmem_server.vectors
            dev.wait_vectors(peer.id, n)
            assert dev.open_fds() == before + n, "one fd per vector of the new peer"
        dev.wait_open_fds(before)


def test_reconnecting_peer_gets_working_vectors(dev, ivshmem_server):
    """A peer that leaves and comes back (new id from the server) is reachable again, and
    the guest still reaches it after several cycles."""
    for _cycle in range(3):
        with HostPeer(ivshmem_server.socket_path) as peer:
            dev.wait_vectors(peer.id)
            dev.ring(peer.id, 0)
            assert peer.wait_vector(0) == 1
            pid = peer.id
        _forgotten(dev, ivshmem_server, pid)


def test_two_guests_interrupt_each_other(ivshmem_server, launch_dev):
    """Two VMs on one server: distinct ids, each doorbell pulses the other's IRQ."""
    a, b = launch_dev(ivshmem_server, "a"), launch_dev(ivshmem_server, "b")
    assert a.ivposition != b.ivposition
    a.wait_vectors(b.ivposition)
    b.wait_vectors(a.ivposition)
    mb = b.mark()
    a.ring(b.ivposition, 0)
    b.wait_pulses(1, since=mb)
    ma = a.mark()
    b.ring(a.ivposition, 0)
    a.wait_pulses(1, since=ma)
    a.settle()
    b.settle()
    assert a.pulses_since(ma) == 1 and b.pulses_since(mb) == 1


def test_guest_survives_other_guest_quitting(ivshmem_server, launch_dev):
    """When another guest quits, the server announces its disconnect: the remaining
    device forgets that peer (a ring to it reaches nobody) and its QEMU keeps running."""
    a, b = launch_dev(ivshmem_server, "a"), launch_dev(ivshmem_server, "b")
    bid = b.ivposition
    a.wait_vectors(bid)
    assert b.quit() == 0
    _forgotten(a, ivshmem_server, bid)
    assert a.is_running(), a.death_reason()
