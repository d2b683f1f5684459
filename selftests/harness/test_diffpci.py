"""ivflat.diffpci's verdicts, without QEMU: what counts as the same, what a known bug or
a documented difference explains, and that nothing else does (ci/diff-pci and
qtests/test_diff_pci.py fail on exactly the DIFFERENT rows)."""

from __future__ import annotations

import os
import signal

import pytest

from ivflat.device import known_bugs
from ivflat.diffpci.run import BUG, DIFFERENT, DOC, NOT_RUN, SAME, compare, table
from ivflat.diffpci.scenarios import BY_NAME, DOCUMENTED, SCENARIOS, Scenario
from ivflat.diffpci.script import Script
from ivflat.diffpci.sides import FLAT, HANG, PCI, DeviceDied, launch
from ivflat.host import timeouts
from ivflat.servers.python_server import IvshmemServer

SC = Scenario("t", "test", explains={"msg *": "message-range-unchecked",
                                     "read 0x0": "pci-rev0-registers",
                                     "DOORBELL *": "doorbell-vector-unchecked"})


def _verdict(aspect: str, flat: str, pci: str, **kw: object) -> str:
    rows = compare(SC, {FLAT: [(aspect, flat)], PCI: [(aspect, pci)]}, **kw)  # type: ignore[arg-type]
    return rows[0].verdict


def test_equal_values_are_the_same():
    """Equal outcomes on both devices are SAME: where the devices agree there is
    nothing to flag."""
    assert _verdict("realize", "up", "up") == SAME


def test_a_difference_nothing_explains_is_different():
    """A difference no known bug or documented reason explains is DIFFERENT, the verdict
    that fails ci/diff-pci: a new divergence from ivshmem-pci must not pass unseen."""
    assert _verdict("realize", "up", "fails: x") == DIFFERENT


def test_error_wording_is_not_compared_but_an_error_is():
    """The two devices word their errors differently, so an error matches an error whatever
    it says; but an error against silence is a difference."""
    assert _verdict("greeting", "error: ivshmem-flat: invalid peer 3", "error: invalid "
                    "peer 3") == SAME
    assert _verdict("greeting", "silent", "error: invalid peer 3") == DIFFERENT


def test_a_known_bug_explains_until_the_binary_fixes_it():
    """A difference a known bug explains is that bug (BUG) only while the binary has it: on a
    build that fixes the bug the same difference is DIFFERENT, so a fix that falls short
    fails."""
    assert _verdict("msg 0x10000+eventfd", "fds +1; silent", "fds +0; error: x") == BUG
    assert _verdict("msg 0x10000+eventfd", "fds +1; silent", "fds +0; error: x",
                    fixed=frozenset({"message-range-unchecked"})) == DIFFERENT


def test_an_asan_only_bug_explains_only_on_asan():
    """A bug only AddressSanitizer shows explains a difference only on an ASan build: without
    ASan nothing accounts for it, and it stays DIFFERENT."""
    assert _verdict("DOORBELL 5/0x40", "rings 5.v0", "rings nothing") == DIFFERENT
    assert _verdict("DOORBELL 5/0x40", "rings 5.v0", "rings nothing", asan=True) == BUG


def test_a_documented_difference_always_explains():
    """A documented difference (where the devices are meant to differ) explains on any binary,
    even one that fixes every known bug: it is DOC, never a failure."""
    assert _verdict("read 0x0", "0x0", "0xffffffff",
                    fixed=frozenset(known_bugs.BY_ID)) == DOC


def test_a_side_that_did_not_get_there_differs():
    """An aspect only one device reached (the other stopped earlier) is DIFFERENT, not left
    out: a device that dies halfway must not compare as equal."""
    rows = compare(SC, {FLAT: [("realize", "up")], PCI: [("realize", "up"),
                                                         ("IVPOSITION", "0x3")]})
    assert [(r.aspect, r.verdict) for r in rows] == [("realize", SAME),
                                                     ("IVPOSITION", DIFFERENT)]


def test_flat_not_run_is_no_verdict():
    """When the flat side did not run at all the scenario gets NOT_RUN, no verdict: nothing was
    compared, so nothing may pass or fail."""
    sc = BY_NAME["doorbell-vectors-beyond"]
    rows = compare(sc, {FLAT: None, PCI: [("realize", "up")]})
    assert [r.verdict for r in rows] == [NOT_RUN]


def test_table_has_one_row_per_aspect_and_every_documented_reason():
    """The table has one row per aspect with both values (a | in a value escaped so the
    Markdown stays a table) and lists every documented difference, so a reader sees why
    each DOC row is allowed."""
    rows = compare(SC, {FLAT: [("a", "x|y"), ("b", "1")], PCI: [("a", "x|y"), ("b", "2")]})
    text = table(rows)
    assert "| t | a | x\\|y | x\\|y | same |" in text
    assert "|  | b | 1 | 2 | DIFFERENT |" in text
    assert all(f"`{d}`" in text for d in DOCUMENTED)


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
def test_scenario_bugs_list_its_test(sc):
    """A scenario a known bug explains is that bug's test (strict xfail), so the registry
    names it; the scenario names are unique."""
    for bug in sc.bugs:
        assert f"qtests/test_diff_pci.py::test_same_as_pci[{sc.name}]" in \
            known_bugs.get(bug).tests
    assert len(BY_NAME) == len(SCENARIOS)


def test_a_guest_gone_before_the_first_fence_is_its_death(wired_qemu, tmp_path):
    """A QEMU that dies right after its greeting (known bug disconnect-own-id crashes
    there, sooner or later) may be gone before the script's first fence: the server then
    has no connection of its id, and that is the device's death (DeviceDied, which the
    comparison records), not an error of the harness. Here QEMU is SIGKILLed once up."""
    server = IvshmemServer(tmp_path / "flat.sock", ids=[3]).start()
    side = launch(FLAT, wired_qemu, server, tmp_path, vectors=1)
    try:
        side.own = 3
        assert side.come_up(timeouts.Deadline(HANG)) == "up"
        assert side.vm.pid is not None
        os.killpg(side.vm.pid, signal.SIGKILL)
        server.wait_peers(0)
        with pytest.raises(DeviceDied):
            Script(side).start()
    finally:
        side.vm.kill()
        server.stop()
