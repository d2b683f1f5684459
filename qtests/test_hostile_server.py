"""A hostile or broken ivshmem server: every bad greeting or message has a defined outcome
(clean error exit, ignored, or a device bug marked xfail(strict) so a fix shows).

Messages after the greeting are processed asynchronously and in order, so a test that must
know a bad message was handled sends a sentinel afterwards (a vector for an unused peer id)
and waits for its trace: the fence. If QEMU died instead, the wait says so.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from ivflat import board
from ivflat.faults import Fault
from ivflat.known_bugs import KnownBugCrash, known_bug
from ivflat.peer import readable
from ivflat.wire import encode

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]

SENTINEL = 0x7777


def _fence(server, vm, own_id: int) -> None:
    """Send a sentinel peer vector to the guest and wait until the device registered it."""
    efd = os.eventfd(0)
    try:
        server.send_raw(own_id, SENTINEL, fd=efd)  # the server sends a dup
    finally:
        os.close(efd)
    vm.wait_vectors(SENTINEL, 1)


@pytest.mark.parametrize("fault,needle", [
    (Fault.NO_SHM_FD, "Could not receive valid shmem fd"),
    (Fault.WRONG_SIZE_FD, "shmem size different from device size"),
    (Fault.NON_SHM_FD, "shmem size different from device size"),
])
def test_bad_shm_fd_is_a_clean_error(make_server, launch_vm, fault, needle):
    server = make_server(kind="python", fault=fault)
    launch_vm(server, wait_ready=False).expect_error_exit(needle)


@known_bug("version-unchecked", raises=AssertionError)
def test_wrong_protocol_version_is_refused(make_server, launch_vm):
    """ivshmem-spec: version 0. ivshmem-pci refuses others; ivshmem-flat should too."""
    from ivflat.qtest import QTestDisconnected

    server = make_server(kind="python", fault=Fault.WRONG_VERSION)
    vm = launch_vm(server, wait_ready=False)
    try:
        vm.qtest.cmd("endianness")  # answered: the machine came up, the version accepted
        accepted = True
    except QTestDisconnected:
        accepted = False
    assert not accepted, "QEMU accepted a greeting with protocol version != 0"
    vm.expect_error_exit("version")


@known_bug("eof-mid-greeting", raises=TimeoutError)
def test_server_closing_mid_greeting_is_a_clean_error(make_server, launch_vm):
    server = make_server(kind="python", fault=Fault.CLOSE_MID_GREETING)
    vm = launch_vm(server, wait_ready=False)
    # a known hang: a shorter base bound, scaled all the same
    vm.expect_error_exit("ivshmem", timeout=5)


def test_more_than_64_vectors_are_dropped(make_server, launch_dev):
    """Vectors past IVSHMEM_MAX_VECTOR_NUM are traced as failures and closed; the first 64
    work."""
    server = make_server(kind="python", vectors=70)
    dev = launch_dev(server, vectors=board.MAX_VECTORS)
    vm, own = dev.vm, dev.ivposition
    vm.wait_trace("ivshmem_flat_add_vector_failure", lambda t: t.ints[-1] == own, count=6)
    assert len(vm.traces("ivshmem_flat_add_vector_success")) == board.MAX_VECTORS
    mark = dev.mark()
    dev.ring(own, 0)
    dev.wait_pulses(1, since=mark)


def test_vectors_past_64_are_closed(make_server, launch_dev):
    """70 vectors announced for one peer: the device keeps 64 and closes the rest, so QEMU
    holds exactly 64 more fds (a dropped vector that is not closed leaks an fd per
    message from the server)."""
    server = make_server(kind="python")
    dev = launch_dev(server)
    vm, own = dev.vm, dev.ivposition
    before = vm.open_fds()
    for _ in range(board.MAX_VECTORS + 6):
        efd = os.eventfd(0)
        try:
            server.send_raw(own, SENTINEL, fd=efd)  # the server sends a dup
        finally:
            os.close(efd)
    vm.wait_trace("ivshmem_flat_add_vector_failure", lambda t: t.ints[-1] == SENTINEL,
                  count=6)
    vm.wait_open_fds(before + board.MAX_VECTORS)


def test_disconnect_for_unknown_id_is_harmless(make_server, launch_dev):
    """A disconnect naming an id that never existed: QEMU survives and still works."""
    server = make_server(kind="python", fault=Fault.DISCONNECT_UNKNOWN_ID)
    dev = launch_dev(server, vectors=0)
    _fence(server, dev.vm, dev.ivposition)
    assert dev.vm.is_running()
    dev.vm.wait_vectors(dev.ivposition, 1)


@known_bug("disconnect-own-id", raises=KnownBugCrash)
def test_disconnect_for_own_id_is_survived(make_server, launch_vm):
    """The bad disconnect arrives right after the greeting, so QEMU may die before it even
    answers qtest: the id is fixed and the outcome judged on the process, not on qtest."""
    from ivflat.qtest import QTestError

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
    assert dev.vm.is_running()


@pytest.mark.parametrize("cut", [1, 4, 7])
def test_half_message_is_acted_on_only_when_whole(make_server, launch_dev, cut):
    """The first *cut* bytes of a new-peer message, with its eventfd, then nothing: the
    chardev holds the fd (QEMU's fd count says when it has read the piece), but the device
    must not know the peer yet, a DOORBELL to it is an invalid peer; once the rest comes,
    the peer has its vector and the ring reaches its eventfd exactly once."""
    server = make_server(kind="python")
    dev = launch_dev(server)
    vm, own = dev.vm, dev.ivposition
    before = vm.open_fds()
    msg = encode(SENTINEL)
    efd = os.eventfd(0)
    try:
        server.send_bytes(own, msg[:cut], fd=efd)
        vm.wait_open_fds(before + 1)  # the piece (and its fd) is in QEMU
        dev.ring(SENTINEL, 0)
        vm.wait_trace("ivshmem_flat_interrupt_invalid_peer", lambda t: t.ints == (SENTINEL,))
        # (not a read: QEMU's chardev makes a received fd blocking, for us too)
        assert not readable(efd, 0), "a half message made a peer the guest could ring"
        server.send_bytes(own, msg[cut:])
        vm.wait_vectors(SENTINEL, 1)
        dev.ring(SENTINEL, 0)
        assert readable(efd, 0) and os.eventfd_read(efd) == 1
        assert vm.open_fds() == before + 1  # the fd moved from the chardev to the device
    finally:
        os.close(efd)
