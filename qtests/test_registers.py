"""Register block: IVPOSITION, the reserved INTMASK/INTSTATUS, write-only DOORBELL, and
what narrower or unaligned accesses do (documented here as found in 10.0.x).

Every access contract runs on both paths (``access_path``, ivflat.qemu.access): qtest
(address_space_rw) and the guest CPU (TCG's MMIO path, through the access server firmware),
because the two split unaligned accesses differently and only the second is what a guest
does. A test that must differ between them says so (qtests/test_cpu_path.py).
"""

from __future__ import annotations

import re

import pytest

from ivflat.device import board
from ivflat.device.known_bugs import known_bug
from ivflat.qemu.access import PATHS

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]
both_paths = pytest.mark.parametrize("access_path", PATHS)


@both_paths
@pytest.mark.parametrize("peer_id", [0, 1, 7, 0x1234, 0xFFFE])
def test_ivposition_reports_server_assigned_id(make_server, launch_dev, peer_id):
    """IVPOSITION is the peer id the server handed out in the greeting, for small, large
    and 16-bit-boundary ids (the device keeps the id as uint16). No vector wait
    (``vectors=0``): it would look for the vectors of whatever id IVPOSITION says."""
    server = make_server(kind="python", ids=[peer_id])
    assert launch_dev(server, vectors=0).ivposition == peer_id


@both_paths
def test_ivposition_differs_per_connection(ivshmem_server, launch_dev):
    """Two guests on one server get distinct ids, and each reads its own."""
    a, b = (launch_dev(ivshmem_server, vectors=0) for _ in range(2))
    assert a.ivposition != b.ivposition
    assert {a.ivposition, b.ivposition} == set(ivshmem_server.wait_peers(2))


@both_paths
@pytest.mark.parametrize("reg", [board.INTMASK, board.INTSTATUS])
def test_reserved_registers_read_zero_and_ignore_writes(dev, reg):
    """INTMASK and INTSTATUS are reserved in revision 1: zero, whatever is written."""
    assert dev.reg(reg) == 0
    for value in (0xFFFFFFFF, 0x1, 0xA5A5A5A5):
        dev.set_reg(reg, value)
        assert dev.reg(reg) == 0


@both_paths
def test_ivposition_ignores_writes(dev):
    """IVPOSITION is read-only: the id is the server's to hand out, so a guest's write
    leaves the id it reads unchanged."""
    before = dev.ivposition
    dev.set_reg(board.IVPOSITION, before ^ 0xFFFF)
    assert dev.ivposition == before


@both_paths
def test_doorbell_reads_zero(dev):
    """DOORBELL is write-only: it reads as zero, also right after a ring."""
    assert dev.reg(board.DOORBELL) == 0
    dev.ring(dev.ivposition, 0)
    assert dev.reg(board.DOORBELL) == 0
    dev.wait_doorbell_reads(2)  # both reads reached the device: the zeros are its own


def test_register_block_is_16_bytes_at_iomem(vm):
    """info mtree: the MMIO region is exactly 0x10 bytes at x-bus-address-iomem."""
    mtree = vm.hmp("info mtree -f")
    start, end = board.IOMEM_ADDR, board.IOMEM_ADDR + board.REG_BLOCK_SIZE - 1
    assert re.search(rf"{start:016x}-{end:016x} \(prio 0, i/o\): ivshmem-mmio", mtree), mtree


@both_paths
def test_access_past_block_does_not_reach_device(dev):
    """The word after the block belongs to the board's background region: reads 0, takes a
    write without a fault (the unimplemented-device background takes any access), and the
    device sees neither (no register read or write reaches it at that offset)."""
    past = board.IOMEM_ADDR + board.REG_BLOCK_SIZE
    mark = dev.trace_mark()
    assert dev.io.readl(past) == 0
    dev.io.writel(past, 0xFFFFFFFF)
    assert dev.io.readl(past) == 0
    dev.reg(board.INTMASK)  # an access that does reach it: proves the trace is live
    dev.settle()
    offsets = dev.reads_since(mark)
    assert board.REG_BLOCK_SIZE not in offsets and offsets, offsets
    assert dev.writes_since(mark) == []


def _dev_with_id(make_server, launch_dev, peer_id: int = 0x1234):
    """A device whose IVPOSITION is *peer_id* (no vectors waited for: none are rung)."""
    return launch_dev(make_server(kind="python", ids=[peer_id]), vectors=0)


@both_paths
def test_narrow_reads_at_register_base(make_server, launch_dev):
    """8/16-bit reads at a register's own offset return its low lanes, little-endian (as
    it is: widened to a 32-bit read and masked; fixed: read with their own size)."""
    io = _dev_with_id(make_server, launch_dev).io
    base = board.IOMEM_ADDR + board.IVPOSITION
    assert io.readb(base) == 0x34
    assert io.readw(base) == 0x1234


@both_paths
@known_bug("narrow-read-inside-register", raises=AssertionError)
def test_narrow_reads_inside_a_register(make_server, launch_dev):
    """A CPU reading byte 1 or halfword 1 of IVPOSITION gets the id's upper lanes (or the
    access is refused): never a silent 0."""
    io = _dev_with_id(make_server, launch_dev).io
    base = board.IOMEM_ADDR + board.IVPOSITION
    assert io.readb(base + 1) == 0x12
    assert io.readw(base + 2) == 0


def _register_bytes(peer_id: int) -> bytes:
    """The block as little-endian bytes, and the background word after it (reads 0)."""
    regs = {board.IVPOSITION: peer_id}
    block = b"".join(regs.get(off, 0).to_bytes(4, "little")
                     for off in range(0, board.REG_BLOCK_SIZE, 4))
    return block + bytes(4)


@both_paths
@known_bug("narrow-read-inside-register", raises=AssertionError)
def test_reads_return_the_bytes_they_cover(make_server, launch_dev):
    """Every read of 1, 2 and 4 bytes at every offset of the block and the word past it,
    aligned or not, returns the bytes it covers, or is refused whole: on the CPU a fault,
    on qtest (which has no fault to show) a 0 that no register read reached.

    The paths split an unaligned read differently (a word at IVPOSITION-1: qtest a byte at 7,
    a halfword at 8, a byte at 10; TCG four bytes, 7 to 10), so with the narrow-read bug
    they read different wrong values there (qtest 0x00123400, right by luck of the
    halfword; the CPU 0x00003400, its byte at 9 being the bug's silent 0)."""
    dev = _dev_with_id(make_server, launch_dev)
    expected = _register_bytes(0x1234)
    wrong = []
    for size in (1, 2, 4):
        for off in range(len(expected) - size + 1):
            mark = dev.trace_mark()
            out = dev.io.access("r", size, board.IOMEM_ADDR + off)
            want = int.from_bytes(expected[off:off + size], "little")
            if out.fault is None and out.value == want:
                continue
            dev.settle()
            reached = dev.reads_since(mark)
            refused = not reached and (out.fault is not None or dev.io.name == "qtest")
            if not (refused and out.value == 0):
                wrong.append(f"{size}@{off:#x}: {out} want {want:#x}")
    assert wrong == [], wrong


@both_paths
@known_bug("unaligned-doorbell-write", raises=AssertionError)
def test_narrow_write_to_doorbell_does_not_ring(dev):
    """Only a whole 32-bit write at DOORBELL rings: a byte or halfword there carries no
    whole peer id and vector, and the device cannot tell it from a piece of a misaligned
    word write that qtest's or TCG's split handed it (the next test), so fix 0006 ignores
    it (logged as a guest error); then a word write rings exactly once.

    As it is (10.0.x) each narrow write is widened to a 32-bit write of the zero-extended
    value and rings peer 0 with that vector (ivshmem-pci does that too): three rings. The
    design and why: ci/patches/fixes/0006."""
    base = board.IOMEM_ADDR + board.DOORBELL
    mark = dev.trace_mark()
    dev.io.writew(base, 0x0000)
    dev.io.writeb(base, 0x00)
    dev.io.writel(base, board.doorbell_value(0, 0))
    dev.settle()
    assert dev.rings_since(mark) == [(0, 0)]


@both_paths
@known_bug("unaligned-doorbell-write", raises=AssertionError)
def test_unaligned_word_write_does_not_ring(dev):
    """A misaligned 32-bit write straddling DOORBELL must not ring anybody with a torn
    value; refusing it is fine (on the CPU: a fault the guest sees).

    Both paths split it into aligned pieces, each widened to a register write, but not the
    same pieces: qtest (memory_access_size) a byte at 11, a halfword at 12, a byte at 14;
    TCG (int_st_mmio_leN) four bytes, 11 to 14. 0x00001200 rings peer 0 vector 0x12 on both;
    0x00ABCD00 rings vector 0xABCD over qtest, 0xCD from the CPU. Fix 0006 rings DOORBELL
    only on a whole 32-bit write, so no piece rings on either path. (Its v1 set
    .impl.unaligned, which made qtest hand the access over whole, to be refused, but TCG
    splits before the memory core sees it: the CPU path kept ringing.)"""
    mark = dev.trace_mark()
    dev.io.access("w", 4, board.IOMEM_ADDR + board.DOORBELL - 1, 0x00001200)
    dev.settle()
    assert dev.rings_since(mark) == []
