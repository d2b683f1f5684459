"""ci/fuzz, the campaign tool: concurrent campaigns share one example database (the
scale-out the README describes), and a saved failure is replayed first. A self-test of the
tool: the device catalogue's fixed-seed profile is qtests/test_fuzz.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.paths import REPO

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]


def _campaign(qemu: Path, db: Path, art: Path, seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(REPO / "ci" / "fuzz"), "--minutes", "1", "--seed", str(seed),
         "--qemu", str(qemu),
         "--model", "fixed", "--only", "version-unchecked", "--db", str(db),
         "--no-shrink", "--stop-on-failure", "--steps", "5", "--artifacts", str(art)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_campaigns_share_a_database(wired_qemu, short_tmp):
    """Two campaigns at once on one example database both record their failure; the
    database stays readable and a third campaign replays a saved failure first (its first
    example fails). The bug searched is version-unchecked (find mode, only that bug), the
    one reachable in a single step."""
    db = short_tmp / "db"
    procs = [_campaign(wired_qemu, db, short_tmp / f"art{i}", seed)
             for i, seed in enumerate((1, 2))]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        outs.append(out)
        assert p.returncode == 1 and "FAILURE" in out, out[-2000:]
    entries = [f for f in db.rglob("*") if f.is_file()]
    assert entries and all(f.read_bytes() for f in entries), entries
    third = _campaign(wired_qemu, db, short_tmp / "art3", 99)
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 1, out[-2000:]
    assert "found in example 1 of the batch" in out, \
        f"the saved failure was not replayed first:\n{out}"


def test_rediscover_times_a_bug_and_names_it(wired_qemu):
    """ci/fuzz-rediscover on one bug, two seeds: each run finds it (the failure is the
    model's switch for that bug, nothing else) and the table row has both times and a
    median; exit 0."""
    res = subprocess.run(
        [sys.executable, str(REPO / "ci" / "fuzz-rediscover"), "--only",
         "unaligned-doorbell-write", "--seeds", "2", "--minutes", "2", "--qemu",
         str(wired_qemu)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    row = [ln for ln in res.stdout.splitlines() if ln.startswith("| unaligned-doorbell-write")]
    assert row and row[0].count(",") == 1 and "not found" not in row[0], res.stdout
