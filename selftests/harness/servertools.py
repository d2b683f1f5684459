"""What the server self-tests share: a bare protocol client, exact fd descriptions, the
expected greeting, and QEMU's ivshmem tools when they are built (the fixtures that start
servers and clients are in conftest.py)."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from ivflat.host.paths import reference_dir, reference_tool
from ivflat.protocol.ivshmem import MessageReader, readable, recv_msg

SIZE = 64 * 1024  # small shm keeps the tests fast; sizes are not what is under test


def tool(name: str) -> Path:
    path = reference_tool(name)
    if path is None:
        pytest.skip(f"QEMU's {name} not built: {reference_dir() / name} is missing "
                    "(run ci/build-qemu; the cache is $IVSHMEM_SUITE_CACHE or "
                    "~/.cache/ivshmem-flat-suite)")
    return path


def fd_kind(fd: int) -> str:
    """'memfd:<size>', 'eventfd', 'pipe' or the /proc link, for exact message asserts."""
    link = os.readlink(f"/proc/self/fd/{fd}")
    if link.startswith("/memfd:"):
        return f"memfd:{os.fstat(fd).st_size}"
    if link == "anon_inode:[eventfd]":
        return "eventfd"
    if stat.S_ISFIFO(os.fstat(fd).st_mode):
        return "pipe"
    return link


class Raw:
    """A bare protocol client: reads messages, describes their fds, asserts silence."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.reader = MessageReader(self.sock)
        self.kept: list[int] = []

    def take(self, n: int, keep: bool = False) -> list[tuple[int, str | None]]:
        out = []
        for _ in range(n):
            value, fd = recv_msg(self.reader)
            out.append((value, None if fd is None else fd_kind(fd)))
            if fd is not None:
                (self.kept.append if keep else os.close)(fd)
        return out

    def quiet(self) -> bool:
        """Nothing more is queued for us (callers first wait until the server is done)."""
        return not readable(self.sock, 0)

    def close(self) -> None:
        for fd in self.kept:
            os.close(fd)
        self.reader.close()
        self.sock.close()


def greeting(peer_id: int, version: int = 0, shm: str | None = f"memfd:{SIZE}"):
    return [(version, None), (peer_id, None), (-1, shm)]


def harness_threads() -> list[str]:
    """The harness's own threads still alive (named ivflat-*): none once all is stopped."""
    return [t.name for t in threading.enumerate() if t.name.startswith("ivflat-")]
