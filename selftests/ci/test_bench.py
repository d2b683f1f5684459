"""ci/bench prints its figures as one table (issue 23, item 3).

Why: the speed goals (fuzz steps/s, QEMU start-up under the fixture, a bisect step) are
read from this table; a bench that lost a row, or printed a figure it did not measure,
would mislead silently. The bisect steps take minutes and are left out here (--no-bisect).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from ivflat.host.paths import REPO, reference_tool
from ivflat.host.timeouts import scaled


def test_one_table_with_qemu_beside_the_harness() -> None:
    """ci/bench prints one table headed figure/median/min/max/n with a row for bare QEMU
    start-up, start-up with the device, the harness's launch and the fuzzer's steps per
    second; every median is a measured, positive figure over the runs asked for."""
    if reference_tool("qemu-system-arm") is None:
        pytest.skip("no reference build (ci/build-qemu)")
    res = subprocess.run([sys.executable, str(REPO / "ci" / "bench"), "--runs", "2",
                          "--fuzz-runs", "1", "--no-bisect"], cwd=REPO, capture_output=True,
                         text=True, timeout=scaled(600), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [ln.split(" | ") for ln in res.stdout.splitlines() if ln.startswith("| ")]
    assert rows[0] == ["| figure", "median", "min", "max", "n |"], res.stdout
    names = [r[0].removeprefix("| ") for r in rows[1:]]
    for want in ("bare QEMU start-up (mps2-an385, qtest, no device)",
                 "bare QEMU start-up + ivshmem-flat",
                 "harness: QtestMachine launch (ready) + shutdown",
                 "fuzz: model-checked steps per second"):
        assert want in names, res.stdout
    for r in rows[1:]:
        assert float(r[1].split()[0]) > 0, r  # a median that was measured
        assert r[4] == ("1 |" if "fuzz" in r[0] else "2 |") or "firmware" in r[0], r
