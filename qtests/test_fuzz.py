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
from ivflat.known_bugs_plugin import expected_fixed
from ivflat.paths import REPO

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]

SEED = 20260213


def test_short_profile_finds_nothing_on_the_device_as_it_is(wired_qemu, qemu_caps,
                                                            short_tmp, pytestconfig):
    """Fixed seed, derandomized: the same examples every run. A failure is shrunk and its
    artifacts (failure.txt with the minimal program, vm/reproduce.sh) are kept.

    "As it is" means with the known bugs, less those the binary is built to fix
    (``--known-bugs-fixed``, e.g. a ci/build-qemu --with-fixes build). A tree carrying the
    whole fix series without saying so (ci/validate-patch's patched build) matches the
    model with every bug fixed instead: that is checked before calling it a new bug, so a
    series that fixes the known bugs is no regression here (their own tests say FIXED)."""
    fixed = expected_fixed(pytestconfig, wired_qemu)[0]
    keep = Path(pytestconfig.getoption("--keep-artifacts")).resolve() / "fuzz"

    def batch(mode: str):
        config = FuzzConfig(binary=wired_qemu, qtest_accel=qemu_caps.qtest_accel,
                            mode=mode, fixed=fixed, workdir=short_tmp)
        return run_batch(config, seed=SEED, examples=12, steps=25, db=None,
                         artifacts=keep / mode, derandomize=True)

    failure = batch("expect")
    if failure is not None and not fixed and batch("find") is None:
        failure = None  # every known bug fixed: the device as it should be
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
