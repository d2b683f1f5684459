"""Shared set-up of the self-tests (the harness's and the ci/ tools' own tests).

Several self-tests press Ctrl-C on a child (an inner pytest, ci/bisect, ci/build-qemu) and
check its orderly teardown. A user's Ctrl-C reaches a process whose SIGINT disposition is the
default; but a runner started from a non-interactive script in the background (`cmd &`, as
some CI runners and nohup'ed sessions do) inherits SIGINT *ignored*, exec keeps it ignored,
and Python then installs no KeyboardInterrupt handler: the child would never see the Ctrl-C
and the test would time out, judging the runner's parent instead of the code. So the
self-tests give this process the harness's Ctrl-C handler (a caught handler, which exec
resets to SIG_DFL in every child) for the whole run. The same for SIGTERM and SIGHUP, which
other self-tests send (a CI cancel, a closed terminal): under `nohup` SIGHUP comes in
ignored, the harness then rightly leaves it ignored, and an inner run would never see the
test's SIGHUP; here they get a caught handler that does nothing (signals.ignore_caught), so
this run still ignores them while its children start with the default.
"""

from __future__ import annotations

import signal
import threading

import pytest

from ivflat.host import signals

# Self-tests that must run on one worker form xdist groups (the synthetic history's tests,
# one group per worker and each worker its own copy of the history: selftests/ci/conftest.py;
# the bug reproducers, run together: selftests/ci/test_bug_reports.py): under --dist
# loadgroup, which hands out the largest unit first, the workers start with them.
_LOADGROUP = "ivflat_loadgroup"  # in workerinput: the controller schedules by group


def pytest_configure(config: pytest.Config) -> None:
    """``--dist load`` (what ``-n N`` alone means) becomes ``loadgroup`` on the controller,
    which tells its workers (they parse the command line anew, without the change) to name
    grouped tests as loadgroup does. The other ``--dist`` modes are left alone."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        if workerinput.get(_LOADGROUP):
            config.option.loadgroup = True
    elif getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """(xdist, on the controller) per worker, before it starts."""
    workerinput = getattr(node, "workerinput", {})
    config = getattr(node, "config", None)
    workerinput[_LOADGROUP] = getattr(getattr(config, "option", None), "dist", "") == \
        "loadgroup"


@pytest.fixture(scope="session", autouse=True)
def children_take_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signals.interrupt_once)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, signals.ignore_caught)
