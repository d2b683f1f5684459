"""Model-based fuzzing (fixtures/ivflat/fuzz): a short fixed-seed profile of the stateful
fuzzer in "expect" mode (the device as it is: any difference from the model is a new bug).

Long campaigns are a command (ci/fuzz --minutes N); this profile keeps the rules,
invariants and model honest on every run of the suite. The campaign tool's own behaviour
(a database shared by concurrent campaigns) is a self-test: selftests/ci/test_fuzz_campaign.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ivflat.device import board, known_bugs
from ivflat.fuzz import SHRINK_ENV, FuzzConfig
from ivflat.fuzz.campaign import run_batch
from ivflat.fuzz.idle import judge_idle
from ivflat.fuzz.standby import Pair, start_pair
from ivflat.qemu.access import CpuAccess
from ivflat.qemu.machine import CpuMachine

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]

SEED = 20260213


def test_short_profile_finds_nothing_on_the_device_as_it_is(wired_qemu, qemu_caps, firmware_dir,
                                                            short_tmp, pytestconfig,
                                                            known_bugs_fixed):
    """Fixed seed, derandomized: the same examples every run. A failure is shrunk and its
    artifacts (failure.txt with the minimal program, vm/reproduce.sh) are kept.

    "As it is" means with the known bugs, less those the binary is built to fix
    (``--known-bugs-fixed``, e.g. a ci/build-qemu --with-fixes build). A tree carrying the
    whole fix series without saying so (ci/validate-patch's patched build) matches the
    model with every bug that has a fix fixed instead (a bug registered without a fix
    stays as it is): that is checked before calling it a new bug, so a series that fixes
    the known bugs is no regression here (their own tests say FIXED).
    Examples run on a qtest VM or a CpuMachine (drawn), so the guest CPU's loads and
    stores are in the profile too. Verdicts come from unshrunk runs; only a failure is run
    again and shrunk ($IVSHMEM_FUZZ_SHRINK=0: not even that)."""
    keep = Path(pytestconfig.getoption("artifacts_dir")).resolve() / "fuzz"

    series = frozenset(b.id for b in known_bugs.BUGS if b.fix)

    def batch(fixed: frozenset[str], shrink: bool, name: str = "expect"):
        config = FuzzConfig(binary=wired_qemu, qtest_accel=qemu_caps.qtest_accel,
                            mode="expect", fixed=fixed, workdir=short_tmp,
                            firmware=firmware_dir)
        return run_batch(config, seed=SEED, examples=40, steps=30, db=None,
                         artifacts=keep / name, derandomize=True, shrink=shrink)

    # the verdict from unshrunk runs (shrinking takes minutes); then, for a real failure,
    # the same examples again, shrunk to a minimal program for the artifacts
    failure = batch(known_bugs_fixed, shrink=False)
    if failure is not None and not known_bugs_fixed and batch(series, False, "series") is None:
        failure = None  # every bug of the fix series fixed
    if failure is not None and os.environ.get(SHRINK_ENV, "1") != "0":
        failure = batch(known_bugs_fixed, shrink=True) or failure
    assert failure is None, (f"{failure.error}\n{failure.program}\n"
                             f"artifacts: {failure.artifacts}")


def _cpu_pair(wired_qemu: Path, qemu_caps: Any, firmware_dir: Path, short_tmp: Path,
              vectors: int) -> tuple[FuzzConfig, Pair]:
    """A CpuMachine admitted as guest 0 with *vectors* vectors, its firmware READY."""
    config = FuzzConfig(binary=wired_qemu, qtest_accel=qemu_caps.qtest_accel,
                        workdir=short_tmp, firmware=firmware_dir)
    pair = start_pair(config, "cpu")
    pair.server.admit([0], vectors)
    pair.vm.wait_ready()
    pair.vm.wait_vectors(0, vectors)
    return config, pair


def test_a_cpu_example_whose_guest_took_an_interrupt_is_idle(wired_qemu, qemu_caps,
                                                             firmware_dir, short_tmp):
    """The profile's minimal failure on QEMU master (ece408818d): a CpuMachine, one guest
    load, then the idle check. The load's console request makes the firmware take UART RX
    interrupts; on master (since d238858bff) its WFI never sleeps again, with or without
    ivshmem-flat: the check must judge the main loop there and pass (on 10.0 the whole
    process is judged, and is idle)."""
    config, pair = _cpu_pair(wired_qemu, qemu_caps, firmware_dir, short_tmp, 0)
    try:
        assert isinstance(pair.vm, CpuMachine)
        assert CpuAccess(pair.vm).access("r", 1, board.IOMEM_ADDR).fault is None
        assert pair.vm.pid is not None
        judge_idle(pair.vm.pid, config, cpu=True)
    finally:
        pair.close()
