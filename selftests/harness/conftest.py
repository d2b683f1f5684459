"""Fixtures of the harness's self-tests: started Python servers and bare protocol clients
for the server tests (test_server*.py, test_qemu_tools.py), all released at teardown, and
a pytester for inner runs of the suite's plugin."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ivflat.host.paths import REPO, cache_dir
from ivflat.host.reaper import release_all
from ivflat.qemu.under_test import QEMU_ENV
from ivflat.servers.python_server import IvshmemServer
from selftests.inner import INNER_OPTS

from .servertools import SIZE, Raw

SUITE_CACHE = cache_dir()  # now: pytester points HOME elsewhere


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


@pytest.fixture
def plugin_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                    ) -> pytest.Pytester:
    """A pytester whose inner runs (``runpytest_subprocess``: real pytest processes) load
    this checkout's plugin with the suite's own ini settings (pyproject's ``timeout`` and
    markers) and see the suite's cache (pytester points HOME at its directory); no binary
    is named unless a test names one. Without Hypothesis's plugin (INNER_OPTS)."""
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    opts = ini["ini_options"]
    pytester.makeini("[pytest]\n"
                     f"addopts = {' '.join(INNER_OPTS)}\n"
                     f"timeout = {opts['timeout']}\n"
                     "markers =\n" + "".join(f"    {m}\n" for m in opts["markers"]))
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(REPO / 'fixtures')!r})\n"
                          "pytest_plugins = ('ivflat.plugin.options',)\n")
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(SUITE_CACHE))
    for var in (*QEMU_ENV, "PYTEST_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    return pytester
