"""Firmware from images/ really running on the Cortex-M3, driving the device as a driver
would: CPU-issued register accesses, NVIC delivery, coherence with a running peer."""

from __future__ import annotations

import os
import struct

import pytest

from ivflat import board, mailbox
from ivflat.device import IvshmemFlat

pytestmark = [pytest.mark.needs_device, pytest.mark.guest]


def _boot_id(guest, pattern: str) -> int:
    return int(guest.expect(pattern).group(1))


def _wait_reply(shm, seq: int, timeout: float, guest) -> mailbox.Reply:
    """Bounded wait for the echo reply: the guest prints `echo: seq=S` after publishing it,
    so the console line is the event; the reply is then read from shared memory."""
    guest.expect(rf"echo: seq={seq}\r?\n", timeout=timeout)
    return mailbox.unpack_reply(shm.read(mailbox.off("REPLY_OFF"), mailbox.reply_size()))


def test_hello_prints_id_and_sees_host_memory(ivshmem_server, launch_guest):
    """The CPU reads IVPOSITION and a magic the host put in shared memory before boot."""
    magic = int.from_bytes(os.urandom(4), "little") | 1
    ivshmem_server.write(mailbox.off("MAGIC_OFF"), struct.pack("<I", magic))
    g = launch_guest(ivshmem_server, "hello")
    gid = _boot_id(g, r"hello: id=(\d+)\r?\n")
    assert gid in ivshmem_server.peers
    m = g.expect(r"shm base=(0x[0-9a-f]+) size=(\d+)\r?\n")
    assert int(m.group(1), 16) == board.SHMEM_ADDR and int(m.group(2)) == board.SHMEM_SIZE
    assert int(g.expect(r"shm magic=(0x[0-9a-f]+)\r?\n").group(1), 16) == magic
    g.expect("READY")


def test_device_irq_reaches_cpu_while_uart_works(ivshmem_server, launch_guest):
    """A host peer rings the guest 3 times: the NVIC delivers input 6 to the ISR each time
    and the UART keeps printing between them (device and UART interrupts coexist)."""
    from ivflat.peer import HostPeer

    g = launch_guest(ivshmem_server, "hello")
    gid = _boot_id(g, r"hello: id=(\d+)\r?\n")
    g.expect("READY")
    with HostPeer(ivshmem_server.socket_path) as peer:
        peer.wait_peer_vectors(gid, 1)
        g.wait_vectors(peer.id, 1)
        for i in range(1, 4):
            peer.ring(gid, 0)
            g.expect(rf"hello: irqs={i}\r?\n")


def test_echo_round_trips_with_host_peer(ivshmem_server, launch_guest):
    """Host peer -> echo firmware -> host peer: the reply is the request reversed, the
    guest rings the sender back, and sequence numbers match. Several sizes incl. 0 and max,
    and an oversize request gets an error status."""
    from ivflat.peer import HostPeer

    g = launch_guest(ivshmem_server, "echo")
    gid = _boot_id(g, r"echo: id=(\d+) READY")
    with HostPeer(ivshmem_server.socket_path) as peer:
        peer.wait_peer_vectors(gid, 1)
        g.wait_vectors(peer.id, 1)
        for seq, n in enumerate([13, 0, 1, mailbox.off("DATA_MAX")], start=1):
            data = os.urandom(n)
            mailbox.write_request(ivshmem_server, seq, peer.id, data)
            peer.ring(gid, mailbox.off("VECTOR"))
            reply = _wait_reply(ivshmem_server, seq, 5, g)
            assert peer.wait_vector(0, timeout=5) >= 1
            assert (reply.seq, reply.responder, reply.status) == (seq, gid, mailbox.off("OK"))
            assert reply.data == data[::-1]
        mailbox.write_request(ivshmem_server, 99, peer.id, b"x" * 225)
        peer.ring(gid, 0)
        g.expect(r"echo: seq=99 bad len")
        peer.wait_vector(0, timeout=5)
        bad = mailbox.unpack_reply(ivshmem_server.read(mailbox.off("REPLY_OFF"),
                                                       mailbox.reply_size()))
        assert (bad.seq, bad.status, bad.length) == (99, mailbox.off("EBADLEN"), 0)


def test_two_firmware_guests_play_pingpong(ivshmem_server, launch_guest):
    """Two guests bounce a counter through shared memory N times, ringing each other."""
    from ivflat.peer import HostPeer

    a = launch_guest(ivshmem_server, "pingpong", name="ping")
    b = launch_guest(ivshmem_server, "pingpong", name="pong")
    ida = _boot_id(a, r"pingpong: id=(\d+) READY")
    idb = _boot_id(b, r"pingpong: id=(\d+) READY")
    a.wait_vectors(idb, 1)
    b.wait_vectors(ida, 1)
    rounds = 500
    mailbox.write_pingpong(ivshmem_server, rounds, (ida, idb))
    with HostPeer(ivshmem_server.socket_path) as starter:
        starter.wait_peer_vectors(ida, 1)
        starter.ring(ida, 0)
        a.expect(rf"pingpong: done count={rounds}\r?\n")
        b.expect(rf"pingpong: done count={rounds}\r?\n")
    got_rounds, p0, p1, count, last = mailbox.read_pingpong(ivshmem_server)
    assert (got_rounds, p0, p1, count) == (rounds, ida, idb, rounds)
    assert last in (ida, idb)


@pytest.mark.needs_qtest
def test_qtest_vm_and_firmware_vm_talk(ivshmem_server, launch_guest, launch_vm):
    """A qtest-driven VM asks the echo firmware through shared memory and its doorbell; the
    firmware answers and rings the qtest VM, whose NVIC input pulses."""
    g = launch_guest(ivshmem_server, "echo")
    gid = _boot_id(g, r"echo: id=(\d+) READY")
    q = launch_vm(ivshmem_server, name="qtest-vm")
    q.irq_intercept_in(board.IRQ_INTERCEPT_QOM)
    dev = IvshmemFlat(q)
    qid = dev.ivposition
    q.wait_vectors(gid, 1)
    g.wait_vectors(qid, 1)
    body, seq_word = mailbox.pack_request(7, qid, b"from qtest")
    dev.shm_write(mailbox.off("REQ_OFF") + 4, body)
    dev.shm_write(mailbox.off("REQ_OFF"), seq_word)
    mark = dev.mark()
    dev.ring(gid, 0)
    dev.wait_pulses(1, since=mark, timeout=5)
    reply = mailbox.unpack_reply(dev.shm_read(mailbox.off("REPLY_OFF"), mailbox.reply_size()))
    assert (reply.seq, reply.responder, reply.data) == (7, gid, b"from qtest"[::-1])
    g.expect(r"echo: seq=7\r?\n")
