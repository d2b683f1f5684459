"""Register block: IVPOSITION, the reserved INTMASK/INTSTATUS, write-only DOORBELL, and
what narrower or unaligned accesses do (documented here as found in 10.0.x)."""

from __future__ import annotations

import re

import pytest

from ivflat import board
from ivflat.known_bugs import known_bug

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]


@pytest.mark.parametrize("peer_id", [0, 1, 7, 0x1234, 0xFFFE])
def test_ivposition_reports_server_assigned_id(make_server, launch_dev, peer_id):
    """IVPOSITION is the peer id the server handed out in the greeting, for small, large
    and 16-bit-boundary ids (the device keeps the id as uint16). No vector wait
    (``vectors=0``): it would look for the vectors of whatever id IVPOSITION says."""
    server = make_server(kind="python", ids=[peer_id])
    assert launch_dev(server, vectors=0).ivposition == peer_id


def test_ivposition_differs_per_connection(ivshmem_server, launch_dev):
    """Two guests on one server get distinct ids, and each reads its own."""
    a, b = (launch_dev(ivshmem_server, vectors=0) for _ in range(2))
    assert a.ivposition != b.ivposition
    assert {a.ivposition, b.ivposition} == set(ivshmem_server.wait_peers(2))


@pytest.mark.parametrize("reg", [board.INTMASK, board.INTSTATUS])
def test_reserved_registers_read_zero_and_ignore_writes(dev, reg):
    """INTMASK and INTSTATUS are reserved in revision 1: zero, whatever is written."""
    assert dev.reg(reg) == 0
    for value in (0xFFFFFFFF, 0x1, 0xA5A5A5A5):
        dev.set_reg(reg, value)
        assert dev.reg(reg) == 0


def test_ivposition_ignores_writes(dev):
    before = dev.ivposition
    dev.set_reg(board.IVPOSITION, before ^ 0xFFFF)
    assert dev.ivposition == before


def test_doorbell_reads_zero(dev):
    """DOORBELL is write-only: it reads as zero, also right after a ring."""
    assert dev.reg(board.DOORBELL) == 0
    dev.ring(dev.ivposition, 0)
    assert dev.reg(board.DOORBELL) == 0
    dev.vm.wait_trace("ivshmem_flat_read_mmr_doorbell", count=2)


def test_register_block_is_16_bytes_at_iomem(vm):
    """info mtree: the MMIO region is exactly 0x10 bytes at x-bus-address-iomem."""
    mtree = vm.hmp("info mtree -f")
    start, end = board.IOMEM_ADDR, board.IOMEM_ADDR + board.REG_BLOCK_SIZE - 1
    assert re.search(rf"{start:016x}-{end:016x} \(prio 0, i/o\): ivshmem-mmio", mtree), mtree


def test_access_past_block_does_not_reach_device(dev):
    """The word after the block belongs to the board's background region: reads 0 and the
    device sees no access (no ivshmem_flat_read_mmr trace for it)."""
    assert dev.vm.readl(board.IOMEM_ADDR + board.REG_BLOCK_SIZE) == 0
    dev.reg(board.INTMASK)  # an access that does reach it: proves the trace is live
    dev.settle()
    offsets = [t.ints[0] for t in dev.vm.traces("ivshmem_flat_read_mmr")]
    assert board.REG_BLOCK_SIZE not in offsets and offsets, offsets


def test_narrow_reads_at_register_base(make_server, launch_vm):
    """8/16-bit reads at a register's own offset are widened to 32 bits and masked: the
    low lanes of IVPOSITION read back little-endian."""
    vm = launch_vm(make_server(kind="python", ids=[0x1234]))
    base = board.IOMEM_ADDR + board.IVPOSITION
    assert vm.readb(base) == 0x34
    assert vm.readw(base) == 0x1234


@known_bug("narrow-read-inside-register", raises=AssertionError)
def test_narrow_reads_inside_a_register(make_server, launch_vm):
    """A CPU reading byte 1 or halfword 1 of IVPOSITION gets the id's upper lanes (or the
    access is refused): never a silent 0."""
    vm = launch_vm(make_server(kind="python", ids=[0x1234]))
    base = board.IOMEM_ADDR + board.IVPOSITION
    assert vm.readb(base + 1) == 0x12
    assert vm.readw(base + 2) == 0


def test_halfword_write_to_doorbell_low_half_rings(dev):
    """A 16-bit write to DOORBELL's low half is widened to a 32-bit write of the same value:
    peer 0, the given vector (documented behaviour of 10.0.x)."""
    dev.vm.writew(board.IOMEM_ADDR + board.DOORBELL, 0x0000)
    dev.settle()
    rings = dev.vm.traces("ivshmem_flat_interrupt_peer")
    assert rings and rings[-1].ints[:2] == (0, 0)


@known_bug("unaligned-doorbell-write", raises=AssertionError)
def test_unaligned_word_write_does_not_ring(dev):
    """A misaligned 32-bit write straddling DOORBELL must not ring anybody with a torn
    value (here it would ring peer 0 vector 0x12 or 0)."""
    dev.sync_traces()
    mark = len(dev.vm.traces("ivshmem_flat_interrupt_peer"))
    dev.vm.writel(board.IOMEM_ADDR + board.DOORBELL - 1, 0x00001200)
    dev.settle()
    assert dev.vm.traces("ivshmem_flat_interrupt_peer")[mark:] == []
