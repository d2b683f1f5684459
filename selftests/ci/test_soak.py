"""ci/soak on a tiny selection: two runs under CPU load, counted from JUnit, load stopped.

Why: the soak is how flakiness is measured (issue 10: 0 failures in 20 runs under load);
a soak that miscounts, or leaves stress-ng spinning, would mislead or slow everything after.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ivflat.host.paths import reference_tool
from ivflat.host.timeouts import scaled

from .tools import IVPOSITION, SOAK, marked_pids, started_tool


def test_soak_two_runs_under_load() -> None:
    """Two runs under stress-ng: exit 0, the load started and stopped (nothing left running),
    the total line counts the tests of each run's JUnit, one run directory each."""
    if reference_tool("qemu-system-arm") is None:
        pytest.skip("no reference build (ci/build-qemu)")
    cmd = [sys.executable, str(SOAK), "--runs", "2", "--load", "--cpu", "1", "--",
           *IVPOSITION]
    with started_tool(cmd) as tool:
        out, err = tool.proc.communicate(timeout=scaled(900))
        left = marked_pids(tool.marker)
    out_s, err_s = out.decode(), err.decode()
    assert tool.proc.returncode == 0, out_s + err_s
    assert "stress-ng --cpu 1 (pid" in err_s, err_s
    assert left == [], "stress-ng or pytest left running"
    total = out_s.strip().splitlines()[-1]
    assert total.startswith("soak: 2 runs, 0 red, 0 of "), out_s
    run_dir = Path(total.split(" in ")[-1])
    junits = sorted(run_dir.glob("run-*/junit.xml"))
    assert [p.parent.name for p in junits] == ["run-01", "run-02"]
    ntests = int(total.split(" of ")[1].split()[0])
    assert ntests >= 1 and all(b"test_ivposition" in p.read_bytes() for p in junits)
