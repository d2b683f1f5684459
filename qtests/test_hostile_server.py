"""A hostile or broken ivshmem server: every bad greeting or message has a defined outcome
(clean error exit, ignored, or a device bug marked xfail(strict) so a fix shows).

Messages after the greeting are processed asynchronously and in order, so a test that must
know a bad message was handled sends a sentinel afterwards (a vector for an unused peer id)
and waits for its trace: the fence. If QEMU died instead, the wait says so.
"""

from __future__ import annotations

import contextlib
import os
import re

import pytest

from ivflat.device import board
from ivflat.device.known_bugs import KnownBugCrash, known_bug
from ivflat.protocol.ivshmem import MAX_PEER_ID, encode, readable
from ivflat.protocol.qtest import QTestDisconnected, QTestError
from ivflat.servers.faults import Fault

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]

SENTINEL = 0x7777
OWN = 3  # the guest's id in the message-range tests
INT64_MAX, INT64_MIN = (1 << 63) - 1, -(1 << 63)
# how ivshmem-pci reports a refused message (process_msg, process_msg_shmem): "server sent
# invalid message N", "server sent unexpected shared memory message"
REFUSED_RE = re.compile(r"(?i)(invalid|unexpected)\b.*\bmessage")


def _fence(server, dev, own_id: int) -> None:
    """Send a sentinel peer vector to the guest and wait until the device registered it
    (*dev*: the driver, or the machine of a test that has no driver yet)."""
    efd = os.eventfd(0)
    try:
        server.send_raw(own_id, SENTINEL, fd=efd)  # the server sends a dup
    finally:
        os.close(efd)
    dev.wait_vectors(SENTINEL, 1)


@pytest.mark.parametrize("fault,needle", [
    (Fault.NO_SHM_FD, "Could not receive valid shmem fd"),
    # the memfd, but in a message whose value is not -1 (ivshmem-spec: the shared memory
    # message is -1): refused like a missing fd
    (Fault.SHM_MESSAGE_VALUE, "Could not receive valid shmem fd"),
    (Fault.WRONG_SIZE_FD, "shmem size different from device size"),
    (Fault.NON_SHM_FD, "shmem size different from device size"),
])
def test_bad_shm_fd_is_a_clean_error(make_server, launch_vm, fault, needle):
    """A greeting whose shared memory fd is missing, not in the shared memory message, of
    another size than the device's or not memory at all leaves the device no RAM to map:
    realize fails, and QEMU exits with status 1 naming the problem (*needle*), instead of
    crashing or coming up with nothing behind the window."""
    server = make_server(kind="python", fault=fault)
    launch_vm(server, wait_ready=False).expect_error_exit(needle)


@known_bug("version-unchecked", raises=AssertionError)
def test_wrong_protocol_version_is_refused(make_server, launch_vm):
    """ivshmem-spec: version 0. ivshmem-pci refuses others; ivshmem-flat should too."""
    server = make_server(kind="python", fault=Fault.WRONG_VERSION)
    vm = launch_vm(server, wait_ready=False)
    assert not _came_up(vm), "QEMU accepted a greeting with protocol version != 0"
    vm.expect_error_exit("version")


@known_bug("shm-map-error-ignored", raises=AssertionError)
def test_unmappable_shm_fd_is_a_clean_error(make_server, launch_vm):
    """A shared memory fd of the right size that cannot be mapped (a memfd sealed against
    writes: fstat() is happy, a shared writable mmap() fails with EPERM) must fail realize
    with the mapping's error, as ivshmem-pci's does, not leave the guest a hole where its
    shared memory should be (reads 0, writes lost)."""
    server = make_server(kind="python", fault=Fault.SEALED_SHM_FD)
    vm = launch_vm(server, wait_ready=False)
    assert not _came_up(vm), "QEMU accepted a shared memory fd it cannot map"
    vm.expect_error_exit("map")


def _came_up(vm) -> bool:
    """Whether the machine came up (qtest answers), i.e. the device's realize succeeded."""
    try:
        vm.qtest.cmd("endianness")
        return True
    except QTestDisconnected:
        return False


@known_bug("eof-mid-greeting", raises=TimeoutError)
def test_server_closing_mid_greeting_is_a_clean_error(make_server, launch_vm):
    """A server that hangs up halfway through the greeting leaves realize nothing to wait
    for: QEMU must exit with an error naming ivshmem, not wait for the rest forever."""
    server = make_server(kind="python", fault=Fault.CLOSE_MID_GREETING)
    vm = launch_vm(server, wait_ready=False)
    # a known hang: a shorter base bound, scaled all the same
    vm.expect_error_exit("ivshmem", timeout=5)


def test_more_than_64_vectors_are_dropped(make_server, launch_dev):
    """Vectors past IVSHMEM_MAX_VECTOR_NUM are traced as failures and closed; the first 64
    work."""
    server = make_server(kind="python", vectors=70)
    dev = launch_dev(server, vectors=board.MAX_VECTORS)
    own = dev.ivposition
    dev.wait_vectors_dropped(own, 6)
    assert dev.vectors_of(own) == board.MAX_VECTORS
    mark = dev.mark()
    dev.ring(own, 0)
    dev.wait_pulses(1, since=mark)


def test_vectors_past_64_are_closed(make_server, launch_dev):
    """70 vectors announced for one peer: the device keeps 64 and closes the rest, so QEMU
    holds exactly 64 more fds (a dropped vector that is not closed leaks an fd per
    message from the server)."""
    server = make_server(kind="python")
    dev = launch_dev(server)
    own = dev.ivposition
    before = dev.open_fds()
    for _ in range(board.MAX_VECTORS + 6):
        efd = os.eventfd(0)
        try:
            server.send_raw(own, SENTINEL, fd=efd)  # the server sends a dup
        finally:
            os.close(efd)
    dev.wait_vectors_dropped(SENTINEL, 6)
    dev.wait_open_fds(before + board.MAX_VECTORS)


def test_disconnect_for_unknown_id_is_harmless(make_server, launch_dev):
    """A disconnect naming an id that never existed: QEMU survives and still works."""
    server = make_server(kind="python", fault=Fault.DISCONNECT_UNKNOWN_ID)
    dev = launch_dev(server, vectors=0)
    _fence(server, dev, dev.ivposition)
    assert dev.is_running(), dev.death_reason()
    dev.wait_vectors(dev.ivposition)


@known_bug("disconnect-own-id", raises=KnownBugCrash)
def test_disconnect_for_own_id_is_survived(make_server, launch_vm):
    """The bad disconnect arrives right after the greeting, so QEMU may die before it even
    answers qtest: the id is fixed and the outcome judged on the process, not on qtest."""
    server = make_server(kind="python", fault=Fault.DISCONNECT_OWN_ID, ids=[3])
    vm = launch_vm(server, wait_ready=False)
    server.wait_accepted(1)
    # QEMU may die before the fence (or the server may have dropped it): judged below
    with contextlib.suppress(TimeoutError, QTestError, KeyError):
        _fence(server, vm, 3)
    assert not vm.crashed(), f"QEMU crashed: {vm.death_reason()}"
    assert vm.is_running()


def test_truncated_message_is_buffered_not_fatal(make_server, launch_dev):
    """Half a message after the greeting is kept until the rest arrives; meanwhile the
    device works (IVPOSITION, self doorbell)."""
    dev = launch_dev(make_server(kind="python", fault=Fault.TRUNCATED))
    mark = dev.mark()
    dev.ring(dev.ivposition, 0)
    dev.wait_pulses(1, since=mark)
    assert dev.is_running(), dev.death_reason()


@pytest.mark.parametrize("cut", [1, 4, 7])
def test_half_message_is_acted_on_only_when_whole(make_server, launch_dev, cut):
    """The first *cut* bytes of a new-peer message, with its eventfd, then nothing: the
    chardev holds the fd (QEMU's fd count says when it has read the piece), but the device
    must not know the peer yet, a DOORBELL to it is an invalid peer; once the rest comes,
    the peer has its vector and the ring reaches its eventfd exactly once."""
    server = make_server(kind="python")
    dev = launch_dev(server)
    own = dev.ivposition
    before = dev.open_fds()
    msg = encode(SENTINEL)
    efd = os.eventfd(0)
    try:
        server.send_bytes(own, msg[:cut], fd=efd)
        dev.wait_open_fds(before + 1)  # the piece (and its fd) is in QEMU
        dev.ring(SENTINEL, 0)
        dev.wait_ring_to_nobody(SENTINEL)
        # (not a read: QEMU's chardev makes a received fd blocking, for us too)
        assert not readable(efd, 0), "a half message made a peer the guest could ring"
        server.send_bytes(own, msg[cut:])
        dev.wait_vectors(SENTINEL)
        dev.ring(SENTINEL, 0)
        assert readable(efd, 0) and os.eventfd_read(efd) == 1
        assert dev.open_fds() == before + 1  # the fd moved from the chardev to the device
    finally:
        os.close(efd)


# ---------------------------------------------------------------- message range
# Rules MSG-RANGE, MSG-SHM-AGAIN, GREET-ID (ivflat.device.rules): ids are 0..65535; ivshmem-pci's
# process_msg refuses anything outside -1..IVSHMEM_MAX_PEERS (0xffff) with an error and
# closes its fd, and -1 after the greeting ("unexpected shared memory message") too.


def _refused(dev, fds: int, stderr_mark: int) -> None:
    """After a fence: the bad message left no fd behind (*fds*: what QEMU should hold), an
    error written since *stderr_mark* names it, QEMU lives on."""
    assert dev.open_fds() == fds, "the fd of a refused message was kept"
    errors = dev.stderr_since(stderr_mark)
    assert any(REFUSED_RE.search(ln) for ln in errors), \
        f"no error reported for the refused message: {errors[-5:]}"
    assert dev.is_running(), dev.death_reason()


@pytest.mark.parametrize("peer", [0, 0x7FFF, 0x8000, 0xFFFE, MAX_PEER_ID], ids=hex)
def test_ids_at_the_range_edges_are_peers(make_server, launch_dev, peer):
    """Any id in 0..65535 (IVSHMEM_MAX_PEERS) is a peer: its vector is rung exactly once,
    its disconnect closes the fd, and no error is reported."""
    server = make_server(kind="python", ids=[OWN])
    dev = launch_dev(server)
    before = dev.open_fds()
    efd = os.eventfd(0)
    try:
        server.send_raw(OWN, peer, fd=efd)
        dev.wait_vectors(peer)
        dev.ring(peer, 0)
        assert readable(efd, 0) and os.eventfd_read(efd) == 1
        server.send_raw(OWN, peer)
        _fence(server, dev, OWN)
        assert dev.open_fds() == before + 1, "the departed peer's fd is still held"
        dev.ring(peer, 0)
        assert not readable(efd, 0), "a departed peer was rung"
    finally:
        os.close(efd)
    assert not any(REFUSED_RE.search(ln) for ln in dev.stderr_since())


@pytest.mark.parametrize("own", [0, 0x8000, MAX_PEER_ID], ids=hex)
def test_own_ids_at_the_range_edges(make_server, launch_dev, own):
    """Any own id in 0..65535 is taken whole: IVPOSITION reads it, and a DOORBELL to it
    rings the guest's own vector (one pulse)."""
    server = make_server(kind="python", ids=[own])
    dev = launch_dev(server)
    assert dev.ivposition == own
    mark = dev.mark()
    dev.ring(own, 0)
    dev.wait_pulses(1, since=mark)


_BUG = known_bug("message-range-unchecked", raises=AssertionError)


@pytest.mark.parametrize("value,alias", [
    pytest.param(MAX_PEER_ID + 1, 0, id="0x10000", marks=_BUG),
    pytest.param(0x10000 | OWN, OWN, id="own+0x10000", marks=_BUG),
    pytest.param(-1, 0xFFFF, id="-1", marks=_BUG),
    pytest.param(-2, 0xFFFE, id="-2", marks=_BUG),
    pytest.param(INT64_MAX, 0xFFFF, id="int64-max", marks=_BUG),
    pytest.param(INT64_MIN, 0, id="int64-min", marks=_BUG),
])
def test_out_of_range_vector_message_is_refused(make_server, launch_dev, value, alias):
    """A vector for an id outside 0..65535, or -1 (the shared memory message) after the
    greeting: the fd is closed, not taken as a vector of the id's low 16 bits (*alias*:
    as is, the guest's own id or a peer that DOORBELL then rings)."""
    server = make_server(kind="python", ids=[OWN])
    dev = launch_dev(server)
    before, errors = dev.open_fds(), dev.stderr_mark()
    efd = os.eventfd(0)
    try:
        server.send_raw(OWN, value, fd=efd)
        _fence(server, dev, OWN)
        _refused(dev, before + 1, errors)  # the sentinel's fd only
        dev.ring(alias, 0)
        assert not readable(efd, 0), f"DOORBELL to {alias:#x} rang the refused fd"
    finally:
        os.close(efd)


@pytest.mark.parametrize("value,alias", [
    pytest.param(MAX_PEER_ID + 1, 0, id="0x10000", marks=_BUG),
    pytest.param(-1, 0xFFFF, id="-1", marks=_BUG),
    pytest.param(-2, 0xFFFE, id="-2", marks=_BUG),
])
def test_out_of_range_disconnect_is_refused(make_server, launch_dev, value, alias):
    """An id outside 0..65535 (or -1) without fd is no disconnect of peer *alias* (its low
    16 bits): that peer keeps its vector."""
    server = make_server(kind="python", ids=[OWN])
    dev = launch_dev(server)
    efd = os.eventfd(0)
    try:
        server.send_raw(OWN, alias, fd=efd)
        dev.wait_vectors(alias)
        before, errors = dev.open_fds(), dev.stderr_mark()
        server.send_raw(OWN, value)
        _fence(server, dev, OWN)
        dev.ring(alias, 0)
        assert readable(efd, 0), f"message {value:#x} disconnected peer {alias:#x}"
        _refused(dev, before + 1, errors)
    finally:
        os.close(efd)


@known_bug("message-range-unchecked", raises=AssertionError)
def test_repeated_shm_message_is_never_written(make_server, launch_dev):
    """A server that sends the shared memory message (-1 with a memory fd) again after the
    greeting: as is, the device takes it as peer 0xffff's vector, and a DOORBELL to peer
    0xffff writes 8 bytes into that memory. ivshmem-pci refuses it."""
    server = make_server(kind="python", ids=[OWN])
    dev = launch_dev(server)
    before, errors = dev.open_fds(), dev.stderr_mark()
    mem = os.memfd_create("ivflat-shm-again", os.MFD_CLOEXEC)
    try:
        os.ftruncate(mem, board.SHMEM_SIZE)
        server.send_raw(OWN, -1, fd=mem)
        _fence(server, dev, OWN)
        dev.ring(MAX_PEER_ID, 0)
        assert os.pread(mem, 8, 0) == bytes(8), "DOORBELL to peer 0xffff wrote into memory"
        _refused(dev, before + 1, errors)
    finally:
        os.close(mem)


@pytest.mark.parametrize("own", [
    pytest.param(0x10003, id="0x10003", marks=_BUG),
    pytest.param(-1, id="-1", marks=_BUG),
])
def test_out_of_range_own_id_fails_realize(make_server, launch_vm, own):
    """ivshmem-pci: "server sent invalid ID message", realize fails; as is, the device
    comes up with the id's low 16 bits as IVPOSITION."""
    server = make_server(kind="python", ids=[own])
    vm = launch_vm(server, wait_ready=False)
    assert not _came_up(vm), f"QEMU accepted own id {own:#x}"
    vm.expect_error_exit()
