"""Fixtures of the server self-tests (test_server*.py, test_qemu_tools.py): started Python
servers and bare protocol clients, all released at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ivflat.host.reaper import release_all
from ivflat.servers.python_server import IvshmemServer

from .servertools import SIZE, Raw


@pytest.fixture
def start_server(short_tmp: Path) -> Iterator[Callable[..., IvshmemServer]]:
    """Factory for started Python servers, all stopped at teardown."""
    servers: list[IvshmemServer] = []

    def factory(**kw: Any) -> IvshmemServer:
        kw.setdefault("shm_size", SIZE)
        srv = IvshmemServer(short_tmp / f"s{len(servers)}.sock", **kw)
        servers.append(srv)
        return srv.start()

    try:
        yield factory
    finally:
        release_all(servers, lambda srv: srv.stop())


@pytest.fixture
def raw(request: pytest.FixtureRequest) -> Iterator[Callable[[Path], Raw]]:
    clients: list[Raw] = []

    def factory(path: Path) -> Raw:
        clients.append(Raw(path))
        return clients[-1]

    try:
        yield factory
    finally:
        release_all(clients, lambda c: c.close())
