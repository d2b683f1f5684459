#!/usr/bin/env python3
"""CCACHE_PREFIX of the ci/ Ctrl-C self-tests: holds a real compile until the Ctrl-C.

Why: "Ctrl-C while ninja compiles" must not depend on how fast the machine compiles (a
build that finished before the signal arrived made such a test flaky). The test sets
``CCACHE_PREFIX`` to this script and ``CCACHE_RECACHE=1`` (every compile really runs, through
here) and ``IVSHMEM_TEST_CI_GATE`` to a file path. While that file does not exist, this is the plain
compiler. Once the test creates it, the next compile announces itself on the test's socket
(``$IVSHMEM_TEST_READY_SOCKET``: "compile <ppid> <source>") and waits for the SIGINT that ends
it as it ends a compiler (bounded: SIGALRM after 600 s x ``$IVSHMEM_TIMEOUT_SCALE``).
"""

import contextlib
import os
import signal
import socket
import sys

gate = os.environ.get("IVSHMEM_TEST_CI_GATE", "")
if gate and os.path.exists(gate):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, \
            contextlib.suppress(OSError):
        sock.sendto(f"compile {os.getppid()} {sys.argv[-1]}".encode(),
                    os.environ.get("IVSHMEM_TEST_READY_SOCKET", ""))
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.alarm(int(600 * float(os.environ.get("IVSHMEM_TIMEOUT_SCALE") or 1)))
    while True:
        signal.pause()
os.execvp(sys.argv[1], sys.argv[1:])
