"""Shared memory: mapped at x-bus-address-shmem, coherent with the host in both directions,
at both ends and the middle, for several sizes; bulk traffic uses b64read/b64write."""

from __future__ import annotations

import os
import re

import pytest

from ivflat.device import board

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]

SIZES = [64 * 1024, board.SHMEM_SIZE, 16 * 1024 * 1024]


def _offsets(size: int) -> list[int]:
    return [0, size // 2 - 3, size - 16]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // 1024}KiB")
def test_host_and_guest_see_each_others_writes(make_server, launch_dev, size):
    """For several sizes, at the start, the middle (unaligned) and the end of the window,
    a host write is what the guest reads and a guest write what the host reads: the
    window maps the server's memory itself, not a copy, over its whole size."""
    server = make_server(shm_size=size)
    dev = launch_dev(server, shmem_size=size)
    for off in _offsets(size):
        pattern = os.urandom(16)
        server.write(off, pattern)
        assert dev.shm_read(off, 16) == pattern, f"guest misses host write at {off:#x}"
        reply = bytes(b ^ 0xFF for b in pattern)
        dev.shm_write(off, reply)
        assert server.read(off, 16) == reply, f"host misses guest write at {off:#x}"


def test_word_accesses_hit_shared_memory(dev, ivshmem_server):
    """readl/writel (not only bulk) go to the same RAM, little-endian."""
    dev.shm_writel(8, 0x11223344)
    assert ivshmem_server.read(8, 4) == bytes.fromhex("44332211")
    ivshmem_server.write(12, bytes.fromhex("efbeadde"))
    assert dev.shm_readl(12) == 0xDEADBEEF


def test_bulk_one_mebibyte_round_trip(dev, ivshmem_server):
    """1 MiB in one b64write and back in one b64read, verified on the host side too."""
    blob = os.urandom(1024 * 1024)
    dev.shm_write(4096, blob)
    assert ivshmem_server.read(4096, len(blob)) == blob
    assert dev.shm_read(4096, len(blob)) == blob


def test_memset_fills_shared_memory(dev, ivshmem_server):
    """qtest's memset lands in the shared RAM: the host sees every byte it filled."""
    dev.shm_fill(100, 50, 0x5A)
    assert ivshmem_server.read(100, 50) == b"\x5a" * 50


def test_region_is_mapped_at_shmem_address(vm):
    """info mtree: RAM 'ivshmem-shmem' of shmem-size at x-bus-address-shmem."""
    mtree = vm.hmp("info mtree -f")
    start, end = board.SHMEM_ADDR, board.SHMEM_ADDR + board.SHMEM_SIZE - 1
    assert re.search(rf"{start:016x}-{end:016x} \(prio 0, ram\): ivshmem-shmem", mtree), mtree


def test_shmem_at_another_address(ivshmem_server, launch_vm):
    """x-bus-address-shmem is honoured: the RAM moves, the old window is not it."""
    other = 0x70000000
    vm = launch_vm(ivshmem_server, shmem=other)
    ivshmem_server.write(0, b"moved")
    assert vm.bufread(other, 5) == b"moved"
    assert vm.bufread(board.SHMEM_ADDR, 5) != b"moved"


def test_memory_is_shared_between_two_guests(ivshmem_server, launch_dev):
    """Two guests on one server map the same memory: each reads what the other wrote,
    at both ends of the window."""
    a, b = launch_dev(ivshmem_server), launch_dev(ivshmem_server)
    a.shm_write(0x100, b"from a")
    assert b.shm_read(0x100, 6) == b"from a"
    b.shm_write(board.SHMEM_SIZE - 6, b"from b")
    assert a.shm_read(board.SHMEM_SIZE - 6, 6) == b"from b"
