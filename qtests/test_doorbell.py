"""DOORBELL -> eventfd -> IRQ: who gets notified, exactly once, and nobody else.

Waits are on events (qtest IRQ lines, eventfd readiness, trace barriers), never sleeps;
"nothing else happened" is checked after IvshmemFlatDriver.settle(). The guest's own rings
run on both access paths (``access_path``: qtest, and the CPU's STR through the access server
firmware); pulses are counted on qtest's IRQ log either way (on the CPU path qtest's
interception forwards each level to the NVIC too: qtests/test_cpu_path.py).
"""

from __future__ import annotations

import contextlib

import pytest

from ivflat.device.known_bugs import KnownBugCrash, known_bug
from ivflat.device.wirings import semantics
from ivflat.qemu.access import PATHS
from ivflat.servers.peer import HostPeer

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]

VECTORS = 4
both_paths = pytest.mark.parametrize("access_path", PATHS)


@pytest.fixture
def server4(make_server):
    """A server handing out 4 vectors per peer."""
    return make_server(vectors=VECTORS)


@pytest.fixture
def dev(server4, launch_dev):
    """The plugin's ``dev``, on the 4-vector server."""
    return launch_dev(server4)


@pytest.fixture
def peer_and_dev(server4, launch_dev):
    """A host peer that connected first, and a device that knows all its vectors."""
    with HostPeer(server4.socket_path) as peer:
        dev = launch_dev(server4)
        dev.wait_vectors(peer.id, VECTORS)
        peer.wait_peer_vectors(dev.ivposition, VECTORS)
        yield peer, dev


@both_paths
def test_doorbell_to_self_gives_exactly_one_pulse(dev):
    """Ringing its own vector 0 raises and lowers the NVIC input once, per ring."""
    mark = dev.mark()
    dev.ring(dev.ivposition, 0)
    dev.wait_pulses(1, since=mark)
    dev.settle()
    assert dev.pulses_since(mark) == 1
    dev.ring(dev.ivposition, 0)
    dev.wait_pulses(2, since=mark)
    dev.settle()
    assert dev.pulses_since(mark) == 2


@both_paths
def test_repeated_rings_are_not_lost(dev):
    """N rings, each waited for, give N pulses: none merged or dropped."""
    mark = dev.mark()
    for i in range(1, 21):
        dev.ring(dev.ivposition, 0)
        dev.wait_pulses(i, since=mark)
    dev.settle()
    assert dev.pulses_since(mark) == 20


@both_paths
@pytest.mark.parametrize("vector", range(VECTORS))
def test_guest_rings_exactly_that_host_vector(peer_and_dev, vector):
    """DOORBELL = peer<<16 | v makes exactly eventfd v of that peer readable, no other."""
    peer, dev = peer_and_dev
    dev.ring(peer.id, vector)
    assert peer.wait_vector(vector) == 1
    dev.settle()
    assert [v for v in range(VECTORS) if peer.pending(v)] == []


@pytest.mark.parametrize("vector", [
    pytest.param(v, marks=known_bug("own-vector-opaque", raises=AssertionError) if v else ())
    for v in range(VECTORS)])
def test_host_ringing_guest_vector_pulses_irq(peer_and_dev, vector):
    """A peer ringing any vector the guest owns gives one pulse on the guest's line, from
    the handler of that very vector. The ring makes the eventfd readable at once, so after
    settle() its handler has run: a device that never handles it (the known bug's handler
    clears vector 0's eventfd instead, and returns) fails here at once, not after waiting
    out a pulse that never comes."""
    peer, dev = peer_and_dev
    ivposition = dev.ivposition
    mark, traced = dev.mark(), dev.trace_mark()
    peer.ring(ivposition, vector)
    dev.settle()
    assert dev.own_vectors_fired_since(traced) == [vector]
    assert dev.pulses_since(mark) == 1


@both_paths
def test_doorbell_halves_are_not_swapped(make_server, launch_dev):
    """peer in bits 31..16, vector in 15..0: with peer 2 and vector 1 distinguishable from
    peer 1 / vector 2, only peer 2's vector 1 fires."""
    server = make_server(kind="python", vectors=3, ids=[1, 2, 5])
    p1, p2 = HostPeer(server.socket_path), HostPeer(server.socket_path)
    try:
        dev = launch_dev(server)
        dev.wait_vectors(p2.id, 3)
        dev.wait_vectors(p1.id, 3)
        assert (p1.id, p2.id, dev.ivposition) == (1, 2, 5)
        dev.ring(2, 1)
        assert p2.wait_vector(1) == 1
        dev.settle()
        assert not p1.pending(2) and not p1.pending(1)
        assert [v for v in range(3) if p2.pending(v)] == []
    finally:
        p1.close()
        p2.close()


@both_paths
def test_doorbell_to_unknown_peer_is_ignored(peer_and_dev):
    """An id nobody has is traced as invalid and notifies nobody: not the guest itself (no
    pulse), not the host peer (no eventfd readable); QEMU survives and a ring to itself
    afterwards still gives exactly one pulse."""
    peer, dev = peer_and_dev
    mark = dev.mark()
    dev.ring(0x4242, 0)
    dev.wait_ring_to_nobody(0x4242)
    dev.settle()
    # the device's line only: on the CPU path UART0 RX (input 0) pulses per request byte
    assert dev.irq_events_since(mark) == []
    assert [v for v in range(VECTORS) if peer.pending(v)] == []
    mark = dev.mark()
    dev.ring(dev.ivposition, 0)
    dev.wait_pulses(1, since=mark)
    dev.settle()
    assert dev.pulses_since(mark) == 1


@pytest.mark.parametrize("target", [
    "self",
    pytest.param("peer", marks=known_bug("doorbell-vector-unchecked", raises=KnownBugCrash))])
def test_doorbell_vector_64_notifies_nobody(peer_and_dev, target):
    """Vector 64 is one past IVSHMEM_MAX_VECTOR_NUM. The device does not bounds-check it
    (vector[64] reads the peer's vector_counter/id as a notifier; on 10.0.x the padding that
    lands in `initialized` is zero, so nothing is written): nobody may be notified and QEMU
    must survive. Under ASan the read past the last element of the heap-allocated peers
    array is a heap-buffer-overflow (the device bug); the guest's own entry sits inside the
    device state, where ASan sees nothing."""
    peer, dev = peer_and_dev
    target_id = dev.ivposition if target == "self" else peer.id
    mark = dev.mark()
    dev.ring(target_id, 64)
    dev.settle()
    assert dev.is_running(), dev.death_reason()
    assert dev.irq_events_since(mark, every_line=True) == []
    assert [v for v in range(VECTORS) if peer.pending(v)] == []


@known_bug("doorbell-vector-unchecked", raises=KnownBugCrash)
def test_doorbell_vector_far_out_of_range_is_safe(dev, qemu_caps):
    """Judged only under AddressSanitizer (ci/build-qemu --sanitize): without it the wild
    read's outcome depends on heap layout, so the test skips."""
    if not qemu_caps.asan:
        pytest.skip("needs an ASan build (ci/build-qemu --sanitize) to see the wild read")
    dev.ring(dev.ivposition, 0xFFFF)
    with contextlib.suppress(Exception):
        dev.settle()
    assert not dev.crashed(), dev.death_reason()


@both_paths
def test_doorbell_vector_the_peer_lacks_is_harmless(peer_and_dev):
    """A vector the peer does not have (4..63 of a 4-vector peer) hits an uninitialised
    notifier, which event_notifier_set refuses: nothing fires, QEMU survives."""
    peer, dev = peer_and_dev
    dev.ring(peer.id, VECTORS + 3)
    dev.settle()
    assert dev.is_running()
    assert [v for v in range(VECTORS) if peer.pending(v)] == []
    dev.ring(peer.id, 0)
    assert peer.wait_vector(0) == 1


def test_no_irq_path_means_no_irq_but_device_works(ivshmem_server, launch_dev, qemu_caps):
    """Without x-irq-qompath QEMU warns (in its wiring's words: ivflat.device.wirings), IVPOSITION
    and shm work, and a self-ring pulses nothing on any NVIC input."""
    warning = semantics(qemu_caps.wiring).no_irq_warning
    dev = launch_dev(ivshmem_server, irq_qompath=None)
    stderr = dev.stderr_since()
    assert any(warning in ln for ln in stderr), stderr
    dev.shm_write(0, b"still works")
    assert ivshmem_server.read(0, 11) == b"still works"
    mark = dev.mark()
    dev.ring(dev.ivposition, 0)
    dev.wait_own_vector_fired()
    dev.settle()
    assert dev.irq_events_since(mark, every_line=True) == []
