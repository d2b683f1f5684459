"""ivshmem-flat against ivshmem-pci: each scenario of ivflat.diffpci on both devices.

The same comparison as ci/diff-pci (which prints the whole table), one case per scenario:
a difference nothing explains fails the case (UnexplainedDifference, which a known bug's
xfail does not take); a difference a known bug explains is that bug's symptom, asserted
(AssertionError: the strict xfail of the scenario's bug, until the bug is fixed).
"""

from __future__ import annotations

import pytest

from ivflat.device import known_bugs
from ivflat.device.known_bugs import known_bug
from ivflat.diffpci.pcidev import missing
from ivflat.diffpci.run import BUG, run, table
from ivflat.diffpci.scenarios import BY_NAME, SCENARIOS

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]


class UnexplainedDifference(Exception):
    """The devices differ where no known bug or documented difference says they may."""


@pytest.mark.parametrize("name", [
    pytest.param(sc.name, id=sc.name,
                 marks=[known_bug(b, raises=AssertionError) for b in sc.bugs])
    for sc in SCENARIOS])
def test_same_as_pci(name, wired_qemu, qemu_caps, known_bugs_fixed):
    """Every aspect of the scenario reads the same on ivshmem-flat as on ivshmem-pci, the
    reference implementation of the protocol, unless a known bug of the flat device or a
    documented difference explains it: a difference nothing explains is a new bug."""
    if reason := missing(wired_qemu):
        pytest.skip(reason)
    sc = BY_NAME[name]
    if sc.flat_needs == known_bugs.ASAN and not qemu_caps.asan:
        pytest.skip(f"the flat device's side {known_bugs.CONDITIONS[sc.flat_needs]} "
                    f"({', '.join(sc.bugs)}: out of bounds reads only it sees)")
    rows = run(sc, wired_qemu, fixed=known_bugs_fixed, asan=qemu_caps.asan,
               qtest_accel=qemu_caps.qtest_accel)
    unexplained = [r.aspect for r in rows if r.unexplained]
    if unexplained:
        raise UnexplainedDifference(f"{name}: {unexplained} differ\n{table(rows)}")
    assert not [r for r in rows if r.verdict == BUG], \
        f"ivshmem-flat differs from ivshmem-pci (known bug {sc.bugs}):\n{table(rows)}"
