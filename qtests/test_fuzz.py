"""Model-based fuzzing (fixtures/ivflat/fuzz): a short fixed-seed profile of the stateful
fuzzer in "expect" mode (the device as it is: any difference from the model is a new bug),
and the example database shared by concurrent campaigns.

Long campaigns are a command (ci/fuzz --minutes N); this profile keeps the rules,
invariants and model honest on every run of the suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.fuzz import FuzzConfig
from ivflat.fuzz.campaign import run_batch
from ivflat.paths import REPO

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]

SEED = 20260213


def test_short_profile_finds_nothing_on_the_device_as_it_is(wired_qemu, qemu_caps,
                                                            short_tmp, pytestconfig):
    """Fixed seed, derandomized: the same examples every run. A failure is shrunk and its
    artifacts (failure.txt with the minimal program, vm/reproduce.sh) are kept."""
    config = FuzzConfig(binary=wired_qemu, qtest_accel=qemu_caps.qtest_accel,
                        mode="expect", workdir=short_tmp)
    keep = Path(pytestconfig.getoption("--keep-artifacts")).resolve() / "fuzz"
    failure = run_batch(config, seed=SEED, examples=12, steps=25, db=None, artifacts=keep,
                        derandomize=True)
    assert failure is None, (f"{failure.error}\n{failure.program}\n"
                             f"artifacts: {failure.artifacts}")


def _campaign(qemu: Path, db: Path, art: Path, seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(REPO / "ci" / "fuzz"), "--minutes", "1", "--seed", str(seed),
         "--qemu", str(qemu),
         "--known-bugs", "find", "--only", "version-unchecked", "--db", str(db),
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
