"""Bad configurations: QEMU exits promptly with a message that names the problem; it never
hangs, never aborts."""

from __future__ import annotations

import pytest

from ivflat.device import board
from ivflat.device.wirings import Semantics, semantics
from ivflat.qemu.machine import DeviceConfig
from ivflat.servers.faults import Fault

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]


@pytest.fixture
def wiring(qemu_caps) -> Semantics:
    """What this binary's wiring says (ours or the upstream series'): ivflat.device.wirings."""
    return semantics(qemu_caps.wiring)


def test_no_chardev(launch_vm):
    """Without a chardev the device has no server to take its id and memory from:
    realize fails with a message that says so, not with a crash on the missing backend."""
    vm = launch_vm(None, wait_ready=False)
    vm.expect_error_exit("ivshmem server socket not specified")


def test_server_socket_absent(launch_vm, short_tmp):
    """A chardev path with no server listening: the chardev layer refuses to start."""
    dev = DeviceConfig(server_socket=short_tmp / "nobody.sock")
    vm = launch_vm(None, device=dev, wait_ready=False)
    vm.expect_error_exit("nobody.sock")


def test_size_mismatch_with_server(make_server, launch_vm):
    """shmem-size is the window the guest sees: a server memory of another size cannot
    back it as configured, so realize refuses it with the device's message."""
    server = make_server(shm_size=board.SHMEM_SIZE)
    vm = launch_vm(server, shmem_size=board.SHMEM_SIZE // 2, wait_ready=False)
    vm.expect_error_exit("shmem size different from device size")


@pytest.mark.parametrize("missing", ["iomem", "shmem"])
def test_missing_address_property(ivshmem_server, launch_vm, wiring, missing):
    """The device has no default place on the board: without x-bus-address-iomem or
    -shmem realize refuses it, naming the missing property (in the wiring's words)."""
    vm = launch_vm(ivshmem_server, wait_ready=False, **{missing: None})
    vm.expect_error_exit(wiring.missing(missing))


@pytest.mark.parametrize("path", [
    "/machine/armv7m/nvic/unnamed-gpio-in[999]",
    "/machine/no/such/thing",
    "/machine/armv7m/nvic",  # an object, but not an IRQ
])
def test_bad_irq_path(ivshmem_server, launch_vm, wiring, path):
    """Refused by name; the path is in the message (ours says it, QEMU's -device location
    prefix carries it for the series')."""
    vm = launch_vm(ivshmem_server, irq_qompath=path, wait_ready=False)
    vm.expect_error_exit(wiring.bad_irq_path, path)


def test_ambiguous_irq_path(ivshmem_server, launch_vm, wiring):
    """A partial path matching many IRQ objects is refused as ambiguous."""
    vm = launch_vm(ivshmem_server, irq_qompath="unnamed-gpio-in[6]", wait_ready=False)
    vm.expect_error_exit(wiring.ambiguous_irq_path)


@pytest.mark.parametrize("what,addr,needle", [
    ("iomem", board.UART0_ADDR, "overlaps 'uart'"),
    ("shmem", 0x0, "overlaps 'mps.ssram1'"),
    ("shmem", 0x40100000, "overlaps 'lan9118-mmio'"),  # upstream's example address
])
def test_overlapping_region(ivshmem_server, launch_vm, wiring, what, addr, needle):
    """A region placed over one of the board's (UART, SRAM, the Ethernet MMIO) is
    refused, naming the property and the region it overlaps, instead of silently
    shadowing the board's device or being shadowed by it."""
    if wiring.refuses_overlap:
        pytest.skip(wiring.refuses_overlap)
    vm = launch_vm(ivshmem_server, wait_ready=False, **{what: addr})
    vm.expect_error_exit(needle, f"x-bus-address-{what}")


@pytest.mark.parametrize("what", ["iomem", "shmem"])
def test_region_wrapping_the_address_space(ivshmem_server, launch_vm, wiring, what):
    """A base address whose region would run past 2^64 is refused by name, not mapped
    (found unexercised by ci/coverage)."""
    if wiring.refuses_wrap:
        pytest.skip(wiring.refuses_wrap)
    vm = launch_vm(ivshmem_server, wait_ready=False, **{what: 0xFFFF_FFFF_FFFF_FFF0})
    vm.expect_error_exit(f"x-bus-address-{what}=0xfffffffffffffff0", "wraps around")


def test_server_sends_no_shm_fd(make_server, launch_vm):
    """A greeting without the shared memory fd leaves the device nothing to map: QEMU
    exits with the device's message, without a crash."""
    server = make_server(kind="python", fault=Fault.NO_SHM_FD)
    vm = launch_vm(server, wait_ready=False)
    vm.expect_error_exit("Could not receive valid shmem fd")


def test_machine_without_dynamic_sysbus_refuses_device(ivshmem_server, launch_vm):
    """Only mps2 machines opt in: another Cortex-M board refuses the device by name."""
    vm = launch_vm(ivshmem_server, machine="microbit", wait_ready=False)
    vm.expect_error_exit("ivshmem-flat")
