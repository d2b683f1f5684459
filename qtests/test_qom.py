"""QOM/QMP view of the device: properties and values, type introspection (also on
Debian's stock binary, which has the type but cannot create it), qtree."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ivflat.device import board
from ivflat.host import timeouts
from ivflat.qemu.machine import QMPChannelError

DEV = "/machine/peripheral/ivshmem0"
CORE_PROPS = {"chardev", "shmem-size"}


def _qmp_none(binary: Path, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    """QMP on a `-M none` QEMU over stdio: works on any binary, device creatable or not."""
    lines = [{"execute": "qmp_capabilities"}, *commands, {"execute": "quit"}]
    out = subprocess.run([str(binary), "-M", "none", "-display", "none", "-nodefaults",
                          "-qmp", "stdio"], input="\n".join(map(json.dumps, lines)) + "\n",
                         capture_output=True, text=True,
                         timeout=timeouts.scaled(None, timeouts.START)).stdout
    replies = [json.loads(x) for x in out.splitlines() if x.startswith('{"return"')
               or x.startswith('{"error"')]
    return replies[1:1 + len(commands)]


def test_device_list_properties_on_any_binary(qemu_binary, qemu_caps):
    """device-list-properties lists chardev and shmem-size for the type on every 10.0+
    binary, wired or not; the x- properties exist exactly when the probe says wired."""
    if not qemu_caps.has_device_type:
        pytest.skip(qemu_caps.device_skip_reason)
    (reply,) = _qmp_none(qemu_binary, {"execute": "device-list-properties",
                                       "arguments": {"typename": board.DEVICE_TYPE}})
    names = {p["name"] for p in reply["return"]}
    assert names >= CORE_PROPS
    assert ({"x-bus-address-iomem", "x-bus-address-shmem", "x-irq-qompath"} <= names) \
        == qemu_caps.wired


def test_qom_list_properties_on_any_binary(qemu_binary, qemu_caps):
    """qom-list-properties types the core properties as the device defines them
    (chardev a string, shmem-size a uint32) on every binary that has the type, wired
    or not: management tools read them from there."""
    if not qemu_caps.has_device_type:
        pytest.skip(qemu_caps.device_skip_reason)
    (reply,) = _qmp_none(qemu_binary, {"execute": "qom-list-properties",
                                       "arguments": {"typename": board.DEVICE_TYPE}})
    props = {p["name"]: p["type"] for p in reply["return"]}
    assert props["chardev"] == "str"
    assert props["shmem-size"] == "uint32"


@pytest.mark.needs_device
@pytest.mark.needs_qtest
def test_property_values_read_back(make_server, launch_vm):
    """Every property of a running device reads back (qom-get) as given on its
    command line: what QMP shows is what the device was configured with."""
    size = 1024 * 1024
    vm = launch_vm(make_server(shm_size=size), shmem_size=size)
    assert vm.qom_get(DEV, "shmem-size") == size
    assert vm.qom_get(DEV, "chardev") == "ivshmem0-chr"
    assert vm.qom_get(DEV, "x-bus-address-iomem") == board.IOMEM_ADDR
    assert vm.qom_get(DEV, "x-bus-address-shmem") == board.SHMEM_ADDR
    assert vm.qom_get(DEV, "x-irq-qompath") == board.irq_qompath()


@pytest.mark.needs_device
@pytest.mark.needs_qtest
def test_realized_properties_are_read_only(vm):
    """Setting a property of a realized device is refused with a QMP error."""
    with pytest.raises(QMPChannelError, match="after it was realized"):
        vm.qom_set(DEV, "shmem-size", 4096)
    assert vm.qom_get(DEV, "shmem-size") == board.SHMEM_SIZE


@pytest.mark.needs_device
@pytest.mark.needs_qtest
def test_qom_list_shows_device_and_regions(vm):
    """The device is in the QOM tree where -device id= puts it, of its type, realized,
    and lists its properties."""
    names = {p["name"] for p in vm.qom_list(DEV)}
    assert {"chardev", "shmem-size", "realized"} <= names
    assert vm.qom_get(DEV, "realized") is True
    assert vm.qom_get(DEV, "type") == board.DEVICE_TYPE


@pytest.mark.needs_device
@pytest.mark.needs_qtest
def test_info_qtree_lists_device_on_sysbus(vm):
    """info qtree shows the device on the system bus under its id, with its chardev."""
    qtree = vm.hmp("info qtree")
    assert f'dev: {board.DEVICE_TYPE}, id "ivshmem0"' in qtree
    assert "chardev = \"ivshmem0-chr\"" in qtree


@pytest.mark.needs_device
@pytest.mark.needs_qtest
def test_irq_is_connected_to_nvic_input(vm):
    """The device's sysbus-irq[0] link points at the NVIC input named in x-irq-qompath."""
    target = vm.qom_get(DEV, "sysbus-irq[0]")
    assert target == board.irq_qompath()
