"""Peers coming and going while the guest runs: the device tracks the server's new-peer
and disconnect messages; two guests on one server interrupt each other."""

from __future__ import annotations

import pytest

from ivflat import board
from ivflat.driver import IvshmemFlatDriver
from ivflat.peer import HostPeer

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]


def _forgotten(guest, ivshmem_server, gone: int) -> None:
    """Barrier: the device has processed *gone*'s disconnect. The server announces it before
    any later peer, and the device handles messages in order, so once a newly connected
    peer's vector is registered, the disconnect was handled."""
    with HostPeer(ivshmem_server.socket_path) as probe:
        guest.vm.wait_vectors(probe.id, 1)
    guest.ring(gone, 0)
    guest.vm.wait_trace("ivshmem_flat_interrupt_invalid_peer", lambda t: t.ints == (gone,))


@pytest.fixture
def guest(vm):
    dev = IvshmemFlatDriver(vm)
    vm.wait_vectors(dev.ivposition, 1)
    return dev


def test_peer_connecting_after_guest_is_reachable(guest, ivshmem_server):
    with HostPeer(ivshmem_server.socket_path) as late:
        guest.vm.wait_trace("ivshmem_flat_new_peer", lambda t: t.ints == (late.id,))
        guest.vm.wait_vectors(late.id, 1)
        guest.ring(late.id, 0)
        assert late.wait_vector(0) == 1


def test_ringing_departed_peer_does_nothing(guest, ivshmem_server):
    """After a peer disconnects the device forgets it: a ring is traced as an invalid peer
    and QEMU keeps working."""
    peer = HostPeer(ivshmem_server.socket_path)
    pid = peer.id
    guest.vm.wait_vectors(pid, 1)
    peer.close()
    _forgotten(guest, ivshmem_server, pid)
    mark = guest.mark()
    guest.ring(guest.ivposition, 0)
    guest.wait_pulses(1, since=mark)


def test_reconnecting_peer_gets_working_vectors(guest, ivshmem_server):
    """A peer that leaves and comes back (new id from the server) is reachable again, and
    the guest still reaches it after several cycles."""
    for _cycle in range(3):
        with HostPeer(ivshmem_server.socket_path) as peer:
            guest.vm.wait_vectors(peer.id, 1)
            guest.ring(peer.id, 0)
            assert peer.wait_vector(0) == 1
            pid = peer.id
        _forgotten(guest, ivshmem_server, pid)


def test_two_guests_interrupt_each_other(ivshmem_server, launch_vm):
    """Two VMs on one server: distinct ids, each doorbell pulses the other's IRQ."""
    a_vm, b_vm = launch_vm(ivshmem_server, "a"), launch_vm(ivshmem_server, "b")
    a, b = IvshmemFlatDriver(a_vm), IvshmemFlatDriver(b_vm)
    for v in (a_vm, b_vm):
        v.irq_intercept_in(board.IRQ_INTERCEPT_QOM)
    assert a.ivposition != b.ivposition
    a_vm.wait_vectors(b.ivposition, 1)
    b_vm.wait_vectors(a.ivposition, 1)
    b_vm.wait_vectors(b.ivposition, 1)
    a_vm.wait_vectors(a.ivposition, 1)
    mb = b.mark()
    a.ring(b.ivposition, 0)
    b.wait_pulses(1, since=mb)
    ma = a.mark()
    b.ring(a.ivposition, 0)
    a.wait_pulses(1, since=ma)
    a.settle()
    b.settle()
    assert a.pulses_since(ma) == 1 and b.pulses_since(mb) == 1


def test_guest_survives_other_guest_quitting(ivshmem_server, launch_vm):
    a_vm, b_vm = launch_vm(ivshmem_server, "a"), launch_vm(ivshmem_server, "b")
    a, bid = IvshmemFlatDriver(a_vm), IvshmemFlatDriver(b_vm).ivposition
    a_vm.wait_vectors(bid, 1)
    b_vm.qmp("quit")
    assert b_vm.wait_exit() == 0
    _forgotten(a, ivshmem_server, bid)
    assert a_vm.is_running()
