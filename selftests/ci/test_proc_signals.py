"""Fast self-test of the ci/ tools' signal handling (ivflat.ci.proc): after the first stop
signal turned into the orderly KeyboardInterrupt, later ones are dropped, and what the tool
starts during its cleanup (the last ninja, git) can still be interrupted.

Why: a handler that set SIG_IGN would pass it on through exec, so every child started after
a Ctrl-C would ignore Ctrl-C, SIGTERM and SIGHUP for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ivflat.host import signals
from ivflat.host.paths import REPO
from ivflat.host.timeouts import scaled

# A supervising tool interrupted by SIGTERM, then sent SIGHUP, SIGINT and SIGTERM during its
# cleanup; it starts a child there (as proc.spawn does) and reports its pid and exit.
TOOL = """
import os, signal
from ivflat.ci import proc

proc.supervise()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    raise SystemExit("SIGTERM did not interrupt")
except KeyboardInterrupt:
    pass
for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
    os.kill(os.getpid(), sig)  # would raise here if not dropped
child = proc.spawn(["tail", "-f", "/dev/null"])
print(child.pid, flush=True)
print(child.wait(), flush=True)
"""


def _ignored(pid: int) -> list[str]:
    """The stop signals *pid* ignores, from its SigIgn mask."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    mask = int(next(line for line in status if line.startswith("SigIgn:")).split()[1], 16)
    return [s.name for s in signals.STOP_SIGNALS if mask & 1 << (s - 1)]


def test_child_started_after_an_interrupt_can_be_interrupted() -> None:
    """A child the tool starts after its first stop signal (and after later ones were
    dropped) ignores no stop signal, and SIGINT ends it: the tool's cleanup can always be
    interrupted."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO / "fixtures"), os.environ.get("PYTHONPATH")]))}
    tool = subprocess.Popen([sys.executable, "-c", TOOL], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    child = 0
    try:
        assert tool.stdout is not None
        line = tool.stdout.readline()
        assert line.strip().isdigit(), (line, tool.stderr and tool.stderr.read())
        child = int(line)
        assert _ignored(child) == []
        os.kill(child, signal.SIGINT)
        out, err = tool.communicate(timeout=scaled())
        assert tool.returncode == 0, err
        assert out.split() == [str(-signal.SIGINT)], err
    finally:
        if tool.poll() is None:
            if child:
                os.kill(child, signal.SIGKILL)
            tool.kill()
            tool.communicate()
