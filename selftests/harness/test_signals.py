"""Stop signals become one orderly KeyboardInterrupt, the same in every entry point
(ivflat.host.signals, issue 22).

Why: pytest, the ci/ tools and ci/fuzz, ci/fuzz-rediscover and ci/diff-pci each wrote their
own handler: the fuzz commands turned every SIGTERM into a KeyboardInterrupt (a second one
cut their teardown short) and died of SIGHUP; the ci/ tools un-ignored a SIGHUP that nohup
had ignored. Judged in real processes that send themselves the signals.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ivflat.host.paths import REPO
from ivflat.host.timeouts import START, scaled

SCRIPT = """
import os, signal
from ivflat.ci import proc
from ivflat.host import signals

if {nohup}:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
{install}
try:
    os.kill(os.getpid(), signal.SIGTERM)
    raise SystemExit("SIGTERM did not interrupt")
except KeyboardInterrupt as exc:
    print("interrupted:", exc, flush=True)
for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
    os.kill(os.getpid(), sig)  # would raise (or kill) here if not dropped
print("SIGHUP ignored:", signal.getsignal(signal.SIGHUP) is signal.SIG_IGN, flush=True)
"""


def _run(install: str, nohup: bool) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "fixtures")}
    res = subprocess.run([sys.executable, "-c", SCRIPT.format(nohup=nohup, install=install)],
                         capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                         timeout=scaled(None, START))
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.parametrize("install", ["signals.stop_on_signals()", "proc.supervise()"])
def test_the_first_stop_signal_interrupts_and_later_ones_are_dropped(install):
    """The first SIGTERM is a KeyboardInterrupt; SIGHUP, SIGINT and SIGTERM during the
    cleanup that follows are dropped, so the cleanup runs to its end."""
    assert _run(install, nohup=False) == ("interrupted: SIGTERM received: stopping\n"
                                          "SIGHUP ignored: False\n")


@pytest.mark.parametrize("install", ["signals.stop_on_signals()", "proc.supervise()"])
def test_a_signal_that_came_in_ignored_stays_ignored(install):
    """Under nohup SIGHUP is ignored: no entry point (a ci/ tool's supervise() included)
    turns it back into a stop, and it stays ignored for what the process starts."""
    assert _run(install, nohup=True).endswith("SIGHUP ignored: True\n")
