"""Model-based fuzzing (fixtures/ivflat/fuzz): a short fixed-seed profile of the stateful
fuzzer in "expect" mode (the device as it is: any difference from the model is a new bug).

Long campaigns are a command (ci/fuzz --minutes N); this profile keeps the rules,
invariants and model honest on every run of the suite. The campaign tool's own behaviour
(a database shared by concurrent campaigns) is a self-test: selftests/ci/test_fuzz_campaign.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivflat.fuzz import FuzzConfig
from ivflat.fuzz.campaign import run_batch

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

