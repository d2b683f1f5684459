"""The CPU path itself (ivflat.qemu.access): that it observes truly, and where it must differ from
qtest.

The register contracts run on both paths in test_registers.py and test_doorbell.py; here are
the facts those rely on (qtest's IRQ log on a running CPU shows the pulses the guest takes),
the shared RAM through the CPU, and the one difference that is not a device bug: a CPU
access to nothing is a bus fault the guest sees, a qtest access to nothing silently reads 0.
"""

from __future__ import annotations

import os

import pytest

from ivflat.device import board
from ivflat.qemu.access import FAULT_NAMES, PATHS

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]

BUSFAULT = next(n for n, name in FAULT_NAMES.items() if name == "BusFault")
CFSR_PRECISERR, CFSR_BFARVALID = 1 << 9, 1 << 15


@pytest.mark.parametrize("access_path", ["cpu"])
def test_pulses_seen_by_qtest_reach_the_guest_isr(dev):
    """On the CPU path the pulses of the catalogue are counted on qtest's IRQ log: qtest's
    irq_intercept_in forwards each level to the NVIC (qtest_irq_handler calls the input's
    own handler first). So each self-ring the CPU makes is one pulse in the log and one run
    of the firmware's device ISR, whose count every reply carries: the two agree."""
    mark = dev.mark()
    for n in range(1, 6):
        dev.ring(dev.ivposition, 0)
        dev.wait_pulses(n, since=mark)
        assert dev.io.access("r", 4, board.IOMEM_ADDR + board.INTMASK).irqs == n
    dev.settle()
    assert dev.pulses_since(mark) == 5


@pytest.mark.parametrize("access_path", PATHS)
def test_shared_ram_takes_every_size_and_alignment(dev, ivshmem_server):
    """Stores of 1, 2 and 4 bytes at every alignment land in the server's memory byte for
    byte, and loads read back what the host wrote: plain RAM, no splitting to speak of."""
    base = 0x1000
    data = os.urandom(16)
    ivshmem_server.write(base, data)
    for size in (1, 2, 4):
        for off in range(4):
            want = int.from_bytes(data[off:off + size], "little")
            assert dev.io.read(size, board.SHMEM_ADDR + base + off) == want, (size, off)
    image = bytearray(data)
    for size, off, value in ((1, 1, 0x5A), (2, 3, 0xBEEF), (4, 6, 0x12345678),
                             (2, 12, 0xA55A), (4, 9, 0xCAFEF00D)):
        dev.io.write(size, board.SHMEM_ADDR + base + off, value)
        image[off:off + size] = value.to_bytes(size, "little")
    assert ivshmem_server.read(base, 16) == bytes(image)


@pytest.mark.parametrize("access_path", PATHS)
def test_access_past_the_shared_ram(dev, ivshmem_server):
    """Must differ, and why: nothing is mapped after the shared RAM (board.SHMEM_ADDR +
    SHMEM_SIZE). A CPU load or store there is a precise BusFault whose BFAR is the first
    byte past the RAM, also for a word that straddles the end; the guest runs on. qtest has
    no fault to report (address_space_rw's MemTxResult is dropped): the same reads give 0
    and the writes vanish. A test that means "refused" must therefore look at the fault on
    the CPU and at the device's traces on qtest (test_reads_return_the_bytes_they_cover)."""
    end = board.SHMEM_ADDR + board.SHMEM_SIZE
    cases = [("r", 4, end), ("w", 4, end), ("r", 1, end + 0x100), ("r", 4, end - 2),
             ("w", 2, end - 1)]
    for kind, size, addr in cases:
        out = dev.io.access(kind, size, addr, 0xFFFF)
        if dev.io.name == "qtest":
            assert (out.value, out.fault) == (0, None), (kind, size, hex(addr))
            continue
        assert out.fault is not None, (kind, size, hex(addr), out)
        assert out.fault.exc == BUSFAULT, str(out.fault)
        assert out.fault.cfsr & (CFSR_PRECISERR | CFSR_BFARVALID) == \
            CFSR_PRECISERR | CFSR_BFARVALID, str(out.fault)
        assert out.fault.bfar == max(addr, end), str(out.fault)
    assert dev.ivposition in ivshmem_server.wait_peers(1)  # and the guest runs on
