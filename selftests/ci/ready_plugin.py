"""pytest plugin for the ci/ self-tests: a test body is running (its QEMU is up).

The Ctrl-C self-test needs to interrupt ci/bisect while a bisect step's pytest has QEMU
running, and must not guess when that is. Given with ``-p selftests.ci.ready_plugin`` in the
PYTEST-ARGS, this plugin sends one datagram per test to the UNIX socket named in
``$IVSHMEM_TEST_READY_SOCKET``: ``test <pid of the process that started pytest> <test id>``.
Without the variable, with nobody listening or with the listener's queue full (it only reads
while it waits for this event) it does nothing: never blocks, never fails a test.

With ``$IVSHMEM_TEST_READY_HOLD`` (seconds) the test then parks that long: for a self-test
that kills the tool while a test runs, and must not race the test's end (a one-test mutant
run restores the source within a second of its test starting).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket


def pytest_runtest_call(item) -> None:
    path = os.environ.get("IVSHMEM_TEST_READY_SOCKET")
    if not path:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, \
            contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.sendto(f"test {os.getppid()} {item.nodeid}".encode(), path)
    hold = float(os.environ.get("IVSHMEM_TEST_READY_HOLD", "0"))
    if hold > 0:
        select.select([], [], [], hold)  # sleep-ok: parked until the self-test kills the tool
