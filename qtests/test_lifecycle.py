"""Life cycle: system_reset, device_del, quit."""

from __future__ import annotations

import pytest

from ivflat.device import board
from ivflat.qemu.machine import QMPChannelError

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]


def test_system_reset_keeps_id_memory_and_notifications(vm, dev, ivshmem_server):
    """The device has no reset handler: after system_reset its id, the shared RAM contents
    (host-owned memory) and doorbell->IRQ delivery are unchanged."""
    own = dev.ivposition
    dev.shm_write(0, b"survives reset")
    vm.qmp("system_reset")
    vm.wait_event("RESET")
    assert dev.ivposition == own
    assert ivshmem_server.read(0, 14) == b"survives reset"
    assert dev.shm_read(0, 14) == b"survives reset"
    mark = dev.mark()
    dev.ring(own, 0)
    dev.wait_pulses(1, since=mark)


def test_device_del_is_refused_cleanly(vm, dev):
    """device_del on the sysbus device is refused (the main system bus does not hotplug)
    with an error naming the reason; QEMU and the device keep working."""
    own = dev.ivposition
    with pytest.raises(QMPChannelError, match=r"main-system-bus.* does not support hotplugging"):
        vm.qmp("device_del", id="ivshmem0")
    assert vm.qom_get("/machine/peripheral/ivshmem0", "realized") is True
    assert dev.ivposition == own
    mark = dev.mark()
    dev.ring(own, 0)
    dev.wait_pulses(1, since=mark)


def test_quit_is_clean(vm, dev, ivshmem_server):
    """QMP quit: exit status 0, no crash message, and the server sees the peer leave."""
    own = dev.ivposition
    assert own in ivshmem_server.wait_peers(1)
    vm.qmp("quit")
    assert vm.wait_exit() == 0
    assert not vm.crashed(), vm.stderr()
    ivshmem_server.wait_peers(0)
    assert own not in ivshmem_server.peers


def test_irq_line_shared_with_nothing(vm, dev):
    """The default NVIC input is not driven by any board device: intercepting the armv7m
    inputs shows no activity on it until the device rings."""
    dev.settle()
    assert vm.irq_events(board.IRQ_LINE) == []
