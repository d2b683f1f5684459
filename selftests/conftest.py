"""Shared set-up of the self-tests (the harness's and the ci/ tools' own tests).

Several self-tests press Ctrl-C on a child (an inner pytest, ci/bisect, ci/build-qemu) and
check its orderly teardown. A user's Ctrl-C reaches a process whose SIGINT disposition is the
default; but a runner started from a non-interactive script in the background (`cmd &`, as
some CI runners and nohup'ed sessions do) inherits SIGINT *ignored*, exec keeps it ignored,
and Python then installs no KeyboardInterrupt handler: the child would never see the Ctrl-C
and the test would time out, judging the runner's parent instead of the code. So the
self-tests give this process the default Ctrl-C handler (a caught handler, which exec resets
to SIG_DFL in every child) for the whole run.
"""

from __future__ import annotations

import signal
import threading

import pytest


@pytest.fixture(scope="session", autouse=True)
def children_take_ctrl_c() -> None:
    if (signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            and threading.current_thread() is threading.main_thread()):
        signal.signal(signal.SIGINT, signal.default_int_handler)
